"""Seeded patch sampling for training on whole volumes held in memory.

nnU-Net's rule, which keeps small structures (a tumour of a few voxels) in view: a share ``foreground_fraction`` of
patches is centred on a voxel of a foreground class drawn uniformly among the classes present in the drawn case;
the rest are centred anywhere. Patches lie inside the volume (volumes smaller than the patch are padded with the
image's minimum and background). Every draw comes from one ``numpy`` generator: same seed, same batches.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["PatchSampler", "augment_batch"]

MAX_INDICES = 20000  # voxel coordinates kept per class and case (a seeded subsample above)


class PatchSampler:
    """Batches of ``(image (B, C, *patch), classes (B, 1, *patch))`` from volumes ``(C, Z, Y, X)`` and class maps
    ``(Z, Y, X)`` of class indices ``0..K-1`` (0 = background)."""

    def __init__(self, images: Sequence[np.ndarray], classes: Sequence[np.ndarray], patch: tuple[int, int, int],
                 *, foreground_fraction: float, flip: bool, seed: int) -> None:
        if not images or len(images) != len(classes):
            raise ValueError("the sampler needs as many class maps as images, at least one")
        self.patch = tuple(int(p) for p in patch)
        self.foreground_fraction = foreground_fraction
        self.flip = flip
        self.rng = np.random.default_rng(seed)
        self.images: list[np.ndarray] = []
        self.classes: list[np.ndarray] = []
        self.indices: list[dict[int, np.ndarray]] = []
        for img, cls in zip(images, classes, strict=True):
            img, cls = self._pad(np.asarray(img, np.float32), np.asarray(cls, np.int64))
            self.images.append(img)
            self.classes.append(cls)
            found: dict[int, np.ndarray] = {}
            for k in np.unique(cls):
                if k == 0:
                    continue
                idx = np.flatnonzero(cls == k)
                if len(idx) > MAX_INDICES:
                    idx = np.sort(self.rng.choice(idx, MAX_INDICES, replace=False))
                found[int(k)] = idx
            self.indices.append(found)

    def _pad(self, img: np.ndarray, cls: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        need = [max(p - s, 0) for p, s in zip(self.patch, cls.shape, strict=True)]
        if not any(need):
            return img, cls
        widths = [(n // 2, n - n // 2) for n in need]
        return (np.pad(img, [(0, 0), *widths], constant_values=float(img.min())),
                np.pad(cls, widths, constant_values=0))

    def _start(self, shape: tuple[int, ...], centre: Sequence[int]) -> list[int]:
        return [int(np.clip(c - p // 2, 0, s - p)) for c, p, s in zip(centre, self.patch, shape, strict=True)]

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """One patch: ``(C, *patch)`` image and ``(*patch)`` class map."""
        i = int(self.rng.integers(len(self.images)))
        img, cls, found = self.images[i], self.classes[i], self.indices[i]
        shape = cls.shape
        if found and self.rng.random() < self.foreground_fraction:
            k = sorted(found)[int(self.rng.integers(len(found)))]
            flat = int(found[k][int(self.rng.integers(len(found[k])))])
            centre = [int(c) for c in np.unravel_index(flat, shape)]
        else:
            centre = [int(self.rng.integers(s)) for s in shape]
        z, y, x = self._start(shape, centre)
        pz, py, px = self.patch
        pi, pc = img[:, z:z + pz, y:y + py, x:x + px], cls[z:z + pz, y:y + py, x:x + px]
        if self.flip and self.rng.random() < 0.5:
            pi, pc = pi[..., ::-1], pc[..., ::-1]
        return np.ascontiguousarray(pi), np.ascontiguousarray(pc)

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [self.sample() for _ in range(size)]
        return (torch.from_numpy(np.stack([p[0] for p in pairs])),
                torch.from_numpy(np.stack([p[1] for p in pairs]))[:, None])


def _rotations(angles: torch.Tensor) -> torch.Tensor:
    """``(B, 3)`` angles (radians) about z, y, x -> ``(B, 3, 3)`` rotation matrices."""
    c, s = torch.cos(angles), torch.sin(angles)
    one, zero = torch.ones_like(c[:, 0]), torch.zeros_like(c[:, 0])

    def mat(rows: list[list[torch.Tensor]]) -> torch.Tensor:
        return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)

    rz = mat([[c[:, 0], -s[:, 0], zero], [s[:, 0], c[:, 0], zero], [zero, zero, one]])
    ry = mat([[c[:, 1], zero, s[:, 1]], [zero, one, zero], [-s[:, 1], zero, c[:, 1]]])
    rx = mat([[one, zero, zero], [zero, c[:, 2], -s[:, 2]], [zero, s[:, 2], c[:, 2]]])
    return rz @ ry @ rx


def augment_batch(x: torch.Tensor, y: torch.Tensor, g: torch.Generator, *, max_rotation_deg: float = 15.0,
                  max_scale: float = 0.15, max_gain: float = 0.1, noise: float = 0.05) -> tuple[torch.Tensor,
                                                                                             torch.Tensor]:
    """nnU-Net's main spatial and intensity augmentations, seeded: a random rotation and isotropic scaling of each
    patch (image linear, class map nearest: labels are never interpolated), a gain about the background level -1
    and Gaussian noise."""
    import torch.nn.functional as F

    b = x.shape[0]
    angles = (torch.rand(b, 3, generator=g) * 2 - 1) * (max_rotation_deg * torch.pi / 180)
    scale = 1 + (torch.rand(b, 1, 1, generator=g) * 2 - 1) * max_scale
    theta = torch.cat([_rotations(angles) * scale, torch.zeros(b, 3, 1)], dim=2)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    y = F.grid_sample(y.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False).long()
    gain = 1 + (torch.rand(b, 1, 1, 1, 1, generator=g) * 2 - 1) * max_gain
    x = (x + 1) * gain - 1 + torch.randn(x.shape, generator=g) * noise
    return x, y
