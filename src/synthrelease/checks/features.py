"""Compact, scale-free views of cases that the checks compare: standardized volumes and soft label maps.

Intensities are standardized per case and channel (zero mean, unit variance), so HU, model range and MR scales
compare alike and an intensity rescaling does not hide a copy. The pixel-space checks work on the native grid
pooled by a whole factor (``working_factor``: the smallest that brings the longest axis to at most ``max_size``
voxels), so a shift by a multiple of the factor stays a whole-voxel shift that the alignment search undoes exactly.
The embedding's input is a cube (``to_cube``).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from synthrelease.data.case import Case
from synthrelease.data.cohort import Cohort

__all__ = ["fingerprint", "label_tensor", "pool", "stack_cohort", "to_cube", "unit_rows", "volume_tensor",
           "working_factor"]


def working_factor(shape: tuple[int, ...], max_size: int) -> int:
    return max(1, math.ceil(max(shape) / max_size))


def pool(x: torch.Tensor, factor: int) -> torch.Tensor:
    """``(C, Z, Y, X)`` averaged over ``factor``^3 blocks (edges padded with their border values)."""
    if factor == 1:
        return x
    pad = [p for n in reversed(x.shape[1:]) for p in (0, (-n) % factor)]
    x = F.pad(x[None], pad, mode="replicate")[0] if any(pad) else x
    return F.avg_pool3d(x[None], factor)[0]


def to_cube(x: torch.Tensor, size: int) -> torch.Tensor:
    """``(C, Z, Y, X)`` -> ``(C, size, size, size)`` (area averaging; trilinear first along short axes)."""
    x = x[None]
    grid = x.shape[2:]
    if min(grid) < size:
        x = F.interpolate(x, size=tuple(max(g, size) for g in grid), mode="trilinear", align_corners=False)
    return F.adaptive_avg_pool3d(x, size)[0]


def standardized(case: Case) -> torch.Tensor:
    img = torch.from_numpy(np.asarray(case.image, dtype=np.float32))
    mean = img.mean(dim=(1, 2, 3), keepdim=True)
    std = img.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    return (img - mean) / std


def fingerprint(z: torch.Tensor) -> str:
    """sha256 of standardized voxels (4 decimals) and their shape: equal for a copy up to an affine rescale."""
    rounded = torch.round(z.double(), decimals=4).float().numpy()
    return hashlib.sha256(rounded.tobytes() + str(tuple(z.shape)).encode()).hexdigest()


def volume_tensor(case: Case, factor: int) -> torch.Tensor:
    """Image channels standardized per channel, pooled by ``factor``: ``(C, Z/f, Y/f, X/f)`` float32."""
    return pool(standardized(case), factor).contiguous()


def label_tensor(case: Case, factor: int) -> torch.Tensor:
    """Soft one-hot of the foreground labels (fraction of each cell), pooled by ``factor``: ``(L, ...)``."""
    values = sorted(case.schema.foreground.values())
    lab = torch.from_numpy(np.asarray(case.labels, dtype=np.int64))
    return pool(torch.stack([(lab == v).float() for v in values]), factor).contiguous()


def stack_cohort(cohort: Cohort, fn: Callable[[Case], torch.Tensor],
                 progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """``fn`` of every case, stacked ``(N, ...)``; cases are loaded one at a time."""
    out = []
    for i, case in enumerate(cohort):
        out.append(fn(case))
        if progress:
            progress(i + 1, len(cohort))
    return torch.stack(out)


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """Flatten each row, centre it and scale it to unit length (a dot product is then the NCC)."""
    flat = x.reshape(x.shape[0], -1)
    flat = flat - flat.mean(dim=1, keepdim=True)
    return flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-8)
