"""Statistics the checks share: bootstrap confidence intervals, ROC AUC and TPR at a fixed FPR (seeded)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

__all__ = ["auc_with_ci", "bootstrap_ci", "tpr_at_fpr"]


def bootstrap_ci(values: np.ndarray, stat: Callable[[np.ndarray], float], *, seed: int, n_boot: int = 1000,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat`` over resampled rows of ``values``."""
    values = np.asarray(values)
    rng = np.random.default_rng(seed)
    n = len(values)
    stats = np.array([stat(values[rng.integers(0, n, n)]) for _ in range(n_boot)])
    alpha = (1 - level) / 2
    return float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha))


def _auc(members: np.ndarray, others: np.ndarray) -> float:
    y = np.r_[np.ones(len(members)), np.zeros(len(others))]
    return float(roc_auc_score(y, np.r_[members, others]))


def auc_with_ci(members: np.ndarray, others: np.ndarray, *, seed: int, n_boot: int = 1000,
                level: float = 0.95) -> tuple[float, float, float]:
    """ROC AUC of scores (higher = "member") and its stratified percentile bootstrap interval."""
    members, others = np.asarray(members, float), np.asarray(others, float)
    rng = np.random.default_rng(seed)
    boots = np.empty(n_boot)
    for i in range(n_boot):
        boots[i] = _auc(members[rng.integers(0, len(members), len(members))],
                        others[rng.integers(0, len(others), len(others))])
    alpha = (1 - level) / 2
    return _auc(members, others), float(np.quantile(boots, alpha)), float(np.quantile(boots, 1 - alpha))


def tpr_at_fpr(members: np.ndarray, others: np.ndarray, fpr: float) -> float:
    """Highest true-positive rate among thresholds whose false-positive rate is at most ``fpr``."""
    y = np.r_[np.ones(len(members)), np.zeros(len(others))]
    f, t, _ = roc_curve(y, np.r_[members, others])
    ok = f <= fpr + 1e-12
    return float(t[ok].max()) if ok.any() else 0.0
