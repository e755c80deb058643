"""``fidelity.embedding``: FID and MMD in the privacy audit's contrastive embedding.

The encoder is the one ``privacy.memorization`` and ``privacy.mia`` use (trained on the training cases, cached in
the workspace): no second encoder is trained. FID is the Frechet distance between Gaussians fitted to the synthetic
and the training embeddings; MMD the unbiased squared maximum mean discrepancy with a Gaussian kernel whose width
is the median distance between training embeddings, with a seeded permutation p-value. The same numbers for the
real holdout against train are the noise floor of this cohort size: a realistic set scores near them.
"""

from __future__ import annotations

from typing import Any

from synthrelease.checks.base import Check, Direction, Metric, Skip
from synthrelease.checks.context import AuditContext
from synthrelease.checks.registry import register
from synthrelease.checks.stats import gaussian_frechet, median_bandwidth, mmd_permutation_p, mmd_rbf

__all__ = ["EmbeddingDistanceCheck"]


@register
class EmbeddingDistanceCheck(Check):
    name = "fidelity.embedding"
    description = "FID and MMD between synthetic and training cases in the audit's contrastive embedding"

    def compute(self, ctx: AuditContext) -> tuple[dict[str, Metric], dict[str, Any]]:
        if len(ctx.synthetic) < 2:
            raise Skip("FID and MMD need at least 2 synthetic cases")
        train = ctx.embeddings("train").double().numpy()
        holdout = ctx.embeddings("holdout").double().numpy()
        syn = ctx.embeddings("synthetic").double().numpy()
        bandwidth = median_bandwidth(train)
        seed = int(ctx.rng("embedding-mmd").integers(2**31))
        metrics = {
            "fid": Metric(gaussian_frechet(syn, train), Direction.LOWER,
                          "Frechet distance of synthetic to training embeddings"),
            "fid_holdout": Metric(gaussian_frechet(holdout, train), Direction.INFO,
                                  "the same for the real holdout (noise floor of this cohort size)"),
            "mmd": Metric(mmd_rbf(syn, train, bandwidth), Direction.LOWER,
                          "unbiased squared MMD, Gaussian kernel of median-distance width"),
            "mmd_holdout": Metric(mmd_rbf(holdout, train, bandwidth), Direction.INFO,
                                  "the same for the real holdout (noise floor)"),
            "mmd_p": Metric(mmd_permutation_p(syn, train, bandwidth, seed=seed), Direction.HIGHER,
                            "permutation p-value of the MMD (small: the sets differ)"),
        }
        evidence = {"dimensions": int(train.shape[1]), "bandwidth": bandwidth,
                    "n": {"train": len(train), "holdout": len(holdout), "synthetic": len(syn)}}
        return metrics, evidence
