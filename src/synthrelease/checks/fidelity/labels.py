"""``fidelity.labels``: do the synthetic label maps look like real ones?

Per case: the volume (ml) of each foreground label and of the tumour (``rois.tumour_values``: the ``tumour``
label, else BraTS whole tumour, else every foreground label), the number of tumour components (26-connected) and
the tumour centroid as a fraction of the grid along z, y and x. Synthetic against training cases: the two-sample
Kolmogorov-Smirnov statistic of each (0 = same distribution, 1 = disjoint) with its p-value, and the Wasserstein-1
distance of tumour volumes. The holdout against train gives the noise floor of this cohort size. A generator that
forgets tumours shows as a high ``ks_tumour_volume`` and ``empty_fraction_synthetic`` far from the real one.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from scipy import ndimage, stats

from synthrelease.checks.base import Check, Direction, Metric, Skip
from synthrelease.checks.context import AuditContext
from synthrelease.checks.registry import register
from synthrelease.checks.rois import tumour_mask, tumour_values
from synthrelease.data.case import Case

__all__ = ["LabelStatisticsCheck", "label_statistics"]

_AXES = ("z", "y", "x")


def _key(name: str) -> str:
    return re.sub(r"\W", "_", name)


def label_statistics(case: Case) -> dict[str, float]:
    """Volumes (ml), tumour component count and tumour centroid (fractions of the grid; NaN without tumour)."""
    out = {f"{_key(k)}_volume": v for k, v in case.label_volumes_ml().items()}
    mask = tumour_mask(case.labels, case.schema)
    voxel_ml = float(np.prod(case.geometry.spacing)) / 1000.0
    out["tumour_volume"] = float(mask.sum()) * voxel_ml
    out["tumour_count"] = float(ndimage.label(mask, structure=np.ones((3, 3, 3)))[1])
    centre = ndimage.center_of_mass(mask) if mask.any() else (np.nan,) * 3
    for axis, c, n in zip(_AXES, centre, mask.shape, strict=True):
        out[f"tumour_centroid_{axis}"] = float(c) / max(n - 1, 1)
    return out


def _table(ctx: AuditContext, which: str) -> dict[str, np.ndarray]:
    def compute() -> dict[str, np.ndarray]:
        rows = [label_statistics(case) for case in ctx.cohort(which)]
        return {k: np.array([r[k] for r in rows]) for k in rows[0]}

    return ctx.memo(f"label-stats/{which}", compute)


def _ks(a: np.ndarray, b: np.ndarray) -> tuple[float, float] | None:
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) == 0 or len(b) == 0:
        return None
    res = stats.ks_2samp(a, b)
    return float(res.statistic), float(res.pvalue)


@register
class LabelStatisticsCheck(Check):
    name = "fidelity.labels"
    description = "tumour volume, count and centroid and every label's volume: KS statistics synthetic vs train"

    def compute(self, ctx: AuditContext) -> tuple[dict[str, Metric], dict[str, Any]]:
        train, holdout, syn = (_table(ctx, w) for w in ("train", "holdout", "synthetic"))
        lesion = tumour_values(ctx.train.schema)[0]
        metrics: dict[str, Metric] = {}
        evidence: dict[str, Any] = {"tumour": lesion, "p_values": {}, "per_case": {
            "synthetic": [{"case": c, **{k: (None if not np.isfinite(v[i]) else float(v[i])) for k, v in syn.items()}}
                          for i, c in enumerate(ctx.synthetic.case_ids)]}}
        names = sorted({k for k in train if k.endswith("_volume")} - {"tumour_volume"})
        for stat in ["tumour_volume", "tumour_count", *names]:
            ks = _ks(syn[stat], train[stat])
            base = _ks(holdout[stat], train[stat])
            if ks is None or base is None:
                continue
            label = stat.replace("_", " ")
            metrics[f"ks_{stat}"] = Metric(ks[0], Direction.LOWER, f"KS statistic of {label}, synthetic vs train")
            metrics[f"ks_{stat}_holdout"] = Metric(base[0], Direction.INFO, "the same, holdout vs train (noise floor)")
            evidence["p_values"][stat] = ks[1]
        per_axis = [_ks(syn[f"tumour_centroid_{a}"], train[f"tumour_centroid_{a}"]) for a in _AXES]
        base_axis = [_ks(holdout[f"tumour_centroid_{a}"], train[f"tumour_centroid_{a}"]) for a in _AXES]
        if all(k is not None for k in per_axis) and all(k is not None for k in base_axis):
            metrics["ks_tumour_centroid"] = Metric(max(k[0] for k in per_axis if k), Direction.LOWER,
                                                   "largest KS statistic of the tumour centroid along z, y, x")
            metrics["ks_tumour_centroid_holdout"] = Metric(max(k[0] for k in base_axis if k), Direction.INFO,
                                                           "the same, holdout vs train (noise floor)")
            evidence["p_values"]["tumour_centroid"] = [k[1] for k in per_axis if k]
        if not metrics:
            raise Skip("no label statistic has values in both the synthetic and the training set")
        metrics["w1_tumour_volume_ml"] = Metric(float(stats.wasserstein_distance(syn["tumour_volume"],
                                                                                 train["tumour_volume"])),
                                                Direction.LOWER, "Wasserstein-1 of tumour volumes (ml)")
        for which, table in (("synthetic", syn), ("real", train)):
            metrics[f"empty_fraction_{which}"] = Metric(float((table["tumour_volume"] == 0).mean()), Direction.INFO,
                                                        f"share of {which} cases without tumour")
        evidence["figures"] = [_figure(ctx, train, holdout, syn, lesion)]
        return metrics, evidence


def _figure(ctx: AuditContext, train: dict[str, np.ndarray], holdout: dict[str, np.ndarray],
            syn: dict[str, np.ndarray], lesion: str) -> dict[str, Any]:
    from synthrelease.checks.fidelity.plots import label_statistics_figure

    path = ctx.figure_dir() / "label_statistics.png"
    label_statistics_figure(path, {"train": train, "holdout": holdout, "synthetic": syn}, lesion)
    return {"figure": f"figures/{path.name}", "contains_real_data": True}
