"""The shared statistics match their nulls: simulated private generators (synthetic cases exchangeable with unseen
patients) fail the privacy rules no more often than the rules' levels allow, where the rules they replace did."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from scipy.stats import betabinom, binom
from sklearn.metrics import roc_auc_score, roc_curve

from synthrelease.checks.privacy.dcr import closer_to_train, subsample_bootstrap
from synthrelease.checks.privacy.mia import judge_attacks
from synthrelease.checks.stats import (
    auc_rows,
    binomial_ci,
    exceedance_null_quantile,
    exceedance_p_value,
    exceedance_share_ci,
    excess_rate_p_value,
    joint_bootstrap_aucs,
    max_attack_null,
    permutation_p,
    tpr_at_fpr,
    tpr_at_fpr_rows,
)

N_SETS = 2000  # simulated audits per configuration
ALPHA = 0.01  # the policies' p-value threshold
# the Monte Carlo slack of a rate near ALPHA over N_SETS draws (about 4 standard errors)
SLACK = 4 * np.sqrt(ALPHA * (1 - ALPHA) / N_SETS)


def _flag_counts(rng: np.random.Generator, n_holdout: int, n_synthetic: int, n_sets: int = N_SETS) -> np.ndarray:
    """Flagged counts of simulated private generators: holdout and synthetic similarities from one distribution,
    each set flagging the synthetic cases above its own tau (the highest holdout similarity)."""
    tau = rng.standard_normal((n_sets, n_holdout)).max(axis=1, keepdims=True)
    return np.asarray((rng.standard_normal((n_sets, n_synthetic)) > tau).sum(axis=1))


# -- the beta-binomial null of flagged shares ----------------------------------------------------------------------

@pytest.mark.parametrize("n, m", [(40, 20), (120, 60), (7, 3)])
def test_exceedance_p_value_is_the_beta_binomial_tail(n: int, m: int) -> None:
    exact = Fraction(1)  # P(C >= k): the k highest of n + m exchangeable draws all among the n
    for k in range(n + 1):
        assert exceedance_p_value(k, n, m) == pytest.approx(float(exact), rel=1e-10)
        if exact > Fraction(1, 1000):  # scipy's own tail is accurate only away from 0
            assert exceedance_p_value(k, n, m) == pytest.approx(betabinom.sf(k - 1, n, 1, m), rel=1e-6)
        exact *= Fraction(n - k, n + m - k)
    # closed forms: nothing flagged is certain to be reached; a flag at all has chance n / (n + m)
    assert exceedance_p_value(0, n, m) == 1.0
    assert exceedance_p_value(1, n, m) == pytest.approx(n / (n + m))
    assert exceedance_null_quantile(n, m, 0.99) == int(betabinom.ppf(0.99, n, 1, m))


def test_exceedance_p_value_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError):
        exceedance_p_value(5, 4, 20)
    with pytest.raises(ValueError):
        exceedance_share_ci(1, 4, 0)


@pytest.mark.parametrize("n_holdout, n_synthetic", [(20, 40), (20, 120), (60, 40), (60, 120)])
def test_flag_rules_fail_private_generators_at_their_level(n_holdout: int, n_synthetic: int) -> None:
    """The p-value rule fails at most ALPHA of private sets; the rules it replaces (share <= 1 / (m + 1) + 0.05,
    and a binomial test that treats flags as independent) fail more, as they ignore the shared random tau."""
    k = _flag_counts(np.random.default_rng(n_holdout * 1000 + n_synthetic), n_holdout, n_synthetic)
    p = np.array([exceedance_p_value(int(x), n_synthetic, n_holdout) for x in range(n_synthetic + 1)])[k]
    new = float(np.mean(p < ALPHA))
    old_margin = float(np.mean(k / n_synthetic > 1 / (n_holdout + 1) + 0.05))
    old_binomial = float(np.mean(binom.sf(k - 1, n_synthetic, 1 / (n_holdout + 1)) < ALPHA))
    assert new <= ALPHA + SLACK
    assert old_margin > new and old_binomial > new
    if (n_holdout, n_synthetic) == (20, 40):  # the case: the old rule failed about 19% of private sets
        assert old_margin > 0.12


def test_flagged_share_bound_fails_private_sets_less_than_clopper_pearson() -> None:
    """The evidence rule (upper bound <= 25%) at the default policy's minimum (20 unseen patients, 40 samples):
    the share flagged beyond chance counts chance flags as chance, so it fails fewer private sets than a binomial
    bound on the flagged share, and at most the one-sided level beyond the rate that the random tau forces."""
    n, m = 40, 20
    k = _flag_counts(np.random.default_rng(7), m, n)
    ours = np.array([exceedance_share_ci(x, n, m)[1] for x in range(n + 1)])[k]
    clopper = np.array([binomial_ci(x, n)[1] for x in range(n + 1)])[k]
    assert np.all(ours <= clopper + 1e-12)
    assert float(np.mean(ours > 0.25)) < float(np.mean(clopper > 0.25))
    assert float(np.mean(ours > 0.25)) <= 0.09


@pytest.mark.parametrize("share", [0.05, 0.3])
def test_flagged_share_interval_covers_the_memorized_share(share: float) -> None:
    """Sets where each case is a copy (always flagged) with probability ``share``: the 95% interval holds it."""
    n, m = 60, 30
    rng = np.random.default_rng(int(share * 100))
    chance = _flag_counts(rng, m, n, 1000)
    copies = rng.binomial(n - chance, share)  # copies among the cases that chance did not flag
    k = chance + copies
    bounds = np.array([exceedance_share_ci(x, n, m) for x in range(n + 1)])[k]
    assert np.mean(bounds[:, 1] >= share) >= 0.975 - 0.015
    assert np.mean(bounds[:, 0] <= share) >= 0.975 - 0.015
    assert np.all(bounds[:, 0] <= k / n + 1e-9) and np.all(k / n <= bounds[:, 1] + 1e-9)


def test_flagged_share_interval_extremes() -> None:
    assert exceedance_share_ci(0, 5, 20) == pytest.approx((0.0, 0.5))  # a small set proves little
    lo, hi = exceedance_share_ci(40, 40, 20)
    assert hi == 1.0 and lo > 0.9  # every case flagged: nearly all memorized


# -- ROC statistics --------------------------------------------------------------------------------------------------

def test_auc_rows_and_tpr_rows_match_sklearn_with_ties() -> None:
    rng = np.random.default_rng(0)
    scores = np.round(rng.standard_normal((5, 50)), 1)  # ties within and across the classes
    y = np.r_[np.ones(20), np.zeros(30)]
    np.testing.assert_allclose(auc_rows(scores, 20), [roc_auc_score(y, s) for s in scores])
    for fpr in (0.01, 1 / 30, 0.1, 0.5):
        expected = []
        for s in scores:
            f, t, _ = roc_curve(y, s, drop_intermediate=False)
            expected.append(t[f <= fpr + 1e-12].max())
        np.testing.assert_allclose(tpr_at_fpr_rows(scores[:, :20], scores[:, 20:], fpr), expected)
        assert [tpr_at_fpr(s[:20], s[20:], fpr) for s in scores] == pytest.approx(expected)


def test_tpr_at_fpr_keeps_points_on_straight_stretches() -> None:
    """Members tied with non-members at 0.7, 0.6 and 0.5 put (0.3, 0.25) on a diagonal stretch of the ROC curve;
    sklearn's default drops it, which would report TPR 0 at FPR 0.3."""
    members, others = np.array([0.7, 0.6, 0.5, 0.1]), np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0, 0, 0, 0, 0])
    assert tpr_at_fpr(members, others, 0.3) == pytest.approx(0.25)


# -- several attacks judged together ---------------------------------------------------------------------------------

def _null_attacks(rng: np.random.Generator, n: int, attacks: int = 4) -> np.ndarray:
    """Scores of correlated attacks on cases whose membership they cannot see."""
    common = rng.standard_normal(n)
    return np.sqrt(0.5) * common + np.sqrt(0.5) * rng.standard_normal((attacks, n))


def test_max_over_attacks_permutation_p_holds_its_level_where_the_best_attack_alone_does_not() -> None:
    rng = np.random.default_rng(3)
    n_members, n = 30, 60
    joint, naive, tpr = [], [], []
    for i in range(300):
        scores = _null_attacks(rng, n)
        null_auc, null_tpr = max_attack_null(scores, n_members, seed=i, n_perm=200, fpr=1 / 30)
        aucs = auc_rows(scores, n_members)
        joint.append(permutation_p(float(aucs.max()), null_auc))
        best = scores[[int(np.argmax(aucs))]]  # the strongest attack, judged as if chosen in advance
        naive.append(permutation_p(float(aucs.max()), max_attack_null(best, n_members, seed=i, n_perm=200,
                                                                      fpr=1 / 30)[0]))
        tpr.append(permutation_p(float(tpr_at_fpr_rows(scores[:, :n_members], scores[:, n_members:],
                                                        1 / 30).max()), null_tpr))
    joint_rate, naive_rate = float(np.mean(np.array(joint) < 0.05)), float(np.mean(np.array(naive) < 0.05))
    assert joint_rate <= 0.05 + 0.04 and float(np.mean(np.array(tpr) < 0.05)) <= 0.05 + 0.04
    assert naive_rate > joint_rate + 0.03


def test_joint_bootstrap_bounds_the_max_not_one_attack() -> None:
    rng = np.random.default_rng(5)
    scores = _null_attacks(rng, 50)
    boots = joint_bootstrap_aucs(scores, 25, seed=0, n_boot=400)
    assert boots.shape == (400, 4)
    best = int(np.argmax(auc_rows(scores, 25)))
    assert np.quantile(boots.max(axis=1), 0.975) >= np.quantile(boots[:, best], 0.975)
    # each column is that attack's own bootstrap: centred near its AUC
    np.testing.assert_allclose(boots.mean(axis=0), auc_rows(scores, 25), atol=0.03)


def test_judge_attacks_catches_a_leak_and_reports_low_fprs_only_where_supported() -> None:
    rng = np.random.default_rng(11)
    scores = {"a": rng.standard_normal(60), "b": rng.standard_normal(60)}
    scores["b"][:20] += 3.0  # members stand out to attack b
    j = judge_attacks(scores, 20, boot_seed=0, perm_seed=1, n_boot=200, n_perm=500)
    assert j["strongest"] == "b" and j["max_auc"] > 0.9 and j["max_auc_p_value"] == pytest.approx(1 / 501)
    assert j["max_auc_ci"][1] >= j["max_auc"] - 0.05
    assert j["min_fpr"] == pytest.approx(1 / 40) and j["low_fpr"] == {}  # 40 non-members support neither 1% nor 0.1%
    assert j["tpr_at_min_fpr"] > 0.5 and j["tpr_at_min_fpr_p_value"] < 0.01
    many = judge_attacks({"a": rng.standard_normal(150)}, 40, boot_seed=0, perm_seed=1, n_boot=50, n_perm=50)
    assert set(many["low_fpr"]) == {"tpr_at_1pct_fpr"}  # 110 non-members: 1% yes, 0.1% no


# -- re-identification: two rates ------------------------------------------------------------------------------------

def test_excess_rate_p_value_holds_its_level_for_exchangeable_faces() -> None:
    """Synthetic and holdout probes exchangeable, all judged against one random gallery threshold."""
    rng = np.random.default_rng(2)
    ps = []
    for _ in range(N_SETS):
        threshold = rng.standard_normal(30).max()  # one shared acceptance threshold
        syn, hold = rng.standard_normal(40) > threshold, rng.standard_normal(25) > threshold
        ps.append(excess_rate_p_value(int(syn.sum()), 40, int(hold.sum()), 25))
    assert float(np.mean(np.array(ps) < ALPHA)) <= ALPHA + SLACK
    assert excess_rate_p_value(20, 40, 1, 25) < 1e-4  # half the synthetic faces matched against 1 in 25
    assert excess_rate_p_value(0, 40, 5, 25) == 1.0


# -- DCR: the interval includes the choice of subsamples -------------------------------------------------------------

def test_dcr_interval_covers_when_the_train_subsample_matters() -> None:
    """Real cases differ in how close every synthetic case comes to them (hubs), and train has three times the
    holdout's cases, so which 20 train cases the subsample holds moves p. Resampling the synthetic cases alone
    misses that; redrawing the subsamples per replicate covers the null's 0.5."""
    rng = np.random.default_rng(0)
    n_train, n_holdout, n_syn, size = 60, 20, 40, 20
    fixed, fresh = [], []
    for s in range(200):
        pairs = rng.standard_normal((n_syn, n_train + n_holdout)) + rng.standard_normal(n_train + n_holdout)
        closer = closer_to_train(pairs[:, :size].max(axis=1), pairs[:, n_train:].max(axis=1))
        lo, hi = np.quantile(closer[rng.integers(0, n_syn, (200, n_syn))].mean(axis=1), [0.025, 0.975])
        fixed.append(lo <= 0.5 <= hi)
        lo, hi = np.quantile(subsample_bootstrap(pairs, n_train, size, seed=s, n_boot=200), [0.025, 0.975])
        fresh.append(lo <= 0.5 <= hi)
    assert np.mean(fresh) >= 0.8 and np.mean(fresh) > np.mean(fixed) + 0.2


def test_dcr_bootstrap_draws_equal_size_subsamples_without_replacement() -> None:
    """Synthetic case i is a copy of train case i: with all 10 train cases drawn every time, every replicate
    finds every source (p = 1); drawing with replacement would miss some."""
    pairs = np.zeros((10, 20))
    pairs[np.arange(10), np.arange(10)] = 1.0
    assert np.all(subsample_bootstrap(pairs, 10, 10, seed=0, n_boot=50) == 1.0)
    half = subsample_bootstrap(pairs, 10, 5, seed=0, n_boot=400)  # half the sources drawn, the rest tie at 0.5
    assert abs(float(half.mean()) - 0.75) < 0.03
    with pytest.raises(ValueError):
        subsample_bootstrap(pairs, 10, 11, seed=0, n_boot=1)
