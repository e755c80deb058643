"""Statistics the checks share: bootstrap confidence intervals, ROC AUC and TPR at a fixed FPR, Frechet distance
between Gaussians, maximum mean discrepancy (all seeded where random)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

__all__ = ["auc_with_ci", "binomial_ci", "bootstrap_ci", "frechet_distance", "gaussian_frechet", "median_bandwidth",
           "mmd_permutation_p", "mmd_rbf", "tpr_at_fpr"]


def bootstrap_ci(values: np.ndarray, stat: Callable[[np.ndarray], float], *, seed: int, n_boot: int = 1000,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat`` over resampled rows of ``values``."""
    values = np.asarray(values)
    rng = np.random.default_rng(seed)
    n = len(values)
    stats = np.array([stat(values[rng.integers(0, n, n)]) for _ in range(n_boot)])
    alpha = (1 - level) / 2
    return float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha))


def binomial_ci(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of a proportion ``k / n``."""
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=level, method="exact")
    return float(ci.low), float(ci.high)


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


def frechet_distance(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """Frechet (2-Wasserstein squared) distance between N(mu1, s1) and N(mu2, s2), FID's formula:
    ``|mu1 - mu2|^2 + Tr(s1 + s2 - 2 (s1 s2)^(1/2))``.

    ``Tr (s1 s2)^(1/2)`` is taken as the sum of square roots of the eigenvalues of ``s1^(1/2) s2 s1^(1/2)``, which has
    the eigenvalues of ``s1 s2`` but is symmetric positive semi-definite: with more features than cases both
    covariances are singular, where ``scipy.linalg.sqrtm(s1 @ s2)`` returns complex parts and loses accuracy. Tiny
    negative eigenvalues (rounding) are clipped to 0, and so is the result.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(s1, np.float64)), np.atleast_2d(np.asarray(s2, np.float64))
    if s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size) or mu1.shape != mu2.shape:
        raise ValueError(f"mismatched shapes: mu {mu1.shape} / {mu2.shape}, covariance {s1.shape} / {s2.shape}")
    w, v = np.linalg.eigh((s1 + s1.T) / 2)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = root1 @ s2 @ root1
    tr_covmean = float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum())
    diff = mu1 - mu2
    return max(float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean), 0.0)


def gaussian_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """``frechet_distance`` between Gaussians fitted to the rows of ``a`` and of ``b`` (same columns)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    return frechet_distance(a.mean(axis=0), np.atleast_2d(np.cov(a, rowvar=False)),
                            b.mean(axis=0), np.atleast_2d(np.cov(b, rowvar=False)))


def mmd_rbf(x: np.ndarray, y: np.ndarray, bandwidth: float) -> float:
    """Unbiased squared maximum mean discrepancy with the kernel ``exp(-|a - b|^2 / (2 bandwidth^2))``."""
    x, y = np.asarray(x, float), np.asarray(y, float)

    def k(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
        return np.asarray(np.exp(-np.maximum(d2, 0) / (2 * bandwidth**2)))

    m, n = len(x), len(y)
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) if m > 1 else 0.0
    yy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1)) if n > 1 else 0.0
    return float(xx + yy - 2 * kxy.mean())


def median_bandwidth(x: np.ndarray) -> float:
    """The median heuristic: median pairwise Euclidean distance between rows (1 if all rows coincide)."""
    x = np.asarray(x, float)
    d2 = (x * x).sum(1)[:, None] + (x * x).sum(1)[None, :] - 2 * x @ x.T
    d = np.sqrt(np.maximum(d2[np.triu_indices(len(x), 1)], 0))
    med = float(np.median(d)) if d.size else 0.0
    return med if med > 0 else 1.0


def mmd_permutation_p(x: np.ndarray, y: np.ndarray, bandwidth: float, *, seed: int, n_perm: int = 200) -> float:
    """Permutation p-value of ``mmd_rbf`` (pooled rows relabelled at random, seeded; +1 smoothing)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    observed = mmd_rbf(x, y, bandwidth)
    pooled = np.concatenate([x, y])
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(n_perm):
        idx = rng.permutation(len(pooled))
        hits += mmd_rbf(pooled[idx[: len(x)]], pooled[idx[len(x):]], bandwidth) >= observed
    return (hits + 1) / (n_perm + 1)
