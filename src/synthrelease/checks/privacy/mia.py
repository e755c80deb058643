"""``privacy.mia``: membership inference by an attacker who holds only the release (and population data).

Members are the training patients, non-members the holdout patients. Attacks, each a score per real case:

- GAN-Leaks (Chen et al. 2020), calibration-free: similarity to the closest synthetic case, in pixel space (NCC
  after the alignment search), in the contrastive embedding (cosine) and in label-map space (mean soft Dice over
  the foreground labels after the same alignment search as ``privacy.mask_memorization``). The pixel score of a
  real case is read from the synthetic set's search against the real cohort that the memorization and DCR checks
  run (every (synthetic, real) pair's best NCC over the alignments of the synthetic case), so it costs no search of
  its own; where that matrix was too large to keep, the real cases are searched against the synthetic set instead.
  The label-map attack is there because a release ships masks: a mask generator fitted to few patients can place
  its masks nearer the training patients' than the unseen patients' without copying any of them, and images drawn
  for those masks need not show it. Measured on the demo's phantoms (benchmarks/RESULTS.md): with masks from a
  10-mode shape model this attack reached AUC 0.69 (upper bound 0.84), the image attacks 0.42-0.65.
- DOMIAS (van Breugel et al. 2023): density ratio ``log p_synthetic(x) - log p_reference(x)``, Gaussian KDEs in a
  low-dimensional PCA of the embedding (fitted on the synthetic set). The reference density uses holdout cases
  only, cross-fitted: every real case is scored against a reference that excludes its own fold, so no scored case
  is ever part of its reference.

The headline metrics are those of the strongest attack (highest AUC): ROC AUC with a stratified bootstrap 95%
interval, and TPR at 1% and 0.1% FPR. 0.5 AUC means the release tells an attacker nothing about membership.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.decomposition import PCA
from sklearn.neighbors import KernelDensity

from synthrelease.checks.base import Check, Direction, Metric
from synthrelease.checks.context import AuditContext
from synthrelease.checks.registry import register
from synthrelease.checks.stats import auc_with_ci, tpr_at_fpr

__all__ = ["MIACheck", "domias_scores"]


def domias_scores(real: np.ndarray, synthetic: np.ndarray, reference_mask: np.ndarray, *, seed: int,
                  folds: int = 5, dims: int = 5) -> np.ndarray:
    """Density-ratio score of each ``real`` row; ``reference_mask`` marks the rows usable as reference data."""
    k = int(min(dims, synthetic.shape[0] - 1, reference_mask.sum() - 2, real.shape[1]))
    if k < 1:
        raise ValueError("too few synthetic or reference cases for a density estimate")
    pca = PCA(n_components=k, whiten=True, random_state=seed).fit(synthetic)
    zs, zr = pca.transform(synthetic), pca.transform(real)
    log_syn = KernelDensity(bandwidth="scott").fit(zs).score_samples(zr)
    rng = np.random.default_rng(seed)
    n_folds = int(min(folds, reference_mask.sum()))
    fold = rng.permutation(np.arange(len(real)) % n_folds)
    log_ref = np.empty(len(real))
    for f in range(n_folds):
        ref = zr[reference_mask & (fold != f)]
        log_ref[fold == f] = KernelDensity(bandwidth="scott").fit(ref).score_samples(zr[fold == f])
    return np.asarray(log_syn - log_ref)


@register
class MIACheck(Check):
    name = "privacy.mia"
    description = ("membership inference from the release: GAN-Leaks distance (pixels, embedding, label maps) and "
                   "DOMIAS density-ratio attacks")

    def compute(self, ctx: AuditContext) -> tuple[dict[str, Metric], dict[str, Any]]:
        n_train = len(ctx.train)
        syn = (("synthetic", None),)
        pairs = ctx.pixel_matches("synthetic", ctx.standard_groups()).pairs  # (synthetic, train + holdout)
        if pairs is not None:
            pixel = pairs.max(dim=0).values.numpy()
        else:
            pixel = ctx.pixel_matches("real", syn).similarity[:, 0].numpy()
        embed = ctx.embedding_matches("real", syn).similarity[:, 0].numpy()
        real_emb, syn_emb = ctx.embeddings("real").numpy(), ctx.embeddings("synthetic").numpy()
        is_holdout = np.arange(len(real_emb)) >= n_train
        mask = ctx.mask_matches("real", "synthetic").column(0)[0].numpy()
        scores = {"gan_leaks_pixel": pixel, "gan_leaks_embedding": embed, "gan_leaks_mask": mask}
        if len(syn_emb) >= 3 and is_holdout.sum() >= 4:
            seed = int(ctx.rng("domias").integers(2**31))
            scores["domias"] = domias_scores(real_emb, syn_emb, is_holdout, seed=seed)
        results: dict[str, dict[str, float]] = {}
        for name, s in scores.items():
            members, others = s[:n_train], s[n_train:]
            auc, lo, hi = auc_with_ci(members, others, seed=int(ctx.rng(f"mia/{name}").integers(2**31)),
                                      n_boot=ctx.settings.n_boot)
            results[name] = {"auc": auc, "ci_low": lo, "ci_high": hi,
                             "tpr_at_1pct_fpr": tpr_at_fpr(members, others, 0.01),
                             "tpr_at_0_1pct_fpr": tpr_at_fpr(members, others, 0.001)}
        best = max(results, key=lambda k: (results[k]["auc"], k))
        r = results[best]
        metrics = {
            "auc": Metric(r["auc"], Direction.LOWER, f"ROC AUC of the strongest attack ({best})", r["ci_low"],
                          r["ci_high"]),
            "tpr_at_1pct_fpr": Metric(r["tpr_at_1pct_fpr"], Direction.LOWER, "members caught at 1% false positives"),
            "tpr_at_0_1pct_fpr": Metric(r["tpr_at_0_1pct_fpr"], Direction.LOWER,
                                        "members caught at 0.1% false positives"),
            **{f"auc_{name}": Metric(v["auc"], Direction.LOWER, f"ROC AUC of the {name} attack", v["ci_low"],
                                     v["ci_high"]) for name, v in results.items()},
        }
        evidence = {"strongest_attack": best, "members": n_train, "non_members": int(is_holdout.sum()),
                    "attacks": results}
        return metrics, evidence
