"""A summary of a workspace: what was ingested, on which grid, with which labels (no identifiers in it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from synthrelease.data.workspace import Workspace

__all__ = ["summarize_workspace"]


def summarize_workspace(ws: Workspace, *, progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Counts per split, grid, intensity range and label statistics (volumes in ml, how many cases hold each)."""
    pre = ws.config["preprocessing"]
    out: dict[str, Any] = {
        "workspace": str(ws.root),
        "modality": ws.modality.value,
        "channels": list(ws.channel_names),
        "labels": ws.schema.labels_json(),
        "regions": ws.schema.regions_json(),
        "grid": {"shape_zyx": pre["target_shape"], "spacing_xyz_mm": pre["target_spacing"]},
        "intensity_reference": {"low": pre["reference"]["low"], "high": pre["reference"]["high"]},
        "splits": {},
    }
    total = len(ws.splits.train) + len(ws.splits.holdout)
    done = 0
    for split_name, cohort in (("train", ws.train()), ("holdout", ws.holdout())):
        volumes: dict[str, list[float]] = {name: [] for name in ws.schema.foreground}
        lo, hi = np.inf, -np.inf
        for case in cohort:
            for name, ml in case.label_volumes_ml().items():
                volumes[name].append(ml)
            lo, hi = min(lo, float(case.image.min())), max(hi, float(case.image.max()))
            done += 1
            if progress:
                progress("summary", done, total)
        out["splits"][split_name] = {
            "n_cases": len(cohort),
            "image_range": [lo, hi] if len(cohort) else None,
            "labels": {
                name: {
                    "cases_with_label": int(sum(v > 0 for v in vals)),
                    "mean_ml": float(np.mean(vals)) if vals else None,
                    "sd_ml": float(np.std(vals)) if vals else None,
                }
                for name, vals in volumes.items()
            },
        }
    return out
