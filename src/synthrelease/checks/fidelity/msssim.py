"""Batched 3-D MS-SSIM: MONAI's ``MultiScaleSSIMMetric`` value for many image pairs at once.

MONAI (``monai.metrics.regression.compute_ms_ssim``) computes, for each pair and each scale ``l`` (the images
average-pooled by 2 between scales), the Gaussian-filtered local means ``mu``, variances ``sigma`` and covariance
of the two images over *valid* positions (no padding), the contrast-structure map
``cs = (2 sigma_xy + c2) / (sigma_x + sigma_y + c2)`` and, at the coarsest scale only, the SSIM map
``((2 mu_x mu_y + c1) / (mu_x^2 + mu_y^2 + c1)) cs``. Each map is averaged over channels *and* positions together (a
multi-channel image is one mean over every channel's map, the channels filtered separately), passed through
``relu``, and the value is ``prod_l v_l ** w_l`` with the coarsest ``v`` the mean SSIM and the others mean ``cs``.
``c1 = (k1 R)^2``, ``c2 = (k2 R)^2`` with ``R`` the data range.

Here the same value is computed with the work split between images and pairs: per image and scale the pyramid
level, ``mu`` and ``sigma = filter(x^2) - mu^2`` are computed once (``image_stats``); per pair only the cross term
``filter(x y)`` (``pair_values``), for a batch of pairs at once. The Gaussian filter (MONAI's kernel, the outer
product of three 1-D Gaussians) is applied separably, one axis at a time, as a product with a banded
(Toeplitz) matrix of the 1-D kernel: on CPU that is several times faster than ``conv3d`` with ``(k, 1, 1)`` kernels
and about 50 times faster per volume than MONAI's full ``k^3`` ``conv3d``.

Arithmetic is float32 like MONAI's. The values agree with MONAI's to about 1e-6 at 16^3 and 32^3; at 64^3 with the
11-voxel kernel they differ by up to about 1e-5, and that is MONAI's own float32 rounding (``filter(x^2) - mu^2`` in
flat regions, against ``c2 = 0.0036``): MONAI's code run in float64 agrees with this module's float64 path to 3e-8
and with its float32 path to 5e-7, while MONAI's float32 run is 1e-5 from its float64 run
(``tests/checks/fidelity/test_diversity_check.py``, ``benchmarks/bench_msssim.py``).

``ms_ssim_pairs`` runs it over a list of pairs in blocks of images, so the per-image statistics held at once stay
under a memory budget (an image of a block pair is recomputed when the images do not all fit).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["KERNEL_SIGMA", "MONAI_WEIGHTS", "ImageStats", "gaussian_1d", "monai_accepts", "ms_ssim_pairs",
           "msssim_params", "pair_values"]

MONAI_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # finest to coarsest scale (MONAI's defaults)
KERNEL_SIGMA = 1.5  # MONAI's default Gaussian standard deviation (voxels), kept at every kernel size
KERNEL_SIZES = (11, 9, 7, 5, 3)
K1, K2 = 0.01, 0.03
STATS_BUDGET = 1 << 30  # bytes of per-image statistics held at once by ``ms_ssim_pairs``
PAIR_ELEMENTS = 1 << 23  # voxels x channels x pairs of one batch of cross terms (32 MiB of float32)


def monai_accepts(shape: Sequence[int], kernel_size: int, levels: int) -> bool:
    """Whether MONAI computes MS-SSIM on this spatial ``shape`` with this kernel and number of scales.

    Two conditions: MONAI's own check, ``d // max(1, levels - 1)**2 > kernel_size - 1`` on every axis (it divides
    by ``(levels - 1)^2``, which is ``2^(levels - 1)`` only for 3 and 5 scales), and the one its valid convolution
    needs at the coarsest scale, ``d // 2**(levels - 1) >= kernel_size`` (MONAI's check lets 2 scales through
    where this fails, and ``conv3d`` then raises)."""
    div = max(1, levels - 1) ** 2
    return all(d // div >= kernel_size and d // 2 ** (levels - 1) >= kernel_size for d in shape)


def msssim_params(shape: Sequence[int]) -> tuple[int, tuple[float, ...]]:
    """Kernel size and scale weights of MS-SSIM sized to a volume of spatial ``shape``.

    The rule: among odd Gaussian kernels of 3 to 11 voxels (sigma 1.5, MONAI's default) and the first 1 to 5 of
    MONAI's weights (finest scales first), the ones ``monai_accepts`` that rank highest by (at least 3 scales, then
    the largest kernel, then the most scales). So: 3 or more scales whenever the shortest axis allows any (12
    voxels), with the largest kernel that still allows 3, and as many further scales as that kernel allows; on a
    smaller volume 2 scales (6 to 11 voxels) or single-scale SSIM (3 to 5), each with the largest kernel that fits.

    Weights: all five are MONAI's defaults unchanged. A truncated set is renormalized to sum 1. MONAI itself uses
    weights as given, as exponents (``prod v_l ** w_l``) with no normalization, so the first three (sum 0.6305)
    would give the 0.63th power of a weighted geometric mean: a value pulled towards 1 and not comparable between
    volume sizes. Renormalized, it stays a weighted geometric mean of the per-scale terms, as the five-scale
    MS-SSIM is (its weights sum to 1.0001). The renormalized weights are what is passed to MONAI to compare.

    ========== ====== =============================================
    shape      kernel weights
    ========== ====== =============================================
    16^3       3      3 scales (0.0711, 0.4530, 0.4760)
    24x32x32   5      3 scales (0.0711, 0.4530, 0.4760)
    32^3       7      3 scales (0.0711, 0.4530, 0.4760)
    64^3       11     3 scales (0.0711, 0.4530, 0.4760)
    128^3      11     4 scales (0.0517, 0.3295, 0.3462, 0.2726)
    256^3      11     5 scales, MONAI's defaults
    ========== ====== =============================================

    Raises ``ValueError`` when an axis has fewer than 3 voxels.
    """
    best: tuple[tuple[int, int, int], int, int] | None = None
    for k in KERNEL_SIZES:
        for levels in range(1, len(MONAI_WEIGHTS) + 1):
            if monai_accepts(shape, k, levels):
                key = (min(levels, 3), k, levels)
                if best is None or key > best[0]:
                    best = (key, k, levels)
    if best is None:
        raise ValueError(f"a {'x'.join(map(str, shape))} volume is too small for MS-SSIM (3 voxels per axis at least)")
    _, k, levels = best
    if levels == len(MONAI_WEIGHTS):
        return k, MONAI_WEIGHTS
    w = MONAI_WEIGHTS[:levels]
    total = sum(w)
    return k, tuple(x / total for x in w)


def gaussian_1d(kernel_size: int, sigma: float = KERNEL_SIGMA) -> torch.Tensor:
    """MONAI's normalized 1-D Gaussian (float32)."""
    dist = torch.arange(start=(1 - kernel_size) / 2, end=(1 + kernel_size) / 2, step=1)
    gauss = torch.exp(-torch.pow(dist / sigma, 2) / 2)
    return gauss / gauss.sum()


@cache
def _banded(n: int, kernel_size: int, sigma: float) -> torch.Tensor:
    """``(n - k + 1, n)`` matrix whose product with a line is its valid correlation with the 1-D kernel."""
    g = gaussian_1d(kernel_size, sigma)
    m = torch.zeros(n - kernel_size + 1, n)
    for i in range(n - kernel_size + 1):
        m[i, i:i + kernel_size] = g
    return m


def _filter(x: torch.Tensor, kernel_size: int, sigma: float) -> torch.Tensor:
    """Separable Gaussian filter (valid positions) of ``(..., Z, Y, X)``, each axis a banded matrix product."""
    *lead, z, y, xs = x.shape
    mz, my, mx = (_banded(n, kernel_size, sigma).to(x.device, x.dtype) for n in (z, y, xs))
    x = x @ mx.T  # along X
    x = my @ x  # along Y
    flat = x.reshape(-1, z, x.shape[-2] * x.shape[-1])
    return (mz @ flat).reshape(*lead, mz.shape[0], x.shape[-2], x.shape[-1])  # along Z


@dataclass(frozen=True)
class ImageStats:
    """Per scale, for a block of images ``(n, C, ...)``: the pyramid level, local means and local variances."""

    levels: tuple[torch.Tensor, ...]
    mu: tuple[torch.Tensor, ...]
    sigma: tuple[torch.Tensor, ...]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for group in (self.levels, self.mu, self.sigma) for t in group)


def _stats_bytes(grid: Sequence[int], channels: int, kernel_size: int, n_scales: int, dtype: torch.dtype) -> int:
    """Bytes of one image's ``ImageStats``."""
    total, shape = 0, list(grid)
    for s in range(n_scales):
        if s:
            shape = [d // 2 for d in shape]
        total += math.prod(shape) + 2 * math.prod(max(0, d - kernel_size + 1) for d in shape)
    return total * channels * torch.empty(0, dtype=dtype).element_size()


def image_stats(images: torch.Tensor, kernel_size: int, n_scales: int, sigma: float = KERNEL_SIGMA,
                dtype: torch.dtype = torch.float32) -> ImageStats:
    """``images (n, C, Z, Y, X)``: each scale's level (average-pooled by 2 between scales, as MONAI), the
    Gaussian-filtered mean and ``filter(x^2) - mean^2`` (float32 as MONAI, or ``dtype``)."""
    x = images.to(dtype)
    levels, mus, sigmas = [], [], []
    for s in range(n_scales):
        if s:
            x = F.avg_pool3d(x, kernel_size=2)
        mu = _filter(x, kernel_size, sigma)
        levels.append(x)
        mus.append(mu)
        sigmas.append(_filter(x * x, kernel_size, sigma) - mu * mu)
    return ImageStats(tuple(levels), tuple(mus), tuple(sigmas))


def pair_values(a: ImageStats, ia: torch.Tensor, b: ImageStats, ib: torch.Tensor, weights: Sequence[float], *,
                kernel_size: int, data_range: float = 2.0, sigma: float = KERNEL_SIGMA) -> torch.Tensor:
    """MS-SSIM of the pairs ``(a[ia[p]], b[ib[p]])`` (one batch; ``(P,)``, in the statistics' dtype)."""
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    terms = []
    last = len(weights) - 1
    for s in range(len(weights)):
        mu_x, mu_y = a.mu[s][ia], b.mu[s][ib]
        mu_xy = _filter(a.levels[s][ia] * b.levels[s][ib], kernel_size, sigma)
        cs = (2 * (mu_xy - mu_x * mu_y) + c2) / (a.sigma[s][ia] + b.sigma[s][ib] + c2)
        if s == last:
            cs = ((2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)) * cs
        terms.append(torch.relu(cs.reshape(cs.shape[0], -1).mean(1)))
    w = torch.tensor(weights, dtype=terms[0].dtype, device=terms[0].device)
    return torch.prod(torch.stack(terms) ** w.view(-1, 1), dim=0)


def ms_ssim_pairs(images: torch.Tensor, pairs: np.ndarray, *, kernel_size: int, weights: Sequence[float],
                  data_range: float = 2.0, sigma: float = KERNEL_SIGMA, stats_budget: int = STATS_BUDGET,
                  pair_elements: int = PAIR_ELEMENTS, dtype: torch.dtype = torch.float32,
                  progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """MS-SSIM of ``images[i]`` and ``images[j]`` for each row ``(i, j)`` of ``pairs`` (``(P,)`` float64).

    ``images``: ``(N, C, Z, Y, X)``. Images are split into blocks whose statistics fit ``stats_budget`` bytes;
    block pairs are visited in order, the first block's statistics computed once per row of blocks, the second's
    once per block pair (once in all when every image fits one block). Pairs go in batches of at most
    ``pair_elements`` cross-term voxels. ``dtype`` float64 gives a reference free of float32 rounding."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    out = np.empty(len(pairs))
    if not len(pairs):
        return out
    _, channels, *grid = images.shape
    per_image = max(1, _stats_bytes(grid, channels, kernel_size, len(weights), dtype))
    block = max(1, stats_budget // (2 * per_image))
    batch = max(1, pair_elements // (channels * math.prod(grid)))
    lo, hi = np.minimum(pairs[:, 0], pairs[:, 1]), np.maximum(pairs[:, 0], pairs[:, 1])
    order = np.lexsort((hi, lo))
    bi, bj = lo // block, hi // block
    done = 0
    for i_block in np.unique(bi[order]):
        rows = order[bi[order] == i_block]
        start_i = int(i_block) * block
        stats_i = image_stats(images[start_i:start_i + block], kernel_size, len(weights), sigma, dtype)
        for j_block in np.unique(bj[rows]):
            sel = rows[bj[rows] == j_block]
            start_j = int(j_block) * block
            stats_j = stats_i if j_block == i_block else image_stats(
                images[start_j:start_j + block], kernel_size, len(weights), sigma, dtype)
            for b0 in range(0, len(sel), batch):
                idx = sel[b0:b0 + batch]
                ia = torch.from_numpy(lo[idx] - start_i)
                ib = torch.from_numpy(hi[idx] - start_j)
                out[idx] = pair_values(stats_i, ia, stats_j, ib, weights, kernel_size=kernel_size,
                                       data_range=data_range, sigma=sigma).double().cpu().numpy()
                done += len(idx)
                if progress:
                    progress(done, len(pairs))
    return out
