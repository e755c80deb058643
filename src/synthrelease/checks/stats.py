"""Statistics the checks share: bootstrap confidence intervals, ROC AUC and TPR at a fixed FPR (one attack, or several
judged together against a max-statistic permutation null), the beta-binomial null of shares flagged against one
calibrated threshold, Frechet distance between Gaussians, maximum mean discrepancy (all seeded where random)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.metrics import roc_auc_score

__all__ = ["auc_rows", "auc_with_ci", "binomial_ci", "bootstrap_ci", "exceedance_null_quantile", "exceedance_p_value",
           "exceedance_share_ci", "excess_rate_p_value", "frechet_distance", "gaussian_frechet",
           "joint_bootstrap_aucs", "max_attack_null", "median_bandwidth", "mmd_permutation_p", "mmd_rbf",
           "permutation_p", "tpr_at_fpr", "tpr_at_fpr_rows"]


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


def excess_rate_p_value(k: int, n: int, k_reference: int, n_reference: int) -> float:
    """One-sided p-value that ``k`` of ``n`` exceeds ``k_reference`` of ``n_reference`` as a rate: Fisher's exact
    test (the hypergeometric tail given all hits). It is the permutation test of the two rates, exact whenever the
    ``n + n_reference`` cases are exchangeable, even when their hits share one threshold and one gallery."""
    from scipy.stats import fisher_exact

    if not (0 <= k <= n and 0 <= k_reference <= n_reference and n + n_reference > 0):
        raise ValueError(f"need counts within their totals, got {k}/{n} and {k_reference}/{n_reference}")
    table = [[k, n - k], [k_reference, n_reference - k_reference]]
    return float(fisher_exact(table, alternative="greater").pvalue)


# -- shares flagged against one calibrated threshold -----------------------------------------------------------------
# A check that flags each of n cases when it exceeds tau, the highest of m reference (holdout) similarities, flags
# every case against the same random tau: the flags are not independent. If the n cases were exchangeable with the m
# reference cases, the flagged count C would be beta-binomial(n, 1, m): the exceedance probability of a maximum of m
# draws is Beta(1, m), and given it the count is binomial.


def _exceedance_sf(c: np.ndarray | int, n: np.ndarray | int, m: int) -> np.ndarray:
    """``P(C >= c)`` for ``C ~ BetaBinomial(n, 1, m)``, elementwise: the chance that the ``c`` highest of ``n + m``
    exchangeable draws all lie among the ``n``, ``C(n, c) / C(n + m, c)`` (1 where ``c <= 0``, 0 where ``c > n``).
    Closed form, so it stays fast for large sets where summing the probability mass would not."""
    from scipy.special import gammaln

    cb, nb = np.broadcast_arrays(np.asarray(c, float), np.asarray(n, float))
    cc = np.clip(cb, 0, nb)
    log = gammaln(nb + 1) - gammaln(nb - cc + 1) + gammaln(nb + m - cc + 1) - gammaln(nb + m + 1)
    return np.asarray(np.where(cb <= 0, 1.0, np.where(cb > nb, 0.0, np.exp(log))))


def exceedance_p_value(k: int, n: int, n_reference: int) -> float:
    """One-sided p-value of ``k`` of ``n`` cases above the highest of ``n_reference`` reference similarities:
    ``P(C >= k)`` for ``C ~ BetaBinomial(n, 1, n_reference)``, the count that cases exchangeable with the reference
    cases give (exact, whatever the similarities' distribution)."""
    if n < 0 or n_reference < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n_reference >= 1, got k={k}, n={n}, n_reference={n_reference}")
    return float(_exceedance_sf(k, n, n_reference))


def exceedance_null_quantile(n: int, n_reference: int, level: float = 0.99) -> int:
    """The smallest count ``q`` that cases exchangeable with the reference exceed with probability at most
    ``1 - level``: ``P(C > q) <= 1 - level`` for ``C ~ BetaBinomial(n, 1, n_reference)``."""
    sf_next = _exceedance_sf(np.arange(1, n + 2), n, n_reference)  # P(C >= q + 1) for q = 0..n
    return int(np.argmax(sf_next <= 1 - level))


def _share_cdf(k: int, n: int, m: int, share: float) -> float:
    """``P(K <= k)`` when each of ``n`` cases is memorized (always flagged) with probability ``share`` and the others
    are exchangeable with the ``m`` reference cases: ``K = M + C``, ``M ~ Binomial(n, share)``,
    ``C | M ~ BetaBinomial(n - M, 1, m)``."""
    from scipy.stats import binom

    j = np.arange(k + 1)
    return float(np.sum(binom.pmf(j, n, share) * (1 - _exceedance_sf(k - j + 1, n - j, m))))


def exceedance_share_ci(k: int, n: int, n_reference: int, level: float = 0.95) -> tuple[float, float]:
    """Exact interval of the share of cases flagged beyond chance, from ``k`` of ``n`` flagged against the highest
    of ``n_reference`` reference similarities: each case is memorized (flagged for certain) with probability
    ``share``, otherwise exchangeable with the reference cases (flagged with the shared Beta(1, n_reference) chance).
    The test-inversion (Clopper-Pearson style) interval of ``share`` under that model, ``(1 - level) / 2`` on each
    side. Unlike a binomial interval around ``k / n`` it neither counts the chance flags as memorized nor treats
    them as independent, so a generator that memorized nothing has its upper bound above a given share no more often
    than the level allows; and it stays honest about small sets (0 of 5 flagged: up to 50%). The upper bound is 0
    where even a generator that memorized nothing would flag this few with probability below ``(1 - level) / 2``
    (no flag among many more cases than holdout cases)."""
    from scipy.optimize import brentq

    if n < 1 or n_reference < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, n >= 1 and n_reference >= 1, got k={k}, n={n}, "
                         f"n_reference={n_reference}")
    alpha = (1 - level) / 2

    def as_low(share: float) -> float:  # P(K <= k) - alpha: falls with the share, to -alpha at 1 when k < n
        return _share_cdf(k, n, n_reference, share) - alpha

    def as_high(share: float) -> float:  # P(K >= k) - alpha: rises with the share, to 1 - alpha at 1 when k > 0
        return 1 - _share_cdf(k - 1, n, n_reference, share) - alpha

    hi = 1.0 if k == n else 0.0 if as_low(0.0) <= 0 else float(brentq(as_low, 0.0, 1.0, xtol=1e-10))
    lo = 0.0 if k == 0 or as_high(0.0) >= 0 else float(brentq(as_high, 0.0, 1.0, xtol=1e-10))
    return lo, hi


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
    """Highest true-positive rate among thresholds whose false-positive rate is at most ``fpr`` (every threshold:
    ``roc_curve`` by default drops the points on straight stretches of the curve, among them that maximum)."""
    return float(tpr_at_fpr_rows(np.asarray(members, float), np.asarray(others, float), fpr))


# -- several attacks judged together ---------------------------------------------------------------------------------
# ``scores`` is (attacks, cases), the first ``n_members`` columns members, higher = "member". Picking the strongest
# attack after the fact inflates its AUC; the null of the max over attacks, from relabelling members at random with
# the same relabelling for every attack, accounts for that (and for the attacks' dependence).

_CHUNK_CELLS = 4_000_000  # resampled (replicate, case) cells held at once per attack


def auc_rows(scores: np.ndarray, n_members: int) -> np.ndarray:
    """ROC AUC of every row of ``scores`` (``(..., cases)``): the Mann-Whitney statistic over mid-ranks, so ties
    count half, as in ``roc_auc_score``."""
    from scipy.stats import rankdata

    scores = np.asarray(scores, float)
    n_others = scores.shape[-1] - n_members
    ranks = rankdata(scores, axis=-1)
    return np.asarray((ranks[..., :n_members].sum(-1) - n_members * (n_members + 1) / 2) / (n_members * n_others))


def tpr_at_fpr_rows(members: np.ndarray, others: np.ndarray, fpr: float) -> np.ndarray:
    """``tpr_at_fpr`` of every row (``members`` ``(..., n1)``, ``others`` ``(..., n0)``). At most
    ``c = floor(fpr * n0)`` false positives are allowed, so the threshold lies just above the ``(c + 1)``-th highest
    non-member score and the TPR is the share of members strictly above it."""
    members, others = np.asarray(members, float), np.asarray(others, float)
    n0 = others.shape[-1]
    c = int(np.floor(fpr * n0 + 1e-9))
    if c >= n0:
        return np.ones(members.shape[:-1])
    cut = -np.partition(-others, c, axis=-1)[..., c]
    return np.asarray((members > cut[..., None]).mean(-1))


def joint_bootstrap_aucs(scores: np.ndarray, n_members: int, *, seed: int, n_boot: int = 1000) -> np.ndarray:
    """``(n_boot, attacks)`` AUCs of stratified bootstrap replicates: members and non-members resampled with
    replacement, the same cases for every attack, so a replicate's max over attacks is the max that a resampled
    cohort gives (percentiles of it bound the strongest attack's AUC with its selection included)."""
    scores = np.asarray(scores, float)
    n = scores.shape[1]
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot, len(scores)))
    step = max(1, _CHUNK_CELLS // n)
    for i in range(0, n_boot, step):  # replicates drawn chunk by chunk: memory bounded for large cohorts
        b = min(step, n_boot - i)
        idx = np.concatenate([rng.integers(0, n_members, (b, n_members)),
                              n_members + rng.integers(0, n - n_members, (b, n - n_members))], axis=1)
        for a, row in enumerate(scores):
            out[i:i + b, a] = auc_rows(row[idx], n_members)
    return out


def max_attack_null(scores: np.ndarray, n_members: int, *, seed: int, n_perm: int = 1000,
                    fpr: float) -> tuple[np.ndarray, np.ndarray]:
    """Permutation nulls ``(n_perm,)`` of the max over attacks of the AUC and of the TPR at ``fpr``: member labels
    relabelled at random among all cases, the same relabelling for every attack."""
    from scipy.stats import rankdata

    scores = np.asarray(scores, float)
    n = scores.shape[1]
    n_others = n - n_members
    rng = np.random.default_rng(seed)
    ranks = rankdata(scores, axis=1)
    auc = np.full(n_perm, -np.inf)
    tpr = np.full(n_perm, -np.inf)
    step = max(1, _CHUNK_CELLS // n)
    for i in range(0, n_perm, step):  # relabellings drawn chunk by chunk: memory bounded for large cohorts
        order = np.argsort(rng.random((min(step, n_perm - i), n)), axis=1)  # first n_members: the "members"
        members, others = order[:, :n_members], order[:, n_members:]
        for a in range(len(scores)):
            rank_sum = ranks[a][members].sum(axis=1)
            auc[i:i + len(order)] = np.maximum(auc[i:i + len(order)], (rank_sum - n_members * (n_members + 1) / 2)
                                               / (n_members * n_others))
            tpr[i:i + len(order)] = np.maximum(tpr[i:i + len(order)],
                                               tpr_at_fpr_rows(scores[a][members], scores[a][others], fpr))
    return auc, tpr


def permutation_p(observed: float, null: np.ndarray) -> float:
    """``(1 + #{null >= observed}) / (1 + len(null))``: a valid p-value whatever the number of draws (ties, up to
    rounding, count against the observed value)."""
    null = np.asarray(null, float)
    return float((1 + np.sum(null >= observed - 1e-12)) / (1 + len(null)))


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
