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
- GAN-Leaks calibrated (Chen et al. 2020, section 5.5): the pixel and label-map similarities minus the case's
  similarity to its closest *reference* patient, so that a case close to everything (a typical anatomy, a common
  tumour shape) no longer looks like a member for being close to the synthetic set. GAN-Leaks calibrates with a
  reference generator trained on population data; the audit holds population data (the holdout) but trains no second
  generator, so the reference is the population sample itself, cross-fitted: the holdout is split in two seeded
  halves, a holdout patient's reference is the other half (never itself), and a member's reference is a half drawn
  with the same odds, so members and non-members are calibrated against equally many patients (``reference_halves``).
  Named ``gan_leaks_pixel_calibrated`` and ``gan_leaks_mask_calibrated``. The embedding's cosine is not calibrated: so
  calibrated, it ranked the copycat control's members below chance (benchmarks/RESULTS.md), and an attack without
  power only widens the null spread of the max over attacks.
- DOMIAS (van Breugel et al. 2023): density ratio ``log p_synthetic(x) - log p_reference(x)``, Gaussian KDEs in a
  low-dimensional PCA of the embedding (fitted on the synthetic set). The reference density uses holdout cases
  only, cross-fitted: every real case is scored against a reference that excludes its own fold, so no scored case
  is ever part of its reference.
- White-box attacks, where ``synthrelease.checks.privacy.whitebox`` exists: its ``extra_attack_scores(ctx)`` gives
  per-real-case scores (members first, then holdout; higher = "member") from the generator itself (e.g. per-case
  diffusion loss), judged with the others.

The attacks are judged together, as an attacker would use them: the headline is the strongest attack's AUC (the max
over attacks), and because that attack is chosen after seeing the data, its statistics are those of the max. Its
95% interval is the percentile interval of the max over attacks in stratified bootstrap replicates that resample the
cases jointly for every attack (the policy's ``auc_ci_high``); its p-value is the permutation p of the max under
1000 random relabellings of members and non-members, the same for every attack (exact under the null that members
and non-members are exchangeable). 0.5 AUC means the release tells an attacker nothing about membership.

TPR at a false-positive rate ``f`` needs about ``1 / f`` non-members to mean anything: TPR at 1% FPR is reported only
with at least 100 non-members, at 0.1% only with 1000. Always reported: the TPR at the lowest FPR the non-members
support (``min_reportable_fpr`` = 1 / n_non_members; the best attack there), its excess over that FPR, and the
permutation p of that max-over-attacks TPR (the count of members above a few top non-member scores is beta-binomial,
not binomial, under the null: a threshold on the excess alone would flag many private sets).
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
from sklearn.decomposition import PCA
from sklearn.neighbors import KernelDensity

from synthrelease.checks.base import Check, Direction, Metric
from synthrelease.checks.context import AuditContext
from synthrelease.checks.registry import register
from synthrelease.checks.stats import (
    auc_rows,
    joint_bootstrap_aucs,
    max_attack_null,
    permutation_p,
    tpr_at_fpr_rows,
)

__all__ = ["MIACheck", "calibrated_scores", "domias_scores", "extra_attack_scores", "judge_attacks",
           "reference_halves"]

WHITEBOX_MODULE = "synthrelease.checks.privacy.whitebox"
N_PERMUTATIONS = 1000
# low false-positive rates reported only with at least 1 / fpr non-members: metric name, fpr
LOW_FPRS = (("tpr_at_1pct_fpr", 0.01), ("tpr_at_0_1pct_fpr", 0.001))


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


def reference_halves(n_members: int, n_holdout: int, *, seed: int) -> tuple[tuple[tuple[int, ...], ...], np.ndarray]:
    """The holdout split in two seeded halves (holdout indices, sorted) and, per real case (members first, then the
    holdout), the half (0 or 1) that is its reference: a holdout patient's is the other half, a member's is drawn
    with the odds the holdout patients have (a holdout patient in the larger half is referenced to the smaller)."""
    if n_holdout < 2:
        raise ValueError(f"{n_holdout} holdout patient(s) cannot be split into two reference halves")
    rng = np.random.default_rng(seed)
    half_of = rng.permutation(np.arange(n_holdout) % 2)
    halves = tuple(tuple(int(i) for i in np.flatnonzero(half_of == h)) for h in (0, 1))
    member_ref = (rng.random(n_members) < len(halves[0]) / n_holdout).astype(np.int64)  # in half 0 -> half 1
    return halves, np.concatenate([member_ref, 1 - half_of]).astype(np.int64)


def calibrated_scores(to_synthetic: np.ndarray, to_halves: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per real case: its similarity to the closest synthetic case minus that to the closest patient of its
    reference half (``to_halves`` ``(N, 2)``, ``reference`` the half per case, from ``reference_halves``)."""
    return np.asarray(to_synthetic - to_halves[np.arange(len(reference)), reference])


def extra_attack_scores(ctx: AuditContext) -> dict[str, np.ndarray]:
    """The white-box attacks' scores where ``synthrelease.checks.privacy.whitebox`` exists (none otherwise): one
    score per real case, members first. Only the module's absence is tolerated; an import error inside it, or
    scores of the wrong shape, are errors."""
    try:
        module = importlib.import_module(WHITEBOX_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name != WHITEBOX_MODULE:
            raise
        return {}
    n_real = ctx.n("real")
    out: dict[str, np.ndarray] = {}
    for name, values in module.extra_attack_scores(ctx).items():
        v = np.asarray(values, dtype=float)
        if v.shape != (n_real,) or not np.isfinite(v).all():
            raise ValueError(f"white-box attack {name!r} gave scores of shape {v.shape} (finite: "
                             f"{bool(np.isfinite(v).all())}); expected {n_real} finite scores, members first")
        out[str(name)] = v
    return out


def _blackbox_scores(ctx: AuditContext) -> dict[str, np.ndarray]:
    """GAN-Leaks (pixels, embedding, label maps) and, with enough cases, DOMIAS scores of every real case."""
    syn = (("synthetic", None),)
    pairs = ctx.pixel_matches("synthetic", ctx.standard_groups()).pairs  # (synthetic, train + holdout)
    if pairs is not None:
        pixel = pairs.max(dim=0).values.numpy()
    else:
        pixel = ctx.pixel_matches("real", syn).similarity[:, 0].numpy()
    embed = ctx.embedding_matches("real", syn).similarity[:, 0].numpy()
    real_emb, syn_emb = ctx.embeddings("real").numpy(), ctx.embeddings("synthetic").numpy()
    is_holdout = np.arange(len(real_emb)) >= len(ctx.train)
    mask = ctx.mask_matches("real", "synthetic").column(0)[0].numpy()
    scores = {"gan_leaks_pixel": pixel, "gan_leaks_embedding": embed, "gan_leaks_mask": mask}
    if len(ctx.holdout) >= 4:
        halves, reference = reference_halves(len(ctx.train), len(ctx.holdout),
                                             seed=int(ctx.rng("mia/reference-halves").integers(2**31)))
        groups = tuple(("holdout", h) for h in halves)
        # pixels and label maps only: the embedding's cosine, calibrated so, ranked the copycat control's members
        # below chance where these two find them, and an attack without power only widens the null spread of the
        # max over attacks that the policy bounds
        to_halves = {"pixel": ctx.pixel_matches("real", groups).similarity.numpy(),
                     "mask": ctx.mask_group_matches("real", groups).similarity.numpy()}
        for space, ref in to_halves.items():
            scores[f"gan_leaks_{space}_calibrated"] = calibrated_scores(scores[f"gan_leaks_{space}"], ref, reference)
    if len(syn_emb) >= 3 and is_holdout.sum() >= 4:
        seed = int(ctx.rng("domias").integers(2**31))
        scores["domias"] = domias_scores(real_emb, syn_emb, is_holdout, seed=seed)
    return scores


def judge_attacks(scores: dict[str, np.ndarray], n_members: int, *, boot_seed: int, perm_seed: int,
                  n_boot: int, n_perm: int = N_PERMUTATIONS) -> dict[str, Any]:
    """Every attack's AUC and TPRs, and the statistics of the max over attacks: its bootstrap interval (cases
    resampled jointly for all attacks) and permutation p-values of the max AUC and of the max TPR at the lowest
    supported FPR (members relabelled jointly for all attacks)."""
    names = sorted(scores)
    matrix = np.stack([np.asarray(scores[k], float) for k in names])
    n_others = matrix.shape[1] - n_members
    min_fpr = 1.0 / n_others
    aucs = auc_rows(matrix, n_members)
    boots = joint_bootstrap_aucs(matrix, n_members, seed=boot_seed, n_boot=n_boot)
    null_auc, null_tpr = max_attack_null(matrix, n_members, seed=perm_seed, n_perm=n_perm, fpr=min_fpr)
    members, others = matrix[:, :n_members], matrix[:, n_members:]
    tpr_min = tpr_at_fpr_rows(members, others, min_fpr)
    low = {key: tpr_at_fpr_rows(members, others, fpr) for key, fpr in LOW_FPRS if n_others * fpr >= 1 - 1e-9}
    attacks = {k: {"auc": float(aucs[i]), "ci_low": float(np.quantile(boots[:, i], 0.025)),
                   "ci_high": float(np.quantile(boots[:, i], 0.975)), "tpr_at_min_fpr": float(tpr_min[i]),
                   **{key: float(v[i]) for key, v in low.items()}} for i, k in enumerate(names)}
    best_max = boots.max(axis=1)
    return {
        "attacks": attacks,
        "strongest": max(names, key=lambda k: (attacks[k]["auc"], k)),
        "max_auc": float(aucs.max()),
        "max_auc_ci": (float(np.quantile(best_max, 0.025)), float(np.quantile(best_max, 0.975))),
        "max_auc_p_value": permutation_p(float(aucs.max()), null_auc),
        "min_fpr": min_fpr,
        "tpr_at_min_fpr": float(tpr_min.max()),
        "tpr_at_min_fpr_p_value": permutation_p(float(tpr_min.max()), null_tpr),
        "low_fpr": {key: float(v.max()) for key, v in low.items()},
    }


def _metrics(j: dict[str, Any]) -> dict[str, Metric]:
    best, (lo, hi) = j["strongest"], j["max_auc_ci"]
    low_text = {"tpr_at_1pct_fpr": "1%", "tpr_at_0_1pct_fpr": "0.1%"}
    return {
        "auc": Metric(j["max_auc"], Direction.LOWER, f"ROC AUC of the strongest attack ({best}); 95% interval of the "
                      "max over attacks (selection included)", lo, hi),
        "max_auc_p_value": Metric(j["max_auc_p_value"], Direction.HIGHER,
                                  "permutation p of the max AUC over attacks (members relabelled jointly)"),
        **{key: Metric(v, Direction.LOWER, f"members caught at {low_text[key]} false positives (best attack)")
           for key, v in j["low_fpr"].items()},
        "min_reportable_fpr": Metric(j["min_fpr"], Direction.INFO,
                                     "lowest false-positive rate the non-members support: 1 / n_non_members"),
        "tpr_at_min_fpr": Metric(j["tpr_at_min_fpr"], Direction.LOWER,
                                 "members caught at min_reportable_fpr false positives (best attack)"),
        "tpr_excess_at_min_fpr": Metric(j["tpr_at_min_fpr"] - j["min_fpr"], Direction.LOWER,
                                        "tpr_at_min_fpr - min_reportable_fpr"),
        "tpr_at_min_fpr_p_value": Metric(j["tpr_at_min_fpr_p_value"], Direction.HIGHER,
                                         "permutation p of the max TPR at min_reportable_fpr over attacks"),
        **{f"auc_{name}": Metric(v["auc"], Direction.LOWER, f"ROC AUC of the {name} attack", v["ci_low"],
                                 v["ci_high"]) for name, v in j["attacks"].items()},
    }


@register
class MIACheck(Check):
    name = "privacy.mia"
    description = ("membership inference from the release: GAN-Leaks distance (pixels, embedding, label maps; "
                   "pixels and label maps also calibrated against the holdout) and DOMIAS density-ratio attacks (and "
                   "white-box attacks where available), judged together")

    def compute(self, ctx: AuditContext) -> tuple[dict[str, Metric], dict[str, Any]]:
        n_train = len(ctx.train)
        scores = _blackbox_scores(ctx)
        whitebox = extra_attack_scores(ctx)
        if clash := sorted(set(whitebox) & set(scores)):
            raise ValueError(f"white-box attacks reuse the names {clash}")
        scores.update(whitebox)
        j = judge_attacks(scores, n_train, boot_seed=int(ctx.rng("mia/bootstrap").integers(2**31)),
                          perm_seed=int(ctx.rng("mia/permutation").integers(2**31)), n_boot=ctx.settings.n_boot)
        evidence = {"strongest_attack": j["strongest"], "members": n_train, "non_members": ctx.n("real") - n_train,
                    "attacks": j["attacks"], "whitebox_attacks": sorted(whitebox), "permutations": N_PERMUTATIONS,
                    "judgement": "max over attacks; bootstrap and permutation joint across attacks"}
        return _metrics(j), evidence
