"""Scores of a predicted label map against the truth: Dice and HD95 per foreground class and per region.

MONAI's ``compute_dice`` and ``compute_hausdorff_distance`` (95th percentile, symmetric, in mm: the spacing of the
grid is passed per array axis). Conventions for empty structures:

- Dice: truth and prediction both empty -> undefined (NaN, left out of every mean: a structure that is absent and
  was not predicted says nothing about the model); exactly one of them empty -> 0.
- HD95: either side empty -> missing (NaN, left out of means and counted in ``missing``), never 0 or a made-up
  distance.

``pooled`` Dice sums overlaps and volumes over all cases before dividing (large structures weigh more), beside the
per-case mean.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from synthrelease.data.schema import LabelSchema

__all__ = ["CaseScores", "pooled_dice", "score_case", "structures"]


def structures(schema: LabelSchema) -> dict[str, tuple[int, ...]]:
    """Foreground classes (one value each), then regions (BraTS WT, TC, ET; ET is also a class: same members)."""
    out: dict[str, tuple[int, ...]] = {name: (v,) for name, v in schema.foreground.items()}
    out.update({name: tuple(m) for name, m in schema.regions.items()})
    return out


@dataclass(frozen=True)
class CaseScores:
    case_id: str
    dice: dict[str, float]  # per structure; NaN = undefined
    hd95: dict[str, float]  # per structure, mm; NaN = missing
    counts: dict[str, tuple[int, int, int]]  # per structure: (overlap, predicted, true) voxels

    def to_dict(self) -> dict[str, object]:
        def clean(d: dict[str, float]) -> dict[str, float | None]:
            return {k: (None if math.isnan(v) else round(v, 6)) for k, v in d.items()}

        return {"case": self.case_id, "dice": clean(self.dice), "hd95_mm": clean(self.hd95)}


def score_case(case_id: str, pred: np.ndarray, truth: np.ndarray, schema: LabelSchema,
               spacing_zyx: Sequence[float]) -> CaseScores:
    """Dice, HD95 and voxel counts of every class and region of ``schema``."""
    from monai.metrics import compute_dice, compute_hausdorff_distance

    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} of case {case_id} differ in shape")
    names = list(structures(schema).items())
    p = torch.from_numpy(np.stack([np.isin(pred, m) for _, m in names]))[None]
    t = torch.from_numpy(np.stack([np.isin(truth, m) for _, m in names]))[None]
    dice = compute_dice(p, t, include_background=True, ignore_empty=False)[0].double().numpy()
    with warnings.catch_warnings():  # empty structures: MONAI warns and returns nan / inf, reported as missing
        warnings.simplefilter("ignore")
        hd = compute_hausdorff_distance(p, t, include_background=True, percentile=95,
                                        spacing=[float(s) for s in spacing_zyx])[0].double().numpy()
    dice_out, hd_out, counts = {}, {}, {}
    for i, (name, _) in enumerate(names):
        n_pred, n_true = int(p[0, i].sum()), int(t[0, i].sum())
        counts[name] = (int((p[0, i] & t[0, i]).sum()), n_pred, n_true)
        dice_out[name] = math.nan if n_pred == 0 and n_true == 0 else float(dice[i])
        hd_out[name] = float(hd[i]) if n_pred and n_true and math.isfinite(hd[i]) else math.nan
    return CaseScores(case_id, dice_out, hd_out, counts)


def pooled_dice(scores: Sequence[CaseScores], name: str) -> float:
    """Dice of one structure over all cases' voxels together (NaN when it is absent from truth and prediction)."""
    inter = sum(s.counts[name][0] for s in scores)
    total = sum(s.counts[name][1] + s.counts[name][2] for s in scores)
    return 2.0 * inter / total if total else math.nan
