"""Metrics of the utility check from per-case scores: per-arm Dice (mean over foreground classes), per class and
region, HD95, and the synthetic / real Dice ratio, each with a bootstrap interval over the real holdout cases.

Means skip undefined values (Dice NaN: structure absent from truth and prediction; HD95 NaN: missing). An arm's
Dice is the mean over foreground classes of each class's mean over cases; a resample in which a class has no
defined value leaves that class out. ``dice_ratio`` and its interval come from one paired bootstrap: the same
resampled holdout cases score both arms (the arms were tested on the same patients).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np

from synthrelease.checks.base import Direction, Metric
from synthrelease.data.schema import LabelSchema
from synthrelease.segmentation import CaseScores, pooled_dice, structures

__all__ = ["arm_key", "summarize"]


def arm_key(arm: str) -> str:
    """``real+synthetic`` -> ``real_synthetic`` (metric names are identifiers)."""
    return re.sub(r"\W+", "_", arm).strip("_")


def _finite_mean(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else math.nan


def _class_mean(table: np.ndarray) -> float:
    """Mean over columns (classes) of each column's mean over rows (cases), defined columns only."""
    per_class = [_finite_mean(table[:, j]) for j in range(table.shape[1])]
    return _finite_mean(np.array(per_class))


def _class_mean_of(table: np.ndarray, classes: list[int], rows: np.ndarray) -> float:
    return _class_mean(table[rows][:, classes])


def _mean_of(column: np.ndarray, rows: np.ndarray) -> float:
    return _finite_mean(column[rows])


def _boot(n: int, stat: Callable[[np.ndarray], float], *, seed: int, n_boot: int) -> tuple[float | None,
                                                                                          float | None]:
    """Percentile interval of ``stat`` over resampled case indices; undefined resamples are left out."""
    if n < 2 or n_boot < 1:
        return None, None
    rng = np.random.default_rng(seed)
    draws = np.array([stat(rng.integers(0, n, n)) for _ in range(n_boot)])
    draws = draws[np.isfinite(draws)]
    if draws.size < max(10, n_boot // 2):
        return None, None
    return float(np.quantile(draws, 0.025)), float(np.quantile(draws, 0.975))


def _metric(value: float, direction: Direction, description: str, ci: tuple[float | None, float | None]) -> Metric:
    return Metric(value, direction, description, *ci)


def summarize(scores: Mapping[str, Sequence[CaseScores]], schema: LabelSchema, *, seed: int,
              n_boot: int) -> tuple[dict[str, Metric], dict[str, Any]]:
    """Metrics and evidence tables of every arm (``scores[arm]``: one entry per holdout case, same order)."""
    names = list(structures(schema))
    classes = [names.index(c) for c in schema.foreground]
    metrics: dict[str, Metric] = {}
    notes: list[str] = []
    pooled: dict[str, dict[str, float | None]] = {}
    missing: dict[str, int] = {}
    dice_tables: dict[str, np.ndarray] = {}
    for arm, rows in scores.items():
        key, n = arm_key(arm), len(rows)
        dice = np.array([[r.dice[s] for s in names] for r in rows], dtype=float)
        hd = np.array([[r.hd95[s] for s in names] for r in rows], dtype=float)
        dice_tables[arm] = dice
        value = _class_mean(dice[:, classes])
        if math.isfinite(value):
            metrics[f"dice_{key}"] = _metric(value, Direction.HIGHER,
                                             f"Dice of the {arm} arm on the real holdout (mean over foreground "
                                             "classes)", _boot(n, partial(_class_mean_of, dice, classes), seed=seed,
                                                               n_boot=n_boot))
        for j, s in enumerate(names):
            v = _finite_mean(dice[:, j])
            if math.isfinite(v):
                kind = "class" if j in classes else "region"
                metrics[f"dice_{arm_key(s)}_{key}"] = _metric(
                    v, Direction.HIGHER, f"Dice of {kind} {s}, {arm} arm (mean over holdout cases)",
                    _boot(n, partial(_mean_of, dice[:, j]), seed=seed + j + 1, n_boot=n_boot))
        h = _class_mean(hd[:, classes])
        if math.isfinite(h):
            metrics[f"hd95_{key}"] = _metric(h, Direction.LOWER, f"HD95 (mm) of the {arm} arm, mean over foreground "
                                             "classes (missing distances left out)",
                                             _boot(n, partial(_class_mean_of, hd, classes), seed=seed,
                                                   n_boot=n_boot))
        else:
            notes.append(f"the {arm} arm has no HD95: every prediction or truth of a foreground class is empty")
        missing[arm] = int(np.isnan(hd[:, classes]).sum())
        pooled[arm] = {s: (None if math.isnan(p) else round(p, 6))
                       for s in names for p in [pooled_dice(rows, s)]}
    _ratio(metrics, dice_tables, classes, notes, seed=seed, n_boot=n_boot)
    evidence = {"structures": names, "pooled_dice": pooled, "hd95_missing": missing, "notes": notes,
                "per_case": {"contains_real_data": True,
                             **{arm: [r.to_dict() for r in rows] for arm, rows in scores.items()}}}
    return metrics, evidence


MIN_REAL_DICE = 0.05  # below this the real arm learnt nothing: a ratio to it would be noise


def _ratio(metrics: dict[str, Metric], tables: Mapping[str, np.ndarray], classes: list[int], notes: list[str], *,
           seed: int, n_boot: int) -> None:
    if "real" not in tables or "synthetic" not in tables:
        notes.append("dice_ratio needs both the real and the synthetic arm")
        return
    real, syn = tables["real"][:, classes], tables["synthetic"][:, classes]
    base = _class_mean(real)
    if not math.isfinite(base) or base < MIN_REAL_DICE:
        notes.append(f"no dice_ratio: the real arm's Dice {base:.3f} is below {MIN_REAL_DICE} (raise the training "
                     "budget, utility_steps)")
        return

    def ratio(i: np.ndarray) -> float:
        r = _class_mean(real[i])
        return _class_mean(syn[i]) / r if r > 0 else math.nan

    value = _class_mean(syn) / base
    if not math.isfinite(value):
        notes.append("no dice_ratio: the synthetic arm has no defined Dice")
        return
    metrics["dice_ratio"] = _metric(value, Direction.HIGHER,
                                    "Dice of the synthetic arm / Dice of the real arm (paired bootstrap CI)",
                                    _boot(len(real), ratio, seed=seed + 997, n_boot=n_boot))
