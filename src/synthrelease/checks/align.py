"""The small alignment search of the memorization checks: left-right flips, voxel shifts and small rotations.

Each transform is an affine matrix for ``torch.nn.functional.affine_grid`` (normalized coordinates, x = the last
array axis, the patient's left-right axis after preprocessing). Transform 0 is the identity. Integer shifts and
the flip land exactly on voxel centres (``align_corners=False``), so a flipped or shifted copy is found exactly.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["Alignment", "Move", "shift_view"]


def _rotation(axis: int, degrees: float) -> torch.Tensor:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    i, j = [a for a in range(3) if a != axis]
    r = torch.eye(3, dtype=torch.float64)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


@functools.cache
def _plan(alignment: Alignment, shape: tuple[int, ...]) -> list[Move]:
    return alignment._build(shape)


def shift_view(x: torch.Tensor, flip: bool, shift_xyz: tuple[int, int, int],
               fill: torch.Tensor | float, out: torch.Tensor | None = None) -> torch.Tensor:
    """``(..., Z, Y, X)`` mirrored left-right (when ``flip``), then ``out[i] = in[i + k]`` per axis; what enters the
    view is ``fill``. The same move as ``affine_grid`` with translation ``k`` voxels (``align_corners=False``).
    Written into ``out`` (same shape as ``x``) when given."""
    if flip:
        x = x.flip(-1)
        shift_xyz = (-shift_xyz[0], shift_xyz[1], shift_xyz[2])
    out = torch.empty_like(x) if out is None else out
    out[...] = fill
    src: list[Any] = [...]
    dst: list[Any] = [...]
    for k, n in zip(reversed(shift_xyz), x.shape[-3:], strict=True):  # z, y, x
        if abs(k) >= n:
            return out
        src.append(slice(max(0, k), n + min(0, k)))
        dst.append(slice(max(0, -k), n - max(0, k)))
    out[tuple(dst)] = x[tuple(src)]
    return out


@dataclass(frozen=True)
class Move:
    """One transform of the search: a mirror, then a whole-voxel shift or a small rotation."""

    name: str
    flip: bool
    shift_xyz: tuple[int, int, int] | None  # None: a rotation
    theta: torch.Tensor  # (3, 4) for ``affine_grid``, for a grid of the plan's shape


@dataclass(frozen=True)
class Alignment:
    """Transforms searched: {identity, flip} x ({shifts of -shift..shift voxels per axis} + {rotations}).

    Mirrors and shifts are done by slicing (exact and cheap); only rotations are resampled (``grid_sample``).
    """

    flip: bool = True
    shift: int = 2
    rotations_deg: tuple[float, ...] = (5.0,)

    def plan(self, shape: tuple[int, ...]) -> list[Move]:
        """The moves for a grid of ``shape`` (built once per alignment and shape)."""
        return _plan(self, tuple(shape[-3:]))

    def _build(self, shape: tuple[int, ...]) -> list[Move]:
        moves: list[Move] = []
        z, y, x = shape[-3:]
        step = torch.tensor([2.0 / x, 2.0 / y, 2.0 / z], dtype=torch.float64)  # one voxel, normalized (x, y, z)
        rng = range(-self.shift, self.shift + 1)
        shifts = sorted(itertools.product(rng, rng, rng), key=lambda v: (sum(map(abs, v)), v))
        for flipped in (False, True) if self.flip else (False,):
            lin = torch.diag(torch.tensor([-1.0 if flipped else 1.0, 1.0, 1.0], dtype=torch.float64))
            prefix = "flip + " if flipped else ""
            for v in shifts:
                m = torch.zeros(3, 4, dtype=torch.float64)
                m[:, :3] = lin
                m[:, 3] = torch.tensor(v, dtype=torch.float64) * step
                name = f"shift xyz {v} voxels" if any(v) else "identity"
                moves.append(Move(f"{prefix}{name}".removesuffix(" + "), flipped, (v[0], v[1], v[2]), m.float()))
            for deg in self.rotations_deg:
                for axis in range(3):
                    for sign in (-1.0, 1.0):
                        m = torch.zeros(3, 4, dtype=torch.float64)
                        m[:, :3] = _rotation(axis, sign * deg) @ lin
                        name = f"rotate {sign * deg:+g} deg about {'xyz'[axis]}"
                        moves.append(Move(f"{prefix}{name}", flipped, None, m.float()))
        return moves

    def thetas(self, shape: tuple[int, ...]) -> torch.Tensor:
        """``(T, 3, 4)`` affine matrices for a grid of ``shape`` (``(..., Z, Y, X)``); index 0 is the identity."""
        return torch.stack([m.theta for m in self.plan(tuple(shape))])

    def n_transforms(self) -> int:
        return ((2 * self.shift + 1) ** 3 + 6 * len(self.rotations_deg)) * (2 if self.flip else 1)

    def describe(self, index: int) -> str:
        return self.plan((8, 8, 8))[index].name

    def move(self, index: int, shape: tuple[int, ...]) -> Move:
        return self.plan(tuple(shape))[index]

    def apply(self, volumes: torch.Tensor) -> torch.Tensor:
        """``(B, C, Z, Y, X)`` -> ``(B, T, C, Z, Y, X)``: every transform of every volume; what enters the view is
        the volume's minimum per channel (air or background), as when a copy is moved in its field of view."""
        moves = self.plan(tuple(volumes.shape[2:]))
        floor = volumes.flatten(2).min(dim=2).values[:, :, None, None, None]
        out = torch.empty(volumes.shape[0], len(moves), *volumes.shape[1:], dtype=volumes.dtype)
        rot = [i for i, m in enumerate(moves) if m.shift_xyz is None]
        for i, m in enumerate(moves):
            if m.shift_xyz is not None:
                out[:, i] = shift_view(volumes, m.flip, m.shift_xyz, floor)
        if rot:
            out[:, rot] = self.apply_thetas(volumes, torch.stack([moves[i].theta for i in rot]))
        return out

    def apply_one(self, volume: torch.Tensor, index: int, *, grid: tuple[int, ...]) -> torch.Tensor:
        """Transform ``index`` of one ``(C, Z, Y, X)`` volume, shifts in voxels of a grid of shape ``grid``."""
        theta = self.thetas(grid)[index : index + 1].to(volume.device, volume.dtype)
        return self.apply_thetas(volume[None], theta)[0, 0]

    def overlap(self, shape: tuple[int, ...], indices: list[int] | None = None) -> torch.Tensor:
        """``(T, Z*Y*X)`` float masks: 1 where transform ``t`` samples inside the original field of view (only the
        transforms ``indices``, in that order, when given)."""
        ones = torch.ones(1, 1, *shape[-3:])
        plan = self.plan(tuple(shape))
        moves = plan if indices is None else [plan[i] for i in indices]
        masks = torch.empty(len(moves), *shape[-3:])
        for i, m in enumerate(moves):
            if m.shift_xyz is not None:
                masks[i] = shift_view(ones[0, 0], m.flip, m.shift_xyz, 0.0)
            else:
                grid = F.affine_grid(m.theta[None], [1, 1, *shape[-3:]], align_corners=False)
                masks[i] = F.grid_sample(ones, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0, 0]
        return (masks > 0.999).float().flatten(1)

    @staticmethod
    def apply_thetas(volumes: torch.Tensor, thetas: torch.Tensor) -> torch.Tensor:
        """``(B, C, Z, Y, X)`` under each of ``(T, 3, 4)`` transforms -> ``(B, T, C, Z, Y, X)``; what enters the
        view is the volume's minimum per channel (air or background), as when a copy is moved in its field."""
        b, c = volumes.shape[:2]
        t = thetas.shape[0]
        grid = F.affine_grid(thetas, [t, c, *volumes.shape[2:]], align_corners=False)
        floor = volumes.flatten(2).min(dim=2).values[:, :, None, None, None]
        src = (volumes - floor).repeat_interleave(t, dim=0)
        out = F.grid_sample(src, grid.repeat(b, 1, 1, 1, 1), mode="bilinear", padding_mode="zeros",
                            align_corners=False)
        return out.view(b, t, *volumes.shape[1:]) + floor[:, None]
