"""``privacy.memorization`` and ``privacy.mask_memorization``: is a synthetic case a copy of a training patient?

Per synthetic case, its highest similarity to any training case: (a) NCC of standardized volumes after the
alignment search (flip, shifts, small rotations), on deviations from the mean training volume, searched on a
downsampled grid and scored on the native grid up to 64^3 (``AuditContext._refine``), and (b) cosine in the
contrastive embedding. The threshold of each space is calibrated on data: tau = the highest similarity any
holdout patient (never seen by the generator) has to the training set. A case is flagged when it is closer to a
training patient than any unseen patient is in pixel space; the embedding's share above its own tau is reported
beside it (``flagged_fraction_embedding``) but does not flag: on the phantoms it separated copies from unseen
patients poorly (measured: copies' cosine median 0.94 = holdout median), and flagging on either space would double
the chance, about ``1 / (n_holdout + 1)`` per case, of flagging a case that is merely as close as unseen patients
are. Label maps: the highest mean soft Dice over foreground labels to any training label map, after the same
alignment, against the same kind of holdout threshold.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from synthrelease.checks.base import Check, Direction, Metric
from synthrelease.checks.context import AuditContext
from synthrelease.checks.copysearch import CopyThreshold, calibrate
from synthrelease.checks.figures import triptych
from synthrelease.checks.registry import register
from synthrelease.checks.stats import binomial_ci

__all__ = ["MaskMemorizationCheck", "MemorizationCheck"]


def _fraction_metric(flags: np.ndarray, description: str, n_holdout: int | None = None) -> Metric:
    """The flagged share with an exact 95% interval. Given ``n_holdout`` (tau is the highest of that many holdout
    similarities): the interval of the share flagged beyond chance (``stats.exceedance_share_ci``), which allows for
    every flag sharing one random tau, so chance flags are beta-binomial, not independent. Without it: the
    Clopper-Pearson interval of the flag rate against this tau. Unlike a bootstrap, which gives [0, 0] for 0 of 5
    flagged, either upper bound says how little a small set proves (0 of 5: up to about 50%)."""
    from synthrelease.checks.stats import exceedance_share_ci

    k, n = int(flags.sum()), len(flags)
    lo, hi = binomial_ci(k, n) if n_holdout is None else exceedance_share_ci(k, n, n_holdout)
    return Metric(float(flags.mean()), Direction.LOWER, description, lo, hi)


def _chance_metric(n_holdout: int) -> Metric:
    """If synthetic cases were exchangeable with unseen patients, each would exceed tau (the highest of
    ``n_holdout`` holdout similarities) with probability ``1 / (n_holdout + 1)`` on average over tau: the mean flag
    rate of a generator that memorized nothing. Its spread is wide (Beta(1, n_holdout)), so a policy judges
    ``flagged_p_value`` (``_p_value_metric``), not the distance of the share from this rate."""
    return Metric(1.0 / (n_holdout + 1), Direction.INFO, "mean flag rate expected by chance: 1 / (n_holdout + 1)")


def _p_value_metric(flags: np.ndarray, n_holdout: int) -> Metric:
    """``flagged_p_value``: the chance of at least this many flags if the synthetic cases were exchangeable with
    the ``n_holdout`` holdout cases (beta-binomial; ``stats.exceedance_p_value``). Exact, so a rule
    ``flagged_p_value >= alpha`` fails a generator that memorized nothing with probability at most alpha."""
    from synthrelease.checks.stats import exceedance_p_value

    return Metric(exceedance_p_value(int(flags.sum()), len(flags), n_holdout), Direction.HIGHER,
                  "p of at least this many flags by chance (beta-binomial null: one shared tau)")


def _figures(ctx: AuditContext, order: np.ndarray, nearest: np.ndarray, transforms: np.ndarray, kind: str,
             sims: np.ndarray) -> list[dict[str, Any]]:
    """Triptychs of the given synthetic cases (aligned to their nearest training case)."""
    import torch

    out = []
    syn, train = ctx.synthetic, ctx.train
    align = ctx.settings.alignment
    for i in order[: ctx.settings.max_figures]:
        s_case, t_case = syn[int(i)], train[int(nearest[i])]
        vol = torch.from_numpy(np.asarray(s_case.image[:1], dtype=np.float32))
        aligned = align.apply_one(vol, int(transforms[i]), grid=tuple(ctx.volumes('train').shape[2:]))[0].numpy()
        t_img = np.asarray(t_case.image[0], dtype=np.float32)
        a = (aligned - aligned.mean()) / max(float(aligned.std()), 1e-6)
        b = (t_img - t_img.mean()) / max(float(t_img.std()), 1e-6)
        name = f"{kind}_{s_case.case_id}.png"
        triptych(ctx.figure_dir() / name, np.asarray(a), b,
                 f"{s_case.case_id} | nearest training case | difference   similarity {sims[i]:.3f}")
        out.append({"synthetic": s_case.case_id, "figure": f"figures/{name}", "contains_real_data": True})
    return out


def copy_metrics(line: CopyThreshold, stat: np.ndarray, kind: str) -> dict[str, Metric]:
    """``n_copies`` (cases beyond the per-copy line: one is a breach, so policies fail on any), the line and the
    largest statistic of the set and of the holdout beside it."""
    finite = stat[np.isfinite(stat)]
    return {
        "n_copies": Metric(int((stat > line.threshold).sum()), Direction.LOWER,
                           f"{kind} beyond the per-copy line (calibrated on unseen patients, extreme-value fit)"),
        "copy_threshold": Metric(line.threshold, Direction.INFO,
                                 f"per-copy line: Gumbel quantile 1 - {line.alpha:g} / {line.n_judged} of the "
                                 "holdout's standardized scores, at least their maximum"),
        "copy_statistic_max": Metric(float(finite.max()) if finite.size else 0.0, Direction.LOWER,
                                     f"largest standardized copy score of the {kind}"),
        "holdout_copy_statistic_max": Metric(line.holdout_max, Direction.INFO,
                                             "largest standardized copy score of an unseen patient"),
    }


def _extraction(ctx: AuditContext, baseline: np.ndarray) -> tuple[dict[str, Metric], dict[str, Any]]:
    """``n_copies_extraction``: copies among ``extraction_samples`` more cases drawn from the set's model (an
    extraction attack samples far more than is released), against a line drawn for that many cases."""
    from synthrelease.checks.privacy.whitebox import extraction_cohort, whitebox_status

    n = ctx.settings.extraction_samples
    cohort = extraction_cohort(ctx, n)
    if cohort is None:
        return {}, {"extraction": {"not_run": whitebox_status(ctx)[1] or "no usable model"}}
    found = ctx.extraction_copy_scores(cohort)
    line = calibrate(baseline, n, ctx.settings.copies.alpha)
    stat, region = line.statistic(found.ncc)
    hits = np.flatnonzero(stat > line.threshold)
    train_ids = ctx.train.case_ids
    metrics = {"n_copies_extraction": Metric(len(hits), Direction.LOWER,
                                             f"copies among {n} more cases sampled from the set's model"),
               "n_extraction_samples": Metric(n, Direction.INFO, "cases sampled beyond the release")}
    evidence = {"extraction": {"copies": [
        {"sample": cohort.case_ids[i], "nearest_train": train_ids[int(found.reference[i, region[i]])],
         "score": round(float(stat[i]), 3), "region": found.regions[region[i]]} for i in hits]}}
    return metrics, evidence


@register
class MemorizationCheck(Check):
    name = "privacy.memorization"
    description = "synthetic cases closer to a training patient than any unseen patient is (pixel NCC and embedding)"

    def compute(self, ctx: AuditContext) -> tuple[dict[str, Metric], dict[str, Any]]:
        groups, train_only = ctx.standard_groups(), (("train", None),)
        syn_pix = ctx.pixel_matches("synthetic", groups)
        hold_pix = ctx.pixel_matches("holdout", train_only)
        syn_emb = ctx.embedding_matches("synthetic", groups)
        hold_emb = ctx.embedding_matches("holdout", train_only)
        s_pix, nearest, transforms = (t.numpy() for t in syn_pix.column(0))
        s_emb = syn_emb.column(0)[0].numpy()
        h_pix, h_emb = hold_pix.column(0)[0].numpy(), hold_emb.column(0)[0].numpy()
        tau_pix, tau_emb = float(h_pix.max()), float(h_emb.max())
        over_pix, over_emb = s_pix > tau_pix, s_emb > tau_emb
        flags = over_pix
        ids = ctx.synthetic.case_ids
        train_ids = ctx.train.case_ids
        order = np.argsort(-s_pix, kind="stable")
        shown = order[flags[order]] if flags.any() else order[:3]
        metrics = {
            "flagged_fraction": _fraction_metric(flags, "share of synthetic cases flagged", len(h_pix)),
            "flagged_p_value": _p_value_metric(flags, len(h_pix)),
            "chance_rate": _chance_metric(len(h_pix)),
            "n_flagged": Metric(int(flags.sum()), Direction.LOWER, "synthetic cases flagged"),
            "tau": Metric(tau_pix, Direction.INFO, "pixel NCC threshold: the highest holdout-to-train similarity"),
            "tau_embedding": Metric(tau_emb, Direction.INFO, "embedding cosine threshold (holdout-to-train max)"),
            "flagged_fraction_embedding": Metric(float(over_emb.mean()), Direction.LOWER,
                                                 "share above tau_embedding"),
            "max_similarity": Metric(float(s_pix.max()), Direction.LOWER, "highest synthetic-to-train NCC"),
            "median_similarity": Metric(float(np.median(s_pix)), Direction.INFO, "median synthetic-to-train NCC"),
            "holdout_median_similarity": Metric(float(np.median(h_pix)), Direction.INFO,
                                                "median holdout-to-train NCC"),
        }
        # the per-copy rule: the registered search (mirrors on every axis, rotations, scale, large shifts), whole
        # field of view and its halves, against a line calibrated on the holdout's own search
        copies: list[dict[str, Any]] = []
        try:
            found, baseline = ctx.copy_scores("synthetic"), ctx.copy_scores("holdout")
            line = calibrate(baseline.ncc, len(ids), ctx.settings.copies.alpha)
        except ValueError as exc:  # too few unseen patients to draw the line: n_copies is missing, which fails a rule
            copies_not_judged: str | None = str(exc)
        else:
            copies_not_judged = None
            stat, region = line.statistic(found.ncc)
            metrics.update(copy_metrics(line, stat, "synthetic cases"))
            copies = [{"synthetic": ids[i], "nearest_train": train_ids[int(found.reference[i, region[i]])],
                       "score": round(float(stat[i]), 3), "ncc": round(float(found.ncc[i, region[i]]), 4),
                       "region": found.regions[region[i]], "alignment": found.alignment[i][region[i]]}
                      for i in np.flatnonzero(stat > line.threshold)]
        if copies_not_judged is None and ctx.settings.extraction_samples > 0:
            extraction = _extraction(ctx, baseline.ncc)
            metrics.update(extraction[0])
            extraction_evidence = extraction[1]
        else:
            extraction_evidence = {}
        evidence = {
            "copies": copies,
            "copies_not_judged": copies_not_judged,
            **extraction_evidence,
            "flagged": [{"synthetic": ids[i], "nearest_train": train_ids[int(nearest[i])], "ncc": float(s_pix[i]),
                         "cosine": float(s_emb[i]), "alignment": ctx.settings.alignment.describe(int(transforms[i]))}
                        for i in np.flatnonzero(flags)],
            "per_case": {ids[i]: {"ncc": round(float(s_pix[i]), 4), "cosine": round(float(s_emb[i]), 4)}
                         for i in range(len(ids))},
            "figures": _figures(ctx, shown, nearest, transforms, "memorization", s_pix),
            "contains_real_data": True,
            "method": {"pooling_factor": ctx.factor, "scoring_factor": ctx.score_factor,
                       "transforms": ctx.settings.alignment.n_transforms(),
                       "rule": "flagged when above tau in pixel space (embedding reported, not deciding)"},
        }
        return metrics, evidence


@register
class MaskMemorizationCheck(Check):
    name = "privacy.mask_memorization"
    description = "synthetic label maps closer to a training label map than any unseen patient's is (soft Dice)"

    def compute(self, ctx: AuditContext) -> tuple[dict[str, Metric], dict[str, Any]]:
        s_dice, nearest, transforms = (t.numpy() for t in ctx.mask_matches("synthetic", "train").column(0))
        h_dice = ctx.mask_matches("holdout", "train").column(0)[0].numpy()
        tau = float(h_dice.max())
        flags = s_dice > tau
        ids, train_ids = ctx.synthetic.case_ids, ctx.train.case_ids
        metrics = {
            "flagged_fraction": _fraction_metric(flags, "share of label maps flagged", len(h_dice)),
            "flagged_p_value": _p_value_metric(flags, len(h_dice)),
            "chance_rate": _chance_metric(len(h_dice)),
            "n_flagged": Metric(int(flags.sum()), Direction.LOWER, "label maps flagged"),
            "tau": Metric(tau, Direction.INFO, "Dice threshold: the highest holdout-to-train label-map Dice"),
            "max_dice": Metric(float(s_dice.max()), Direction.LOWER, "highest synthetic-to-train Dice"),
            "median_dice": Metric(float(np.median(s_dice)), Direction.INFO, "median synthetic-to-train Dice"),
            "holdout_median_dice": Metric(float(np.median(h_dice)), Direction.INFO, "median holdout-to-train Dice"),
        }
        # the per-copy rule for label maps: the aligned Dice against a line calibrated on the holdout's Dice (one
        # region: the whole map); a copied image carries its map along, which the image's registered search finds
        copies: list[dict[str, Any]] = []
        try:
            line = calibrate(h_dice[:, None], len(ids), ctx.settings.copies.alpha)
        except ValueError as exc:  # too few unseen patients: n_copies is missing, which fails a rule
            copies_not_judged: str | None = str(exc)
        else:
            copies_not_judged = None
            stat = line.statistic(s_dice[:, None])[0]
            metrics.update(copy_metrics(line, stat, "synthetic label maps"))
            copies = [{"synthetic": ids[i], "nearest_train": train_ids[int(nearest[i])],
                       "score": round(float(stat[i]), 3), "dice": round(float(s_dice[i]), 4), "region": "whole",
                       "alignment": ctx.settings.alignment.describe(int(transforms[i]))}
                      for i in np.flatnonzero(stat > line.threshold)]
        evidence = {
            "copies": copies,
            "copies_not_judged": copies_not_judged,
            "flagged": [{"synthetic": ids[i], "nearest_train": train_ids[int(nearest[i])], "dice": float(s_dice[i]),
                         "alignment": ctx.settings.alignment.describe(int(transforms[i]))}
                        for i in np.flatnonzero(flags)],
            "contains_real_data": True,
        }
        return metrics, evidence
