"""``privacy.tumour_memorization``: does a synthetic case carry a training patient's tumour, with its neighbourhood?

A tumour is the most identifying part of an oncology scan and the part a generator (or an inpainting route) can
copy without copying the rest of the patient: a training tumour pasted into new anatomy passes every whole-volume
search. Per case, cubes centred on the tumour's centroid (the centroids align the tumours; each query cube is tried
in the 8 mirror states and moved by up to one voxel per axis), and three scores against every training tumour, each
query's best per score:

- **cube**: the NCC of standardized intensities' deviations from the mean training tumour cube, over a cube of a
  quarter of the field of view (at least 6 voxels): the tumour with its neighbourhood, a transplant left in place;
- **shape**: the Dice of the tumour label masks, over a cube of three eighths of the field of view (at least 8
  voxels, so that a whole tumour fits): a tumour moved into another body keeps its shape voxel for voxel, where two
  patients' tumours, drawn alike, still differ at their edges;
- **tumour**: the NCC of standardized intensities within the query's tumour and one voxel around it: what a
  transplant carries wherever it lands, whichever label map the case was given.

The shape and the tumour's intensities are the columns of the per-copy line (``copysearch.calibrate``: each
standardized by the holdout tumours' own best matches, a Gumbel line on the largest), so a case is a copy when
either lies beyond what unseen patients' tumours reach. The cube with its neighbourhood is reported (``max_ncc``)
but judges nothing: it mostly measures the tumour's site, whose anatomy unseen patients share (an unseen phantom
patient's cube reached 0.95 where the holdout's maximum was 0.87), and the two scores above find every transplant
it found.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
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

__all__ = ["SCORES", "TumourCubes", "TumourMemorizationCheck", "best_tumour_matches", "tumour_cubes"]

MIN_HOLDOUT_TUMOURS = 5


def _cube_side(grid: tuple[int, ...]) -> int:
    return max(6, round(0.25 * max(grid)))


def _mask_side(grid: tuple[int, ...]) -> int:
    return max(8, round(0.375 * max(grid)))


SCORES = ("tumour and neighbourhood", "tumour shape (label mask)", "tumour intensities")
JUDGED = (1, 2)  # the scores the per-copy line judges (see the module docstring)


def _centred_cube(v: torch.Tensor, centre: list[int], side: int, fill: torch.Tensor | float) -> torch.Tensor:
    """``(C, side, side, side)`` of ``v`` ``(C, Z, Y, X)`` centred on ``centre`` (``fill`` beyond the grid)."""
    move = [int(c - n // 2) for c, n in zip(centre, v.shape[1:], strict=True)]
    moved = shift_view(v, False, (move[2], move[1], move[0]), fill)
    lo = [n // 2 - side // 2 for n in v.shape[1:]]
    return moved[:, lo[0]:lo[0] + side, lo[1]:lo[1] + side, lo[2]:lo[2] + side]


@dataclass(frozen=True)
class TumourCubes:
    """Per case: the intensity cube with the neighbourhood, the tumour mask and the intensities on the mask's cube
    (zeros where a case has no tumour), and which cases have one."""

    around: torch.Tensor  # (N, C, s, s, s)
    mask: torch.Tensor  # (N, 1, m, m, m) soft tumour mask
    inside: torch.Tensor  # (N, C, m, m, m) standardized intensities on the mask's cube
    present: np.ndarray

    def subset(self, keep: np.ndarray) -> TumourCubes:
        """The cases where ``keep`` (a boolean per case) holds."""
        index = torch.from_numpy(np.flatnonzero(keep))
        return TumourCubes(self.around[index], self.mask[index], self.inside[index], self.present[keep])


def tumour_cubes(ctx: AuditContext, which: str) -> TumourCubes:
    """The cubes (``TumourCubes``) of the ``which`` cases, centred on each case's tumour centroid."""
    vols, labs = ctx.volumes(which), ctx.label_maps(which)
    values = sorted(ctx.train.schema.foreground.values())
    channels = [values.index(v) for v in tumour_values(ctx.train.schema)[1] if v in values]
    grid = tuple(vols.shape[2:])
    s, m = _cube_side(grid), _mask_side(grid)
    around = torch.zeros(len(vols), vols.shape[1], s, s, s)
    mask = torch.zeros(len(vols), 1, m, m, m)
    inside = torch.zeros(len(vols), vols.shape[1], m, m, m)
    present = np.zeros(len(vols), dtype=bool)
    for i, (v, lab) in enumerate(zip(vols, labs, strict=True)):
        soft = lab[channels].sum(dim=0, keepdim=True) if channels else torch.zeros(1, *lab.shape[1:])
        if not bool((soft > 0.5).any()):
            continue
        present[i] = True
        centre = torch.nonzero(soft[0] > 0.5).float().mean(dim=0).round().long().tolist()
        floor = v.flatten(1).min(dim=1).values[:, None, None, None]
        around[i] = _centred_cube(v, centre, s, floor)
        mask[i] = _centred_cube(soft, centre, m, 0.0)
        inside[i] = _centred_cube(v, centre, m, floor)
    return TumourCubes(around, mask, inside, present)


def _unit(rows: torch.Tensor) -> torch.Tensor:
    rows = rows - rows.mean(dim=1, keepdim=True)
    return rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-8)


def _views(cube: torch.Tensor, fill: torch.Tensor | float | None = None) -> torch.Tensor:
    """``(V, C, s, s, s)``: the cube in each mirror state, moved by up to one voxel per axis; what enters the view
    is ``fill`` (default: each channel's minimum)."""
    floor = cube.flatten(1).min(dim=1).values[:, None, None, None] if fill is None else fill
    out = []
    for mirror in itertools.product((False, True), repeat=3):
        dims = [1 + i for i, m in enumerate(mirror) if m]
        m = cube.flip(dims) if dims else cube
        for move in itertools.product((-1, 0, 1), repeat=3):
            out.append(shift_view(m, False, (move[0], move[1], move[2]), floor))
    return torch.stack(out)


def _dilated(mask: torch.Tensor) -> torch.Tensor:
    """``(..., 1, m, m, m)`` soft masks grown by one voxel (3x3x3 max)."""
    shape = mask.shape
    flat = mask.reshape(-1, 1, *shape[-3:])
    return torch.nn.functional.max_pool3d(flat, 3, stride=1, padding=1).reshape(shape)


def best_tumour_matches(queries: TumourCubes, refs: TumourCubes, template: torch.Tensor) -> tuple[np.ndarray,
                                                                                                   np.ndarray]:
    """``(Q, 3)`` best scores (``SCORES``) of each query tumour over its views against every reference tumour, and
    ``(Q, 3)`` which reference gave each. Only cases with a tumour are passed."""
    around_rows = _unit((refs.around - template).flatten(1))  # (N, D)
    r_mask = refs.mask.flatten(1).double()  # (N, M)
    r_int = refs.inside.flatten(2).double()  # (N, C, M)
    r_sum, r_sq = r_int, r_int * r_int
    sims = np.full((len(queries.present), len(SCORES)), np.nan)
    which = np.zeros((len(queries.present), len(SCORES)), dtype=np.int64)
    for i in range(len(queries.present)):
        scores = []
        # the tumour with its neighbourhood: NCC of deviations from the mean training cube
        scores.append(_unit((_views(queries.around[i]) - template).flatten(1)) @ around_rows.T)  # (V, N)
        # the shape: Dice of the masks
        q_mask = _views(queries.mask[i], 0.0).flatten(1).double()  # (V, M)
        scores.append(2 * q_mask @ r_mask.T / (q_mask.sum(1, keepdim=True) + r_mask.sum(1)[None]).clamp_min(1e-8))
        # the intensities within the query's tumour and one voxel around it (weighted NCC, summed over channels)
        w = _dilated(_views(queries.mask[i], 0.0)).flatten(1).double()  # (V, M)
        q_int = _views(queries.inside[i]).flatten(2).double()  # (V, C, M)
        n = w.sum(1).clamp_min(1e-8)[:, None]  # (V, 1)
        num = torch.zeros(len(w), len(r_int), dtype=torch.float64)
        den_q = torch.zeros(len(w), 1, dtype=torch.float64)
        den_r = torch.zeros(len(w), len(r_int), dtype=torch.float64)
        for c in range(q_int.shape[1]):
            q = q_int[:, c]
            q_mean = (w * q).sum(1, keepdim=True) / n
            qc = q - q_mean
            r_mean = (w @ r_sum[:, c].T) / n  # (V, N)
            num = num + (w * qc) @ r_int[:, c].T  # sum w qc r (the qc mean is 0 under w)
            den_q = den_q + (w * qc * qc).sum(1, keepdim=True)
            den_r = den_r + w @ r_sq[:, c].T - n * r_mean * r_mean
        scores.append(num / torch.sqrt((den_q * den_r).clamp_min(1e-12)))
        for k, sc in enumerate(scores):
            best = sc.max(dim=0).values
            sims[i, k], which[i, k] = float(best.max()), int(best.argmax())
    return sims, which


@register
class TumourMemorizationCheck(Check):
    name = "privacy.tumour_memorization"
    description = "synthetic tumours (with their neighbourhood) that copy a training patient's tumour region"

    def compute(self, ctx: AuditContext) -> tuple[dict[str, Metric], dict[str, Any]]:
        train, holdout, syn = (tumour_cubes(ctx, w) for w in ("train", "holdout", "synthetic"))
        t_has, h_has, s_has = train.present, holdout.present, syn.present
        if not t_has.any():
            raise Skip("no training patient has a tumour label: no tumour to copy", not_applicable=True)
        if h_has.sum() < MIN_HOLDOUT_TUMOURS:
            raise Skip(f"only {int(h_has.sum())} holdout patients have a tumour; the per-copy line needs "
                       f"{MIN_HOLDOUT_TUMOURS}")
        refs = train.subset(t_has)
        ref_ids = [cid for cid, has in zip(ctx.train.case_ids, t_has, strict=True) if has]
        template = refs.around.mean(dim=0)
        h_sim, _ = best_tumour_matches(holdout.subset(h_has), refs, template)
        s_sim, s_ref = best_tumour_matches(syn.subset(s_has), refs, template)
        judged = list(JUDGED)
        line = calibrate(h_sim[:, judged], max(int(s_has.sum()), 1), ctx.settings.copies.alpha)
        stat, column = line.statistic(s_sim[:, judged]) if len(s_sim) else (np.zeros(0), np.zeros(0, dtype=np.int64))
        score = np.asarray(JUDGED)[column] if len(s_sim) else column
        ids = [cid for cid, has in zip(ctx.synthetic.case_ids, s_has, strict=True) if has]
        metrics = copy_metrics(line, stat, "synthetic tumours")
        metrics["n_with_tumour"] = Metric(int(s_has.sum()), Direction.INFO, "synthetic cases with a tumour label")
        metrics["max_ncc"] = Metric(float(s_sim[:, 0].max()) if len(s_sim) else 0.0, Direction.LOWER,
                                    "highest tumour-region NCC (with the neighbourhood) to a training tumour")
        metrics["holdout_max_ncc"] = Metric(float(h_sim[:, 0].max()), Direction.INFO,
                                            "highest holdout tumour-region NCC to a training tumour")
        metrics["max_shape_dice"] = Metric(float(s_sim[:, 1].max()) if len(s_sim) else 0.0, Direction.LOWER,
                                           "highest Dice of a synthetic tumour's mask to a training tumour's")
        metrics["holdout_max_shape_dice"] = Metric(float(h_sim[:, 1].max()), Direction.INFO,
                                                   "highest Dice of a holdout tumour's mask to a training tumour's")
        evidence = {
            "copies": [{"synthetic": ids[i], "nearest_train": ref_ids[int(s_ref[i, score[i]])],
                        "score": round(float(stat[i]), 3), "value": round(float(s_sim[i, score[i]]), 4),
                        "region": SCORES[int(score[i])]} for i in np.flatnonzero(stat > line.threshold)],
            "lines": {SCORES[k]: round(line.ncc_line(j), 4) for j, k in enumerate(JUDGED)},
            "cube_side_voxels": int(train.around.shape[-1]),
            "mask_cube_side_voxels": int(train.mask.shape[-1]),
            "contains_real_data": True,
        }
        return metrics, evidence

