"""``privacy.dcr``: distance-to-closest-record overfitting.

p = share of synthetic cases closer to a training case than to any case of an equal-size holdout sample (ties
count half), with the training side subsampled to the same size, so that 0.5 is what a generator that learned the
population (not its members) gives. Distance is ``1 - NCC`` after the alignment search; the embedding's p is
reported beside it. SDMetrics' protection score ``min(2 (1 - p), 1)`` is reported too.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from synthrelease.checks.base import Check, Direction, Metric
from synthrelease.checks.context import AuditContext
from synthrelease.checks.registry import register
from synthrelease.checks.stats import bootstrap_ci

__all__ = ["DCRCheck"]


def closer_to_train(sim_train: np.ndarray, sim_holdout: np.ndarray) -> np.ndarray:
    """1 where the closest training case is closer, 0.5 on ties, 0 otherwise."""
    return np.where(sim_train > sim_holdout, 1.0, np.where(sim_train == sim_holdout, 0.5, 0.0))


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
        lo, hi = bootstrap_ci(closer, lambda v: float(v.mean()), seed=int(ctx.rng("dcr").integers(2**31)),
                              n_boot=ctx.settings.n_boot)
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
        evidence = {"subsample_size": len(groups[2][1] or ()), "distance": "1 - NCC after alignment search"}
        return metrics, evidence
