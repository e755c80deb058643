"""``privacy.dcr``: distance-to-closest-record overfitting.

p = share of synthetic cases closer to a training case than to any case of an equal-size holdout sample (ties
count half), with the training side subsampled to the same size, so that 0.5 is what a generator that learned the
population (not its members) gives. Distance is ``1 - NCC`` after the alignment search; the embedding's p is
reported beside it. SDMetrics' protection score ``min(2 (1 - p), 1)`` is reported too.

The point estimate uses the audit's one pair of subsamples (``AuditContext.standard_groups``). Its 95% interval
accounts for that draw as well as for the synthetic cases: each bootstrap replicate resamples the synthetic cases
with replacement and draws fresh equal-size train and holdout subsamples without replacement, reading each
synthetic case's best NCC to every real case from the search's pair matrix. Where that matrix was too large to keep,
the interval resamples the synthetic cases only (the evidence says which). On a pooled search grid the pair matrix
holds the refined pooled-grid NCC, the point estimate the scoring-grid NCC of each group's best match.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from synthrelease.checks.base import Check, Direction, Metric
from synthrelease.checks.context import AuditContext, Group
from synthrelease.checks.registry import register
from synthrelease.checks.stats import bootstrap_ci

__all__ = ["DCRCheck", "closer_to_train", "subsample_bootstrap"]


def closer_to_train(sim_train: np.ndarray, sim_holdout: np.ndarray) -> np.ndarray:
    """1 where the closest training case is closer, 0.5 on ties, 0 otherwise."""
    return np.where(sim_train > sim_holdout, 1.0, np.where(sim_train == sim_holdout, 0.5, 0.0))


def subsample_bootstrap(pairs: np.ndarray, n_train: int, size: int, *, seed: int, n_boot: int) -> np.ndarray:
    """``(n_boot,)`` replicates of p from ``pairs`` ``(synthetic, train + holdout)`` similarities: per replicate a
    fresh train subsample and holdout subsample of ``size`` cases each (without replacement, as the point estimate
    draws them) and the synthetic cases resampled with replacement."""
    pairs = np.asarray(pairs, dtype=float)
    n_syn, n_real = pairs.shape
    if not 1 <= size <= min(n_train, n_real - n_train):
        raise ValueError(f"subsample size {size} needs 1 to min(train, holdout) = {min(n_train, n_real - n_train)}")
    rng = np.random.default_rng(seed)
    out = np.empty(n_boot)
    for b in range(n_boot):
        t = rng.choice(n_train, size, replace=False)
        h = n_train + rng.choice(n_real - n_train, size, replace=False)
        closer = closer_to_train(pairs[:, t].max(axis=1), pairs[:, h].max(axis=1))
        out[b] = closer[rng.integers(0, n_syn, n_syn)].mean()
    return out


def _interval(ctx: AuditContext, groups: tuple[Group, ...], closer: np.ndarray) -> tuple[float, float, str]:
    """The 95% interval of p and how it was made (see the module docstring)."""
    seed = int(ctx.rng("dcr").integers(2**31))
    pairs = ctx.pixel_matches("synthetic", groups).pairs
    if pairs is None:
        lo, hi = bootstrap_ci(closer, lambda v: float(v.mean()), seed=seed, n_boot=ctx.settings.n_boot)
        return lo, hi, ("bootstrap of the synthetic cases only, with the audit's one pair of subsamples: the "
                        "pair matrix was too large to keep")
    size = min(len(ctx.train), len(ctx.holdout))  # the size of the audit's subsamples
    boots = subsample_bootstrap(pairs.numpy(), len(ctx.train), size, seed=seed, n_boot=ctx.settings.n_boot)
    return (float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975)),
            "bootstrap of the synthetic cases with fresh equal-size train and holdout subsamples per replicate")


@register
class DCRCheck(Check):
    name = "privacy.dcr"
    description = "share of synthetic cases closer to train than to an equal-size holdout sample (0.5 is ideal)"

    def compute(self, ctx: AuditContext) -> tuple[dict[str, Metric], dict[str, Any]]:
        groups = ctx.standard_groups()
        pix = ctx.pixel_matches("synthetic", groups).similarity.numpy()
        emb = ctx.embedding_matches("synthetic", groups).similarity.numpy()
        closer = closer_to_train(pix[:, 2], pix[:, 3])
        closer_emb = closer_to_train(emb[:, 2], emb[:, 3])
        p = float(closer.mean())
        lo, hi, how = _interval(ctx, groups, closer)
        metrics = {
            "overfitting_p": Metric(p, Direction.LOWER, "share closer to train than to holdout (0.5 ideal)", lo, hi),
            "protection": Metric(min(2 * (1 - p), 1.0), Direction.HIGHER, "SDMetrics DCROverfittingProtection"),
            "overfitting_p_embedding": Metric(float(closer_emb.mean()), Direction.LOWER,
                                              "the same share in the embedding space"),
            "median_distance_train": Metric(float(np.median(1 - pix[:, 2])), Direction.INFO,
                                            "median 1 - NCC to the closest training case (subsample)"),
            "median_distance_holdout": Metric(float(np.median(1 - pix[:, 3])), Direction.INFO,
                                              "median 1 - NCC to the closest holdout case (subsample)"),
        }
        evidence = {"subsample_size": len(groups[2][1] or ()), "distance": "1 - NCC after alignment search",
                    "interval": how}
        return metrics, evidence
