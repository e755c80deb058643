"""``fidelity.diversity``: MS-SSIM between pairs of cases within the synthetic set and within the training set.

A generator that collapses onto a few modes makes cases more alike than real patients are: the mean MS-SSIM over
pairs of synthetic cases rises above the same mean over pairs of training cases. ``ms_ssim_excess`` (synthetic
minus real) is the metric to gate on; a set more varied than the real one (e.g. noise) shows a negative excess.

MS-SSIM is MONAI's ``MultiScaleSSIMMetric`` (``msssim.py``: the same value, batched over pairs) on the model-range
images (``[-1, 1]``, data range 2), pooled by a whole factor to at most ``diversity_max_size`` voxels per axis, with
the kernel and scales sized to that grid (``msssim_params``). Every pair of a cohort is scored when there are at
most ``max_pairs``; above that, a seeded random sample of ``max_pairs`` distinct pairs, with a percentile bootstrap
95% interval over the sampled pairs: it measures the uncertainty of the sample's mean as an estimate of the
all-pairs mean (the finite-population correction is left out, so it is slightly conservative), not how the mean
would vary over other cohorts of patients. An exact all-pairs mean has no interval. ``ms_ssim_excess`` has an
interval when either side is sampled (each sampled side's pairs resampled independently).

Cost: the cases in a scored pair are loaded once each and held, pooled (channels x working-grid voxels x 4 bytes
each: 1 MiB per channel at 64^3); the per-image MS-SSIM statistics are held under ``msssim.STATS_BUDGET``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch

from synthrelease.checks.base import Check, Direction, Metric, Skip
from synthrelease.checks.context import AuditContext
from synthrelease.checks.features import pool, working_factor
from synthrelease.checks.fidelity.msssim import KERNEL_SIGMA, ms_ssim_pairs, msssim_params
from synthrelease.checks.registry import register
from synthrelease.checks.stats import bootstrap_ci

__all__ = ["CohortDiversity", "DiversityCheck", "choose_pairs", "cohort_diversity", "pair_from_index"]

DATA_RANGE = 2.0  # the model range [-1, 1]


def pair_from_index(k: np.ndarray) -> np.ndarray:
    """Linear indices of pairs ``i < j`` (ordered by ``j``, then ``i``: ``k = j (j - 1) / 2 + i``) -> ``(P, 2)``."""
    k = np.asarray(k, dtype=np.int64)
    j = np.array([(1 + math.isqrt(1 + 8 * int(v))) // 2 for v in k], dtype=np.int64)
    i = k - j * (j - 1) // 2
    return np.stack([i, j], axis=1).reshape(-1, 2)


def choose_pairs(n: int, max_pairs: int, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """Every pair ``(i, j)``, ``i < j``, of ``n`` items when there are at most ``max_pairs``; else ``max_pairs``
    distinct pairs drawn uniformly without replacement. Rows sorted; the flag says whether it is a sample."""
    total = n * (n - 1) // 2
    if total <= max_pairs:
        return np.array(np.triu_indices(n, k=1)).T.reshape(-1, 2).astype(np.int64), False
    k = np.sort(rng.choice(total, size=max_pairs, replace=False))
    pairs = pair_from_index(k)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))], True


@dataclass(frozen=True)
class CohortDiversity:
    values: np.ndarray  # MS-SSIM of each scored pair
    pairs: np.ndarray  # (P, 2) case indices
    subsampled: bool

    @property
    def mean(self) -> float:
        return float(self.values.mean())


def cohort_diversity(ctx: AuditContext, which: str, factor: int, kernel_size: int,
                     weights: tuple[float, ...]) -> CohortDiversity:
    """MS-SSIM over the (sampled) pairs of one cohort; only the cases in a pair are loaded."""
    cohort = ctx.cohort(which)
    pairs, subsampled = choose_pairs(len(cohort), ctx.settings.max_pairs, ctx.rng(f"diversity-pairs/{which}"))
    used = np.unique(pairs)
    images = torch.stack([pool(torch.from_numpy(np.require(ctx.model_image(cohort[int(i)]), np.float32, ["C", "W"])),
                               factor).contiguous() for i in used])
    local = np.searchsorted(used, pairs)
    values = ms_ssim_pairs(images, local, kernel_size=kernel_size, weights=weights, data_range=DATA_RANGE,
                           progress=lambda d, t: ctx.progress(f"ms-ssim {which}", d, t))
    return CohortDiversity(values, pairs, subsampled)


def _diff_ci(syn: CohortDiversity, real: CohortDiversity, *, seed: int, n_boot: int) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(syn) - mean(real)``, resampling the pairs of each sampled side
    independently (an all-pairs side is exact and kept)."""
    rng = np.random.default_rng(seed)

    def draws(d: CohortDiversity) -> np.ndarray:
        if not d.subsampled:
            return np.full(n_boot, d.mean)
        n = len(d.values)
        return np.array([d.values[rng.integers(0, n, n)].mean() for _ in range(n_boot)])

    diff = draws(syn) - draws(real)
    return float(np.quantile(diff, 0.025)), float(np.quantile(diff, 0.975))


@register
class DiversityCheck(Check):
    name = "fidelity.diversity"
    description = ("mean MS-SSIM between pairs of synthetic cases vs pairs of training cases "
                   "(mode collapse: synthetic pairs more alike than real ones)")

    def compute(self, ctx: AuditContext) -> tuple[dict[str, Metric], dict[str, Any]]:
        if len(ctx.synthetic) < 2:
            raise Skip("the synthetic set has fewer than 2 cases: no pair to compare")
        if ctx.settings.max_pairs < 1:
            raise Skip(f"max_pairs is {ctx.settings.max_pairs}: no pair to score")
        factor = working_factor(ctx.grid, ctx.settings.diversity_max_size)
        grid = tuple(-(-d // factor) for d in ctx.grid)
        try:
            kernel_size, weights = msssim_params(grid)
        except ValueError as exc:
            raise Skip(str(exc)) from exc
        res = {which: ctx.memo(f"diversity/{which}/{factor}/{ctx.settings.max_pairs}",
                               partial(cohort_diversity, ctx, which, factor, kernel_size, weights))
               for which in ("synthetic", "train")}
        syn, real = res["synthetic"], res["train"]
        n_boot = ctx.settings.n_boot

        def ci(d: CohortDiversity, salt: str) -> tuple[float | None, float | None]:
            if not d.subsampled:
                return None, None
            return bootstrap_ci(d.values, lambda v: float(v.mean()), seed=int(ctx.rng(salt).integers(2**31)),
                                n_boot=n_boot)

        excess_ci: tuple[float | None, float | None] = (None, None)
        if syn.subsampled or real.subsampled:
            excess_ci = _diff_ci(syn, real, seed=int(ctx.rng("diversity-boot/excess").integers(2**31)),
                                 n_boot=n_boot)
        metrics = {
            "ms_ssim_synthetic": Metric(syn.mean, Direction.INFO, "mean MS-SSIM over pairs of synthetic cases",
                                        *ci(syn, "diversity-boot/synthetic")),
            "ms_ssim_real": Metric(real.mean, Direction.INFO, "mean MS-SSIM over pairs of training cases",
                                   *ci(real, "diversity-boot/train")),
            "ms_ssim_excess": Metric(syn.mean - real.mean, Direction.LOWER,
                                     "synthetic minus real mean MS-SSIM (> 0: less diverse than real)", *excess_ci),
        }
        evidence: dict[str, Any] = {
            "pooling_factor": factor,
            "working_grid": list(grid),
            "kernel_size": kernel_size,
            "kernel_sigma": KERNEL_SIGMA,
            "weights": [round(w, 6) for w in weights],
            "data_range": DATA_RANGE,
            "max_pairs": ctx.settings.max_pairs,
        }
        for which, d in res.items():
            n = ctx.n(which)
            evidence[which] = {"n_cases": n, "n_pairs": len(d.values), "n_pairs_total": n * (n - 1) // 2,
                               "subsampled": d.subsampled, "std": float(d.values.std()),
                               "min": float(d.values.min()), "max": float(d.values.max())}
        return metrics, evidence
