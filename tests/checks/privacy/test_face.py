"""Face re-identification core: depth maps of phantom faces, and matching them to the right patient."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

from synthrelease.checks.privacy.face import FaceMap, face_depth_map, face_similarity, gallery_threshold, rank1_rate
from synthrelease.data.case import Case, Geometry
from synthrelease.data.phantoms import make_phantom
from synthrelease.data.preprocess import PreprocessConfig, preprocess_case
from synthrelease.errors import InputError

FOV = {"CT": 240.0, "MR": 220.0}  # the phantoms' default fields of view


@cache
def _raw(modality: str, index: int, shape: int = 32) -> Case:
    """Phantom patient ``index`` as made (HU / MR units; MRI with its first channel, t1c, only)."""
    if modality == "MR":
        return make_phantom(modality, index, shape=shape, channels=("t1c",))
    return make_phantom(modality, index, shape=shape)


@cache
def _phantom(modality: str, index: int, shape: int = 32) -> tuple[Case, Case]:
    """Phantom patient ``index`` as made, and preprocessed to model range on its own grid."""
    raw = _raw(modality, index, shape)
    h = FOV[modality] / shape
    cfg = PreprocessConfig.for_modality(modality, spacing=(h, h, h), shape=(shape, shape, shape))
    return raw, preprocess_case(raw, cfg)[0]


@cache
def _cohort(modality: str, n_gallery: int = 12, n_other: int = 12) -> tuple[list[int], list[int]]:
    """Indices of the first patients whose face is in view: a gallery, then others."""
    found: list[int] = []
    for i in range(60):
        if isinstance(face_depth_map(_raw(modality, i)), FaceMap):  # cheap screen; the tests use preprocessed cases
            found.append(i)
        if len(found) == n_gallery + n_other:
            break
    assert len(found) == n_gallery + n_other
    return found[:n_gallery], found[n_gallery:]


def _landmark(raw: Case, name: str = "nose_tip") -> np.ndarray:
    return np.asarray(raw.meta["phantom"]["landmarks_mm"][name], dtype=float)


def _shift(image: np.ndarray, axis: int, step: int) -> np.ndarray:
    """``image`` moved by ``step`` voxels along ``axis``, the emptied slice filled with the image minimum."""
    out = np.roll(image, step, axis=axis)
    edge = [slice(None)] * image.ndim
    edge[axis] = slice(0, step) if step > 0 else slice(step, None)
    out[tuple(edge)] = image.min()
    return out


def _perturbed(case: Case, k: int, rng: np.random.Generator) -> Case:
    """The same patient, as a generator might give it back: moved by one voxel, intensities scaled by 5 %,
    noise of 2 % of the range, and every other time mirrored left-right."""
    img = _shift(case.image, axis=1 + k % 3, step=1 if k % 2 else -1)
    img = img * (1.05 if k % 2 else 0.95)
    img = img + rng.normal(0.0, 0.02 * float(np.ptp(img)), img.shape)
    if k % 2:
        img = img[..., ::-1]
    return case.with_(image=img.astype(np.float32))


# -- depth maps ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_nose_tip_is_found_at_the_phantom_landmark(modality: str) -> None:
    gallery, _ = _cohort(modality)
    for i in gallery[:8]:
        raw, case = _phantom(modality, i)
        face = face_depth_map(case)
        assert isinstance(face, FaceMap)
        err = np.abs(np.asarray(face.nose_tip_mm) - _landmark(raw)) / np.asarray(case.geometry.spacing)
        assert np.all(err <= 1.5), (i, err)  # voxels along x (left-right), y (depth), z (superior-inferior)
        assert face.depth.shape == (32, 32) and face.depth.dtype == np.float32
        assert 0.6 <= face.valid_fraction <= 1.0 and np.isclose(np.mean(np.isfinite(face.depth)), face.valid_fraction)
        centre = face.depth[15:17, 15:17]  # the nose tip, the reference of the depths, sits in the middle
        assert np.nanmax(np.abs(centre)) < 4.0 and np.nanmin(face.depth) > -5.0
        assert np.nanmedian(face.depth) > 15.0  # the rest of the face lies well behind the nose tip


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_depth_map_works_at_64_cubed_and_on_unprocessed_intensities(modality: str) -> None:
    i = _cohort(modality)[0][0]
    raw, case = _phantom(modality, i, shape=64)
    for version in (case, raw):  # model range, and HU / MR units: the threshold is scale-free
        face = face_depth_map(version)
        assert isinstance(face, FaceMap)
        err = np.abs(np.asarray(face.nose_tip_mm) - _landmark(raw)) / np.asarray(case.geometry.spacing)
        assert np.all(err <= 1.5), err
    coarse = face_depth_map(_phantom(modality, i)[1])
    other = face_depth_map(_phantom(modality, _cohort(modality)[0][1])[1])
    assert isinstance(coarse, FaceMap) and isinstance(other, FaceMap) and isinstance(face, FaceMap)
    same, different = face_similarity([face], [coarse, other])[0]
    assert same > different  # the same face at 64^3 and 32^3


def test_cut_off_faces_give_a_reason_and_faces_in_view_do_not() -> None:
    outcomes = {}
    for i in range(24):
        raw, case = _phantom("CT", i)
        gap = _landmark(raw)[1] - case.geometry.origin[1] + case.geometry.spacing[1] / 2  # nose tip to front edge, mm
        outcomes[i] = (gap, face_depth_map(case))
    cut = [o for gap, o in outcomes.values() if gap < 0]
    clear = [o for gap, o in outcomes.values() if gap > case.geometry.spacing[1]]
    assert cut and clear
    assert all(isinstance(o, str) and "face cut off" in o for o in cut)
    assert all(isinstance(o, FaceMap) for o in clear)


def test_volumes_without_a_face_give_a_reason() -> None:
    _, case = _phantom("CT", _cohort("CT")[0][0])
    air = np.full_like(case.image, -1.0)
    rng = np.random.default_rng(0)
    noise = (air + rng.normal(0, 0.05, air.shape)).astype(np.float32)
    for empty in (air, noise):
        reason = face_depth_map(case.with_(image=empty))
        assert isinstance(reason, str) and reason.startswith("no body found")
    front = case.image.copy()
    front[:, :, :16] = -1.0  # anterior half blanked: a flat cut, no nose
    assert isinstance(face_depth_map(case.with_(image=front)), str)
    g = case.geometry  # the anterior quarter cropped away: the head fills the front edge
    cropped = case.with_(image=case.image[:, :, 8:], labels=case.labels[:, 8:],
                         geometry=Geometry(g.spacing, (g.origin[0], g.origin[1] + 8 * g.spacing[1], g.origin[2])))
    reason = face_depth_map(cropped)
    assert isinstance(reason, str) and "face cut off" in reason
    ball = np.full_like(case.image, -1.0)  # a featureless ellipsoid head
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, 32)] * 3, indexing="ij")
    ball[0][(x / 0.6) ** 2 + (y / 0.7) ** 2 + (z / 0.8) ** 2 < 1] = 0.2
    reason = face_depth_map(case.with_(image=ball))
    assert isinstance(reason, str) and "nose" in reason


def test_orientation_and_determinism() -> None:
    _, case = _phantom("MR", _cohort("MR")[0][0])
    face = face_depth_map(case)
    assert isinstance(face, FaceMap)
    again = face_depth_map(case)
    assert isinstance(again, FaceMap) and np.array_equal(face.depth, again.depth, equal_nan=True)
    g, n = case.geometry, case.shape[1]
    # the same scan stored anterior-last (y axis reversed), and with the array axes permuted (y before z)
    flipped = case.with_(image=case.image[:, :, ::-1], labels=case.labels[:, ::-1], geometry=Geometry(
        g.spacing, (g.origin[0], g.origin[1] + (n - 1) * g.spacing[1], g.origin[2]), (1, 0, 0, 0, -1, 0, 0, 0, 1)))
    permuted = case.with_(image=case.image.transpose(0, 2, 1, 3), labels=case.labels.transpose(1, 0, 2),
                          geometry=Geometry(g.spacing, g.origin, (1, 0, 0, 0, 0, 1, 0, 1, 0)))
    for other in (flipped, permuted):
        moved = face_depth_map(other)
        assert isinstance(moved, FaceMap)
        np.testing.assert_allclose(moved.depth, face.depth, atol=1e-4)
        np.testing.assert_allclose(moved.nose_tip_mm, face.nose_tip_mm, atol=1e-3)
    small = face_depth_map(case, size=16, window_mm=(100.0, 80.0))
    assert isinstance(small, FaceMap) and small.depth.shape == (16, 16)
    with pytest.raises(InputError):
        face_depth_map(case, size=2)


# -- matching -----------------------------------------------------------------------------------------------------
def test_similarity_is_vectorised_mirror_shift_and_nan_robust() -> None:
    gallery, _ = _cohort("CT")
    maps = [face_depth_map(_phantom("CT", i)[1]) for i in gallery[:4]]
    assert all(isinstance(m, FaceMap) for m in maps)
    faces: list[FaceMap] = [m for m in maps if isinstance(m, FaceMap)]
    sim = face_similarity(faces, faces)
    assert sim.shape == (4, 4) and np.allclose(np.diag(sim), 1.0)
    assert np.all(sim[~np.eye(4, dtype=bool)] < 0.5)  # distinct faces differ by more than 1 mm RMS
    for i in range(4):
        for j in range(4):
            assert sim[i, j] == pytest.approx(face_similarity([faces[i]], [faces[j]])[0, 0])
    f = faces[0]
    mirrored = FaceMap(f.depth[:, ::-1].copy(), f.valid_fraction)
    shifted = FaceMap(np.roll(f.depth, 1, axis=0) + 7.0, f.valid_fraction)  # a pixel down and 7 mm deeper
    holey = f.depth.copy()
    holey[np.random.default_rng(0).random(holey.shape) < 0.3] = np.nan
    empty = FaceMap(np.full_like(f.depth, np.nan), 0.0)
    probes = [mirrored, shifted, FaceMap(holey, 0.7), empty]
    s = face_similarity(probes, faces)
    assert np.allclose(s[:3, 0], 1.0, atol=1e-6) and np.all(s[:3, 1:] < 0.5)
    assert np.all(s[3] == 0.0)
    assert face_similarity([], faces).shape == (0, 4)
    with pytest.raises(ValueError, match="size"):
        face_similarity([FaceMap(np.zeros((8, 8), np.float32), 1.0)], faces)


def test_gallery_threshold_and_rank1_rate() -> None:
    g = np.array([[1.0, 0.3, 0.2], [0.35, 1.0, 0.1], [0.2, 0.1, 1.0]])
    assert gallery_threshold(g) == 0.35  # the closest pair of distinct patients, not the diagonal
    with pytest.raises(ValueError):
        gallery_threshold(np.ones((1, 1)))
    sim = np.array([[0.9, 0.2, 0.1], [0.3, 0.35, 0.1], [0.1, 0.2, 0.5], [np.nan, np.nan, np.nan]])
    rate, idx, top = rank1_rate(sim, 0.35)
    assert rate == 0.5  # 0.9 and 0.5 exceed the threshold; 0.35 does not (strictly greater); NaN never matches
    assert idx[:3].tolist() == [0, 1, 2] and top[:3].tolist() == [0.9, 0.35, 0.5] and top[3] == -np.inf


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_perturbed_patients_are_reidentified_and_other_patients_are_not(modality: str) -> None:
    gallery_ids, other_ids = _cohort(modality)
    maps = [face_depth_map(_phantom(modality, i)[1]) for i in gallery_ids + other_ids]
    pool = [m for m in maps if isinstance(m, FaceMap)]
    assert len(pool) == len(maps)
    gallery, others = pool[:len(gallery_ids)], pool[len(gallery_ids):]
    rng = np.random.default_rng(7)
    probes, truth = [], []
    for k, i in enumerate(gallery_ids):
        for rep in range(2):
            probe = face_depth_map(_perturbed(_phantom(modality, i)[1], 2 * k + rep, rng))
            if isinstance(probe, FaceMap):
                probes.append(probe)
                truth.append(k)
    assert len(probes) >= 22
    threshold = gallery_threshold(face_similarity(gallery, gallery))
    rate, idx, member_top = rank1_rate(face_similarity(probes, gallery), threshold)
    assert np.mean(idx == np.asarray(truth)) >= 0.9
    assert rate >= 0.8
    _, _, other_top = rank1_rate(face_similarity(others, gallery), threshold)
    auc = np.mean(member_top[:, None] > other_top[None, :])
    assert auc >= 0.95  # a perturbed copy of a patient is closer to the gallery than any other patient is

    # Other patients exceed the gallery's closest distinct pair only by chance: they are exchangeable with the
    # gallery's own patients, so on average 2 / (n_gallery + 1) of them do (0.15 here). One split is a noisy
    # estimate of that (a 12 / 12 split exceeds 20 % about a third of the time), so average over random splits.
    sim = face_similarity(pool, pool)
    split = np.random.default_rng(0)
    rates = []
    for _ in range(200):
        perm = split.permutation(len(pool))
        g, o = perm[:len(gallery)], perm[len(gallery):]
        rates.append(rank1_rate(sim[np.ix_(o, g)], gallery_threshold(sim[np.ix_(g, g)]))[0])
    assert 0.05 <= np.mean(rates) <= 0.2
