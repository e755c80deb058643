"""``fidelity.paired_mae``: the study's MAE, for sets conditioned on training masks.

When a synthetic case is generated on a training patient's label map (``mask_source = train``), the real image
of that patient is its reference: MAE between the two on the model range ``[-1, 1]`` (as in the study), over the
whole volume and inside the tumour. Pairs are found from the data, not from provenance, so sets made by other
tools are paired too: each synthetic label map's best training match at identity (soft Dice on the pooled grid),
kept when the native label maps agree on at least ``PAIR_DICE`` of their labelled voxels. A set with no pair (the
default ``mask_source = generated``) has nothing to pair: the check is skipped with that reason.
``mae_between_patients`` (holdout case vs a random training case) tells what two different patients give.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from synthrelease.checks.base import Check, Direction, Metric, Skip
from synthrelease.checks.context import AuditContext
from synthrelease.checks.registry import register
from synthrelease.checks.rois import tumour_mask
from synthrelease.checks.stats import bootstrap_ci

__all__ = ["PAIR_DICE", "PairedMAECheck", "label_dice", "mask_pairs"]

PAIR_DICE = 0.95


def label_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Share of labelled voxels on which two label maps agree: 2 |a = b > 0| / (|a > 0| + |b > 0|) (0 if both empty)."""
    fa, fb = a > 0, b > 0
    total = int(fa.sum() + fb.sum())
    return 2.0 * float(((a == b) & fa).sum()) / total if total else 0.0


def mask_pairs(ctx: AuditContext) -> list[tuple[int, int, float]]:
    """``(synthetic index, training index, Dice)`` of every synthetic case drawn on a training label map."""

    def compute() -> list[tuple[int, int, float]]:
        s = ctx.label_maps("synthetic").flatten(1).double()
        t = ctx.label_maps("train").flatten(1).double()
        dice = 2 * s @ t.T / ((s * s).sum(1)[:, None] + (t * t).sum(1)[None, :]).clamp_min(1e-12)
        best = dice.argmax(dim=1).tolist()
        out = []
        for i, j in enumerate(best):
            if float(dice[i, j]) < PAIR_DICE - 0.1:  # the pooled grid blurs edges: confirm on the native grid
                continue
            d = label_dice(np.asarray(ctx.synthetic[i].labels), np.asarray(ctx.train[j].labels))
            if d >= PAIR_DICE:
                out.append((i, int(j), d))
        return out

    return ctx.memo("mask-pairs", compute)


@register
class PairedMAECheck(Check):
    name = "fidelity.paired_mae"
    description = "MAE (model range [-1, 1]) to the real case whose label map a synthetic case was generated on"

    def compute(self, ctx: AuditContext) -> tuple[dict[str, Metric], dict[str, Any]]:
        pairs = mask_pairs(ctx)
        if not pairs:
            raise Skip("no synthetic label map is a training label map: the set is not conditioned on training "
                       "masks, so it has no paired real image (the MAE of the study applies only to such sets)")
        mae, mae_tumour, rows = [], [], []
        for k, (i, j, d) in enumerate(pairs):
            s_case, t_case = ctx.synthetic[i], ctx.train[j]
            diff = np.abs(ctx.model_image(s_case) - ctx.model_image(t_case))
            mae.append(float(diff.mean()))
            tumour = tumour_mask(np.asarray(t_case.labels), t_case.schema)
            if tumour.any():
                mae_tumour.append(float(diff[:, tumour].mean()))
            rows.append({"synthetic": s_case.case_id, "dice": round(d, 4), "mae": mae[-1]})
            ctx.progress("paired MAE", k + 1, len(pairs))
        values = np.array(mae)
        lo, hi = bootstrap_ci(values, lambda v: float(v.mean()), seed=int(ctx.rng("paired-mae").integers(2**31)),
                              n_boot=ctx.settings.n_boot)
        rng = ctx.rng("paired-mae/baseline")
        between = [float(np.abs(ctx.model_image(h) - ctx.model_image(ctx.train[int(rng.integers(len(ctx.train)))]))
                         .mean()) for h in ctx.holdout]
        metrics = {
            "mae": Metric(float(values.mean()), Direction.LOWER, "mean absolute error to the paired real image",
                          lo, hi),
            "mae_between_patients": Metric(float(np.mean(between)), Direction.INFO,
                                           "MAE of a holdout case to a random training case (two patients)"),
            "n_pairs": Metric(len(pairs), Direction.INFO, "synthetic cases drawn on a training label map"),
            "paired_fraction": Metric(len(pairs) / len(ctx.synthetic), Direction.INFO,
                                      "share of synthetic cases drawn on a training label map"),
        }
        if mae_tumour:
            metrics["mae_tumour"] = Metric(float(np.mean(mae_tumour)), Direction.LOWER,
                                           "the same MAE inside the tumour")
        # the per-case table names synthetic cases only: which training patient each pairs with stays unsaid
        return metrics, {"pairs": rows, "pair_dice_threshold": PAIR_DICE,
                         "mask_source": ctx.provenance.get("mask_source")}
