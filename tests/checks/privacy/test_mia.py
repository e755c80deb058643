"""The calibrated GAN-Leaks attacks' parts: the cross-fitted reference halves and the calibrated score."""

from __future__ import annotations

import numpy as np
import pytest

from synthrelease.checks.privacy.mia import calibrated_scores, judge_attacks, reference_halves
from synthrelease.checks.stats import auc_rows


@pytest.mark.parametrize(("n_members", "n_holdout"), [(40, 30), (25, 31), (7, 4)])
def test_reference_halves_never_reference_a_holdout_patient_to_itself(n_members: int, n_holdout: int) -> None:
    halves, reference = reference_halves(n_members, n_holdout, seed=3)
    assert sorted(halves[0] + halves[1]) == list(range(n_holdout))  # a partition of the holdout
    assert abs(len(halves[0]) - len(halves[1])) <= 1
    assert reference.shape == (n_members + n_holdout,) and set(np.unique(reference)) <= {0, 1}
    for h, half in enumerate(halves):
        for i in half:  # the holdout patient's reference is the other half, never its own
            assert reference[n_members + i] == 1 - h
    again = reference_halves(n_members, n_holdout, seed=3)
    assert again[0] == halves and np.array_equal(again[1], reference)


def test_members_are_referenced_with_the_odds_of_the_holdout() -> None:
    """With an odd holdout, a holdout patient in the larger half is referenced to the smaller one: members must be
    too, as often, or the reference's size alone would tell members from non-members."""
    halves, reference = reference_halves(20_000, 31, seed=0)
    small = 0 if len(halves[0]) < len(halves[1]) else 1
    holdout_share = float(np.mean(reference[20_000:] == small))
    assert holdout_share == pytest.approx(16 / 31)
    assert float(np.mean(reference[:20_000] == small)) == pytest.approx(holdout_share, abs=0.015)


def test_reference_halves_need_two_holdout_patients() -> None:
    with pytest.raises(ValueError, match="cannot be split"):
        reference_halves(10, 1, seed=0)


def test_calibration_removes_the_typicality_that_hides_members() -> None:
    """Each case has a typicality (how close it lies to any patient) far larger than the small pull of membership.
    The raw similarity to the synthetic set ranks members barely above chance; subtracting the similarity to the
    reference half (which carries the same typicality and no membership) finds them. A calibration that subtracted
    the wrong half's column, or none, would not."""
    rng = np.random.default_rng(5)
    n_members, n_holdout = 60, 60
    _, reference = reference_halves(n_members, n_holdout, seed=1)
    n = n_members + n_holdout
    typical = rng.normal(0.0, 1.0, n)
    member = np.arange(n) < n_members
    to_synthetic = typical + 0.4 * member + rng.normal(0.0, 0.1, n)
    to_halves = typical[:, None] + rng.normal(0.0, 0.1, (n, 2))
    raw, cal = auc_rows(np.stack([to_synthetic, calibrated_scores(to_synthetic, to_halves, reference)]), n_members)
    assert raw < 0.7 and cal > 0.95
    assert np.array_equal(calibrated_scores(to_synthetic, to_halves, reference),
                          to_synthetic - to_halves[np.arange(n), reference])


def test_calibrated_attacks_on_exchangeable_cases_are_not_called_a_leak() -> None:
    """Members and non-members drawn alike: the calibrated scores' max-over-attacks p-value keeps its level. Each
    holdout patient's own half contains itself; calibrating against it would make every holdout patient look
    unlike the synthetic set and call the release a leak every time."""
    rng = np.random.default_rng(9)
    hits = 0
    for _ in range(100):
        n = 80
        typical = rng.normal(0.0, 1.0, n)
        _, reference = reference_halves(40, 40, seed=int(rng.integers(2**31)))
        to_synthetic = typical + rng.normal(0.0, 0.3, n)
        to_halves = typical[:, None] + rng.normal(0.0, 0.3, (n, 2))
        # a holdout patient's own half holds the patient itself: its best similarity there is the highest of all
        to_halves[np.arange(40, n), 1 - reference[40:]] = 5.0
        scores = {"raw": to_synthetic, "calibrated": calibrated_scores(to_synthetic, to_halves, reference)}
        j = judge_attacks(scores, 40, boot_seed=0, perm_seed=int(rng.integers(2**31)), n_boot=10, n_perm=200)
        hits += j["max_auc_p_value"] < 0.05
    assert hits <= 12  # 5% of 100, with room for the binomial spread (P(X > 12) < 0.002)
