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
from synthrelease.checks.figures import triptych
from synthrelease.checks.registry import register
from synthrelease.checks.stats import binomial_ci

__all__ = ["MaskMemorizationCheck", "MemorizationCheck"]


def _fraction_metric(flags: np.ndarray, description: str) -> Metric:
    """The flagged share with its exact (Clopper-Pearson) 95% interval: unlike a bootstrap, which gives [0, 0] for
    0 of 5 flagged, its upper bound says how little a small set proves (0 of 5: up to 52%)."""
    lo, hi = binomial_ci(int(flags.sum()), len(flags))
    return Metric(float(flags.mean()), Direction.LOWER, description, lo, hi)


def _chance_metric(n_holdout: int) -> Metric:
    """If synthetic cases were exchangeable with unseen patients, each would exceed tau (the highest of
    ``n_holdout`` holdout similarities) with probability ``1 / (n_holdout + 1)``: the flag rate of a generator that
    memorized nothing, which a policy allows for."""
    return Metric(1.0 / (n_holdout + 1), Direction.INFO, "flag rate expected by chance: 1 / (n_holdout + 1)")


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
            "flagged_fraction": _fraction_metric(flags, "share of synthetic cases flagged"),
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
        evidence = {
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
            "flagged_fraction": _fraction_metric(flags, "share of label maps flagged"),
            "chance_rate": _chance_metric(len(h_dice)),
            "n_flagged": Metric(int(flags.sum()), Direction.LOWER, "label maps flagged"),
            "tau": Metric(tau, Direction.INFO, "Dice threshold: the highest holdout-to-train label-map Dice"),
            "max_dice": Metric(float(s_dice.max()), Direction.LOWER, "highest synthetic-to-train Dice"),
            "median_dice": Metric(float(np.median(s_dice)), Direction.INFO, "median synthetic-to-train Dice"),
            "holdout_median_dice": Metric(float(np.median(h_dice)), Direction.INFO, "median holdout-to-train Dice"),
        }
        evidence = {
            "flagged": [{"synthetic": ids[i], "nearest_train": train_ids[int(nearest[i])], "dice": float(s_dice[i]),
                         "alignment": ctx.settings.alignment.describe(int(transforms[i]))}
                        for i in np.flatnonzero(flags)],
            "contains_real_data": True,
        }
        return metrics, evidence
