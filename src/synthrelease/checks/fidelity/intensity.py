"""``fidelity.intensity``: are intensities inside each region realistic?

Per region of interest (each foreground label and ``tissue``: ``rois.roi_masks``), the Wasserstein-1 distance
between the intensity distributions (model range ``[-1, 1]``, mean over channels) of the synthetic and the
training cases. The holdout against train is the noise floor. Voxels are subsampled per case (seeded, at most
``VOXELS_PER_ROI`` per cohort and region in all), so memory does not grow with the grid. A region no synthetic case
contains has no distance: its metric is missing, and a policy rule on it fails.

Figures: intensity histograms per region and mid-slice mosaics of training and synthetic cases (both derived from
real data: kept out of packages).
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
from scipy import stats

from synthrelease.checks.base import Check, Direction, Metric, Skip
from synthrelease.checks.context import AuditContext
from synthrelease.checks.registry import register
from synthrelease.checks.rois import roi_masks, roi_names

__all__ = ["VOXELS_PER_ROI", "IntensityCheck", "intensity_samples"]

VOXELS_PER_ROI = 200_000
MOSAIC_CASES = 6


def intensity_samples(ctx: AuditContext, which: str) -> dict[str, Any]:
    """``{"samples": {roi: (n, C) voxel values}, "mosaic": [first-channel volumes]}`` of one cohort (memoized)."""

    def compute() -> dict[str, Any]:
        n = len(ctx.cohort(which))
        cap = max(1, math.ceil(VOXELS_PER_ROI / n))
        rng = ctx.rng(f"intensity/{which}")
        names = roi_names(ctx.train.schema)
        parts: dict[str, list[np.ndarray]] = {r: [] for r in names}
        mosaic: list[np.ndarray] = []
        for case, image, body in ctx.model_cases(which):
            flat = image.reshape(image.shape[0], -1)
            for roi, mask in roi_masks(case.labels, body, case.schema).items():
                idx = np.flatnonzero(mask)
                if len(idx) > cap:
                    idx = np.sort(rng.choice(idx, cap, replace=False))
                parts[roi].append(flat[:, idx].T)
            if len(mosaic) < MOSAIC_CASES:
                mosaic.append(image[0])
        samples = {r: np.concatenate(p) if p else np.empty((0, 1), np.float32) for r, p in parts.items()}
        return {"samples": samples, "mosaic": mosaic}

    return ctx.memo(f"intensity/{which}", compute)


def _w1(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([stats.wasserstein_distance(a[:, c], b[:, c]) for c in range(a.shape[1])]))


@register
class IntensityCheck(Check):
    name = "fidelity.intensity"
    description = "Wasserstein-1 of intensities per region (tumour, bone / brain, soft tissue), synthetic vs train"

    def compute(self, ctx: AuditContext) -> tuple[dict[str, Metric], dict[str, Any]]:
        data = {w: intensity_samples(ctx, w) for w in ("train", "holdout", "synthetic")}
        samples = {w: d["samples"] for w, d in data.items()}
        metrics: dict[str, Metric] = {}
        missing, counts = [], {}
        for roi in roi_names(ctx.train.schema):
            s, t, h = (samples[w][roi] for w in ("synthetic", "train", "holdout"))
            counts[roi] = {"synthetic": len(s), "train": len(t), "holdout": len(h)}
            if not len(s) or not len(t) or not len(h):
                missing.append(roi)
                continue
            key = re.sub(r"\W", "_", roi)
            metrics[f"w1_{key}"] = Metric(_w1(s, t), Direction.LOWER,
                                          f"Wasserstein-1 of {roi} intensities (model range), synthetic vs train")
            metrics[f"w1_{key}_holdout"] = Metric(_w1(h, t), Direction.INFO, "the same, holdout vs train (noise floor)")
        if not metrics:
            raise Skip("no region of interest has voxels in the synthetic, training and holdout sets")
        roi_keys = [k for k in metrics if not k.endswith("_holdout")]
        metrics["w1_mean"] = Metric(float(np.mean([metrics[k].value for k in roi_keys])), Direction.LOWER,
                                    "mean Wasserstein-1 over the regions present")
        evidence: dict[str, Any] = {"voxels_sampled": counts, "regions_missing": missing,
                                    "scale": "model range [-1, 1]", "figures": _figures(ctx, data)}
        return metrics, evidence


def _figures(ctx: AuditContext, data: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    from synthrelease.checks.fidelity.plots import intensity_histograms, mosaic

    rng = ctx.rng("intensity/figure")
    thin = {w: {r: v[:, 0][rng.permutation(len(v))[:20_000]] for r, v in d["samples"].items()}
            for w, d in data.items()}
    hist = intensity_histograms(ctx.figure_dir() / "intensity_histograms.png", thin, roi_names(ctx.train.schema))
    tiles = mosaic(ctx.figure_dir() / "mosaic.png", {"train": data["train"]["mosaic"],
                                                     "synthetic": data["synthetic"]["mosaic"]})
    return [{"figure": f"figures/{hist.name}", "contains_real_data": True},
            {"figure": f"figures/{tiles.name}", "contains_real_data": True}]
