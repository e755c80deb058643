"""``privacy.tumour_memorization``: does a synthetic case carry a training patient's tumour, with its neighbourhood?

A tumour is the most identifying part of an oncology scan and the part a generator (or an inpainting route) can
copy without copying the rest of the patient: a training tumour pasted into new anatomy passes every whole-volume
search. Per case, a cube around the tumour's centroid (a quarter of the field of view per side, at least 6 voxels,
on the search grid) of standardized intensities; the similarity of two cubes is the NCC of their deviations from the
mean training tumour cube, best over the 8 mirror states and shifts of up to one voxel per axis (the centroids
already align the tumours). Each synthetic tumour's best match among the training tumours is judged against a
per-copy line calibrated, as for whole cases (``copysearch.calibrate``), on the holdout tumours' best matches.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch

from synthrelease.checks.align import shift_view
from synthrelease.checks.base import Check, Direction, Metric, Skip
from synthrelease.checks.context import AuditContext
from synthrelease.checks.copysearch import calibrate
from synthrelease.checks.privacy.memorization import copy_metrics
from synthrelease.checks.registry import register
from synthrelease.checks.rois import tumour_values

__all__ = ["TumourMemorizationCheck", "tumour_cubes"]

MIN_HOLDOUT_TUMOURS = 5


def _cube_side(grid: tuple[int, ...]) -> int:
    return max(6, round(0.25 * max(grid)))


def tumour_cubes(ctx: AuditContext, which: str) -> tuple[torch.Tensor, np.ndarray]:
    """``(N, C, s, s, s)`` standardized intensity cubes centred on each case's tumour (zeros where it has none) and
    which cases have a tumour."""
    vols, labs = ctx.volumes(which), ctx.label_maps(which)
    values = sorted(ctx.train.schema.foreground.values())
    channels = [values.index(v) for v in tumour_values(ctx.train.schema)[1] if v in values]
    s = _cube_side(tuple(vols.shape[2:]))
    out = torch.zeros(len(vols), vols.shape[1], s, s, s)
    present = np.zeros(len(vols), dtype=bool)
    for i, (v, lab) in enumerate(zip(vols, labs, strict=True)):
        mask = lab[channels].sum(dim=0) > 0.5 if channels else torch.zeros(lab.shape[1:], dtype=torch.bool)
        if not bool(mask.any()):
            continue
        present[i] = True
        centre = torch.nonzero(mask).float().mean(dim=0).round().long().tolist()
        floor = v.flatten(1).min(dim=1).values[:, None, None, None]
        # move the centroid to the grid's centre, then cut the central cube
        move = [int(c - n // 2) for c, n in zip(centre, v.shape[1:], strict=True)]
        moved = shift_view(v, False, (move[2], move[1], move[0]), floor)
        lo = [n // 2 - s // 2 for n in v.shape[1:]]
        out[i] = moved[:, lo[0]:lo[0] + s, lo[1]:lo[1] + s, lo[2]:lo[2] + s]
    return out, present


def _unit(rows: torch.Tensor) -> torch.Tensor:
    rows = rows - rows.mean(dim=1, keepdim=True)
    return rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-8)


def _views(cube: torch.Tensor) -> torch.Tensor:
    """``(V, C, s, s, s)``: the cube in each mirror state, moved by up to one voxel per axis."""
    floor = cube.flatten(1).min(dim=1).values[:, None, None, None]
    out = []
    for mirror in itertools.product((False, True), repeat=3):
        dims = [1 + i for i, m in enumerate(mirror) if m]
        m = cube.flip(dims) if dims else cube
        for move in itertools.product((-1, 0, 1), repeat=3):
            out.append(shift_view(m, False, (move[0], move[1], move[2]), floor))
    return torch.stack(out)


def best_tumour_matches(queries: torch.Tensor, refs: torch.Tensor, template: torch.Tensor) -> tuple[np.ndarray,
                                                                                                   np.ndarray]:
    """Best NCC of deviations (over the query's views) of each query cube against every reference cube, and which."""
    ref_rows = _unit((refs - template).flatten(1))
    sims, which = np.empty(len(queries)), np.empty(len(queries), dtype=np.int64)
    for i, q in enumerate(queries):
        scores = _unit((_views(q) - template).flatten(1)) @ ref_rows.T  # (V, N)
        best = scores.max(dim=0).values
        sims[i], which[i] = float(best.max()), int(best.argmax())
    return sims, which


@register
class TumourMemorizationCheck(Check):
    name = "privacy.tumour_memorization"
    description = "synthetic tumours (with their neighbourhood) that copy a training patient's tumour region"

    def compute(self, ctx: AuditContext) -> tuple[dict[str, Metric], dict[str, Any]]:
        train, t_has = tumour_cubes(ctx, "train")
        holdout, h_has = tumour_cubes(ctx, "holdout")
        syn, s_has = tumour_cubes(ctx, "synthetic")
        if not t_has.any():
            raise Skip("no training patient has a tumour label: no tumour to copy", not_applicable=True)
        if h_has.sum() < MIN_HOLDOUT_TUMOURS:
            raise Skip(f"only {int(h_has.sum())} holdout patients have a tumour; the per-copy line needs "
                       f"{MIN_HOLDOUT_TUMOURS}")
        refs = train[t_has]
        ref_ids = [cid for cid, has in zip(ctx.train.case_ids, t_has, strict=True) if has]
        template = refs.mean(dim=0)
        h_sim, _ = best_tumour_matches(holdout[h_has], refs, template)
        s_sim, s_ref = best_tumour_matches(syn[s_has], refs, template)
        line = calibrate(h_sim[:, None], max(int(s_has.sum()), 1), ctx.settings.copies.alpha)
        stat = line.statistic(s_sim[:, None])[0]
        ids = [cid for cid, has in zip(ctx.synthetic.case_ids, s_has, strict=True) if has]
        metrics = copy_metrics(line, stat, "synthetic tumours")
        metrics["n_with_tumour"] = Metric(int(s_has.sum()), Direction.INFO, "synthetic cases with a tumour label")
        metrics["max_ncc"] = Metric(float(s_sim.max()) if len(s_sim) else 0.0, Direction.LOWER,
                                    "highest tumour-region NCC to a training tumour")
        metrics["holdout_max_ncc"] = Metric(float(h_sim.max()), Direction.INFO,
                                            "highest holdout tumour-region NCC to a training tumour")
        evidence = {
            "copies": [{"synthetic": ids[i], "nearest_train": ref_ids[int(s_ref[i])],
                        "score": round(float(stat[i]), 3), "ncc": round(float(s_sim[i]), 4),
                        "region": "tumour and neighbourhood"} for i in np.flatnonzero(stat > line.threshold)],
            "cube_side_voxels": int(train.shape[-1]),
            "contains_real_data": True,
        }
        return metrics, evidence
