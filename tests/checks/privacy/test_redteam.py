"""The red-team kit: its transforms do what they say, and the privacy checks find every copy it hides.

Unit tests run on 32^3 phantom CTs (7.5 mm voxels: the whole head in view, as in the demo). The detection tests
audit sets of unseen patients with copies hidden among them against 24 training and 20 holdout patients; they read
the per-copy rule's ``n_copies`` metrics and ``evidence["copies"]`` of ``privacy.memorization``,
``privacy.mask_memorization`` and ``privacy.tumour_memorization``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from synthrelease.checks import AuditContext, CheckResult, Direction, Metric, Status, select_checks
from synthrelease.checks.privacy.redteam import (
    AXES,
    COPY_CHECKS,
    HOSTED_CLASSES,
    RED_TEAM_CLASSES,
    HiddenCopy,
    blank,
    blur_noise,
    combined,
    detect,
    elastic,
    flip,
    half_mix,
    hide_copies,
    rotate,
    shift,
    tumour_transplant,
    zoom,
)
from synthrelease.checks.rois import tumour_mask
from synthrelease.data.case import Case
from synthrelease.data.cohort import Cohort
from synthrelease.data.phantoms import make_ct_phantom
from synthrelease.data.preprocess import PreprocessConfig, preprocess_case

SHAPE = 32
N_TRAIN, N_HOLDOUT, N_UNSEEN, N_HOSTS = 24, 20, 20, 4
# in the default run: copies the registered search finds, one of each kind and each far outside the old dense
# envelope (a mirror off the left-right axis, a shift of 15% of the field of view, a 15 degree turn, a shrunken copy
# (found in the case's own frame), half of a training patient joined to an unseen one, a tumour moved into another
# body)
FAST_CLASSES = ("flip_si", "shift_15pct", "rotate_15", "zoom_0.9", "half_mix", "tumour_transplant")
# classes the per-copy rules do not yet find at 32^3 (their slow tests are expected failures, an unexpected pass is
# reported); every class is found on this cohort now (the 3-voxel warp by its tumour's shape only)
NOT_YET_FOUND: frozenset[str] = frozenset()
N_FAST_UNSEEN = 6


def _same(a: Case, b: Case) -> bool:
    return np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    """32^3 phantom CTs over the default 240 mm field of view (7.5 mm voxels), preprocessed as a workspace is."""
    cfg = PreprocessConfig.for_modality("ct", spacing=(240.0 / SHAPE,) * 3, shape=(SHAPE,) * 3)
    n = N_TRAIN + N_HOLDOUT + N_UNSEEN + N_HOSTS
    return [preprocess_case(make_ct_phantom(i, shape=SHAPE, seed=0), cfg)[0] for i in range(n)]


@pytest.fixture(scope="module")
def central(cases: list[Case]) -> Case:
    """The phantom among the first twelve with the largest tumour lying at least 6 voxels inside the grid."""
    def inside(c: Case) -> bool:
        idx = np.argwhere(tumour_mask(c.labels, c.schema))
        return bool(len(idx)) and int(idx.min()) >= 6 and int((SHAPE - 1 - idx.max(axis=0)).min()) >= 6

    fits = [c for c in cases[:12] if inside(c)]
    assert fits, "no phantom with a central tumour"
    return max(fits, key=lambda c: int(tumour_mask(c.labels, c.schema).sum()))


def _tumour(c: Case) -> np.ndarray:
    return tumour_mask(c.labels, c.schema)


# -- transforms ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("axis", list(AXES))
def test_flip_twice_is_identity(central: Case, axis: str) -> None:
    once = flip(central, axis)
    assert not _same(once, central)
    assert _same(flip(once, axis), central)


@pytest.mark.parametrize(("axis", "voxels"), [("z", 3), ("y", -4), ("x", 4)])
def test_shift_moves_the_tumour_centroid_by_the_voxels(central: Case, axis: str, voxels: int) -> None:
    moved = shift(central, axis, voxels)
    delta = np.argwhere(_tumour(moved)).mean(axis=0) - np.argwhere(_tumour(central)).mean(axis=0)
    expected = np.zeros(3)
    expected[AXES[axis]] = voxels
    np.testing.assert_allclose(delta, expected, atol=1e-9)
    assert _tumour(moved).sum() == _tumour(central).sum()


def test_a_whole_voxel_shift_copies_values_exactly_and_lets_air_in(central: Case) -> None:
    moved = shift(central, "x", 4)
    np.testing.assert_array_equal(moved.image[..., 4:], central.image[..., :-4])
    np.testing.assert_array_equal(moved.labels[..., 4:], central.labels[..., :-4])
    assert np.all(moved.image[..., :4] == central.image.min()) and not moved.labels[..., :4].any()


@pytest.mark.parametrize("factor", [0.85, 0.9, 1.1, 1.15])
def test_zoom_scales_the_tumour_volume_by_the_cube_of_the_factor(central: Case, factor: float) -> None:
    ratio = _tumour(zoom(central, factor)).sum() / _tumour(central).sum()
    assert ratio == pytest.approx(factor**3, rel=0.15)


def test_a_quarter_turn_is_the_array_rotated(central: Case) -> None:
    turned = rotate(central, "z", 90.0)
    np.testing.assert_array_equal(turned.labels, np.rot90(central.labels, 1, axes=(1, 2)))
    np.testing.assert_allclose(turned.image, np.rot90(central.image, 1, axes=(2, 3)), atol=1e-5)


def test_a_small_rotation_keeps_the_tumour_near_its_place(central: Case) -> None:
    turned = rotate(central, "y", 15.0)
    assert not _same(turned, central)
    assert _tumour(turned).sum() == pytest.approx(_tumour(central).sum(), rel=0.2)


def test_elastic_is_seeded_and_bounded(central: Case) -> None:
    a, b, c = elastic(central, 3.0, seed=1), elastic(central, 3.0, seed=1), elastic(central, 3.0, seed=2)
    assert _same(a, b) and not _same(a, c) and not _same(a, central)
    assert _same(elastic(central, 0.0, seed=1), central)
    # no voxel moves further than the magnitude: the tumour's centroid stays within it
    drift = np.argwhere(_tumour(a)).mean(axis=0) - np.argwhere(_tumour(central)).mean(axis=0)
    assert float(np.linalg.norm(drift)) <= 3.0


def test_blur_noise_is_seeded_keeps_labels_and_range(central: Case) -> None:
    a, b = blur_noise(central, 1.0, 0.1, seed=3), blur_noise(central, 1.0, 0.1, seed=3)
    assert _same(a, b) and not np.array_equal(a.image, central.image)
    np.testing.assert_array_equal(a.labels, central.labels)
    assert a.image.min() >= central.image.min() and a.image.max() <= central.image.max()


@pytest.mark.parametrize(("region", "where"), [("superior", (slice(24, 32),)), ("anterior", (slice(None), slice(0, 8))),
                                               ("right", (..., slice(0, 8)))])
def test_blank_sets_a_quarter_to_air(central: Case, region: str, where: tuple[Any, ...]) -> None:
    out = blank(central, 0.25, region)
    assert np.all(out.image[0][where] == central.image.min()) and not out.labels[where].any()
    rest = np.ones(central.shape, dtype=bool)
    rest[where] = False
    np.testing.assert_array_equal(out.labels[rest], central.labels[rest])
    np.testing.assert_array_equal(out.image[0][rest], central.image[0][rest])


@pytest.mark.parametrize("axis", list(AXES))
def test_half_mix_takes_each_half_from_its_source(cases: list[Case], axis: str) -> None:
    a, b = cases[0], cases[1]
    out = half_mix(a, b, axis)
    ax = AXES[axis]
    low = [slice(None)] * 3
    high = [slice(None)] * 3
    low[ax], high[ax] = slice(0, SHAPE // 2), slice(SHAPE // 2, SHAPE)
    for half, source in ((tuple(low), a), (tuple(high), b)):
        np.testing.assert_array_equal(out.labels[half], source.labels[half])
        np.testing.assert_array_equal(out.image[(slice(None), *half)], source.image[(slice(None), *half)])


def test_tumour_transplant_in_place_carries_the_donors_tumour(central: Case, cases: list[Case]) -> None:
    host = next(c for c in cases[12:] if _tumour(c).any() and c is not central)
    out = tumour_transplant(central, host, at="donor")
    donor_t = _tumour(central)
    np.testing.assert_array_equal(_tumour(out), donor_t)  # the host's own tumour is gone from the label map
    np.testing.assert_array_equal(out.image[:, donor_t], central.image[:, donor_t])


def test_tumour_transplant_at_the_hosts_tumour_moves_it_there(central: Case, cases: list[Case]) -> None:
    host = next(c for c in cases[12:] if _tumour(c).sum() > 40 and c is not central)
    out = tumour_transplant(central, host, at="host", margin=2)
    donor_t, host_t = _tumour(central), _tumour(host)
    offset = np.round(np.argwhere(host_t).mean(axis=0) - np.argwhere(donor_t).mean(axis=0)).astype(int)
    src = np.argwhere(donor_t)
    dst = src + offset
    keep = np.all((dst >= 0) & (dst < SHAPE), axis=1)
    src, dst = src[keep], dst[keep]
    assert len(src) > 0.9 * donor_t.sum()
    expected = np.zeros_like(donor_t)
    expected[tuple(dst.T)] = True
    np.testing.assert_array_equal(_tumour(out), expected)
    np.testing.assert_array_equal(out.image[(slice(None), *dst.T)], central.image[(slice(None), *src.T)])


def test_combined_is_the_two_in_a_row(central: Case) -> None:
    out = combined(central, lambda c: flip(c, "y"), lambda c: shift(c, "z", 3))
    assert _same(out, shift(flip(central, "y"), "z", 3))


@pytest.mark.parametrize("name", list(RED_TEAM_CLASSES))
def test_every_class_makes_a_seeded_copy_that_differs_from_its_source(cases: list[Case], name: str) -> None:
    source, host = cases[1], cases[2]
    a = RED_TEAM_CLASSES[name](source, host, np.random.default_rng(5))
    b = RED_TEAM_CLASSES[name](source, host, np.random.default_rng(5))
    assert _same(a.case, b.case) and a.params == b.params
    assert not _same(a.case, source) and a.case.shape == source.shape
    a.case.validate()


# -- hiding copies -------------------------------------------------------------------------------------------------
def test_hide_copies_is_seeded_and_ids_reveal_nothing(cases: list[Case]) -> None:
    unseen, train, hosts = cases[30:40], cases[:8], cases[40:44]
    classes = list(RED_TEAM_CLASSES)
    a, truth_a = hide_copies(unseen, train, classes, len(classes), seed=4, hosts=hosts)
    b, truth_b = hide_copies(unseen, train, classes, len(classes), seed=4, hosts=hosts)
    _, truth_c = hide_copies(unseen, train, classes, len(classes), seed=5, hosts=hosts)
    assert truth_a == truth_b and all(_same(x, y) for x, y in zip(a, b, strict=True))
    assert [t.synthetic for t in truth_a] != [t.synthetic for t in truth_c]
    assert [x.case_id for x in a] == [f"syn{i:04d}" for i in range(len(unseen) + len(classes))]
    assert len({x.geometry for x in a}) == 1 and all(x.meta == {} for x in a)
    assert sorted(t.red_team_class for t in truth_a) == sorted(classes)
    train_ids, host_ids = {t.case_id for t in train}, {h.case_id for h in hosts}
    for t in truth_a:
        assert t.train_id in train_ids
        assert (t.host_id in host_ids) if t.red_team_class in HOSTED_CLASSES else t.host_id is None
    # the plain cases are the unseen patients, unchanged
    copies = {t.synthetic for t in truth_a}
    plain = [x for x in a if x.case_id not in copies]
    assert sorted(x.image.tobytes() for x in plain) == sorted(u.image.tobytes() for u in unseen)


def test_without_copies_the_set_is_the_unseen_patients_renamed(cases: list[Case]) -> None:
    out, truth = hide_copies(cases[30:36], cases[:8], [], 0, seed=0)
    assert truth == [] and len(out) == 6
    assert sorted(x.image.tobytes() for x in out) == sorted(u.image.tobytes() for u in cases[30:36])


def test_detect_needs_the_right_training_patient() -> None:
    truth = [HiddenCopy("syn0001", "flip_si", "phantom003", None), HiddenCopy("syn0002", "zoom_0.9", "phantom004",
                                                                             None)]
    copies = [{"synthetic": "syn0001", "nearest_train": "phantom003", "score": 0.9, "region": "whole"},
              {"synthetic": "syn0002", "nearest_train": "phantom009", "score": 0.8, "region": "whole"}]
    result = CheckResult("privacy.memorization", Status.OK, {"n_copies": Metric(2, Direction.LOWER)},
                         {"copies": copies})
    found = detect({"privacy.memorization": result}, truth)
    assert [d.detected for d in found] == [True, False]
    assert found[0].checks == ("privacy.memorization",) and found[0].score == 0.9


# -- detection (needs the per-copy rule: n_copies and evidence["copies"]) --------------------------------------------
def _audit(ctx: AuditContext) -> dict[str, CheckResult]:
    return {c.name: c.run(ctx) for c in select_checks(list(COPY_CHECKS))}


def _cohorts(cases: list[Case]) -> tuple[Cohort, Cohort, list[Case], list[Case]]:
    train = Cohort.from_cases(cases[:N_TRAIN], name="train")
    holdout = Cohort.from_cases(cases[N_TRAIN:N_TRAIN + N_HOLDOUT], name="holdout")
    unseen = cases[N_TRAIN + N_HOLDOUT:N_TRAIN + N_HOLDOUT + N_UNSEEN]
    hosts = cases[N_TRAIN + N_HOLDOUT + N_UNSEEN:]
    return train, holdout, unseen, hosts


def _hidden_set(cases: list[Case], classes: tuple[str, ...], n_unseen: int,
                seed: int) -> tuple[Cohort, Cohort, Cohort, list[HiddenCopy]]:
    train, holdout, unseen, hosts = _cohorts(cases)
    syn, truth = hide_copies(unseen[:n_unseen], list(train), classes, len(classes), seed, hosts=hosts)
    return train, holdout, Cohort.from_cases(syn, name="synthetic"), truth


def _misses(results: dict[str, CheckResult], truth: list[HiddenCopy]) -> list[str]:
    return [f"{d.copy.red_team_class} ({d.copy.synthetic} of {d.copy.train_id}: listed by {list(d.checks) or 'none'})"
            for d in detect(results, truth) if not d.detected]


def _false_copies(results: dict[str, CheckResult], truth: list[HiddenCopy]) -> list[str]:
    copies = {t.synthetic for t in truth}
    return [f"{name}: {e['synthetic']}" for name, r in results.items() for e in r.evidence.get("copies", [])
            if e["synthetic"] not in copies]


@pytest.fixture(scope="module")
def fast_audit(cases: list[Case], tmp_path_factory: pytest.TempPathFactory, cache_dir: Path,
               make_context: Callable[..., AuditContext]) -> tuple[dict[str, CheckResult], list[HiddenCopy]]:
    train, holdout, syn, truth = _hidden_set(cases, FAST_CLASSES, N_FAST_UNSEEN, seed=0)
    ctx = make_context(train, holdout, syn, tmp_path_factory.mktemp("redteam_fast"), cache_dir)
    return _audit(ctx), truth


def test_a_few_red_team_copies_are_caught(fast_audit: tuple[dict[str, CheckResult], list[HiddenCopy]]) -> None:
    results, truth = fast_audit
    assert all(r.status is Status.OK for r in results.values()), {n: r.reason for n, r in results.items()}
    assert not _misses(results, truth)
    assert sum(int(r.metrics["n_copies"].value) for r in results.values()) >= len(truth)


def test_no_unseen_patient_beside_the_copies_is_called_a_copy(
        fast_audit: tuple[dict[str, CheckResult], list[HiddenCopy]]) -> None:
    results, truth = fast_audit
    assert not _false_copies(results, truth)


def test_an_all_unseen_set_has_no_copies(cases: list[Case], tmp_path: Path, cache_dir: Path,
                                         make_context: Callable[..., AuditContext]) -> None:
    train, holdout, syn, _ = _hidden_set(cases, (), N_UNSEEN, seed=0)
    results = _audit(make_context(train, holdout, syn, tmp_path, cache_dir))
    for name, r in results.items():
        assert r.status is Status.OK, r.reason
        assert r.metrics["n_copies"].value == 0, (name, r.evidence.get("copies"))


@pytest.fixture(scope="module")
def every_class_audit(cases: list[Case], tmp_path_factory: pytest.TempPathFactory, cache_dir: Path,
                      make_context: Callable[..., AuditContext]) -> tuple[dict[str, CheckResult], list[HiddenCopy]]:
    """One copy of every class hidden among the unseen patients (one audit for all classes)."""
    train, holdout, syn, truth = _hidden_set(cases, tuple(RED_TEAM_CLASSES), N_UNSEEN, seed=1)
    return _audit(make_context(train, holdout, syn, tmp_path_factory.mktemp("redteam_all"), cache_dir)), truth


@pytest.mark.slow
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xfail(reason="not yet found by the per-copy rule"))
                                  if n in NOT_YET_FOUND else n for n in RED_TEAM_CLASSES])
def test_every_red_team_class_is_caught(every_class_audit: tuple[dict[str, CheckResult], list[HiddenCopy]],
                                        name: str) -> None:
    results, truth = every_class_audit
    assert not _misses(results, [t for t in truth if t.red_team_class == name])


@pytest.mark.slow
def test_no_unseen_patient_among_every_class_is_called_a_copy(
        every_class_audit: tuple[dict[str, CheckResult], list[HiddenCopy]]) -> None:
    results, truth = every_class_audit
    assert not _false_copies(results, truth)
