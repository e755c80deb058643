"""The copy search's parts: the region NCC, registration, the centred shortlist and the per-copy line."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from synthrelease.checks.copysearch import (
    SHORTLIST_SIZES,
    CopySearchSettings,
    calibrate,
    centred_candidates,
    centred_shortlists,
    region_masks,
    region_ncc,
    register,
    search_copies,
    warp_back,
)
from synthrelease.checks.features import standardized
from synthrelease.data.phantoms import make_ct_phantom
from synthrelease.data.preprocess import PreprocessConfig, preprocess_case

SHAPE = 24


@pytest.fixture(scope="module")
def volumes() -> np.ndarray:
    """Standardized 24^3 phantom CTs ``(N, 1, Z, Y, X)``."""
    cfg = PreprocessConfig.for_modality("ct", spacing=(10.0,) * 3, shape=(SHAPE,) * 3)
    cases = [preprocess_case(make_ct_phantom(i, shape=SHAPE, seed=0), cfg)[0] for i in range(10)]
    return np.stack([standardized(c).numpy() for c in cases])


def test_region_masks_cover_the_whole_and_split_it_in_halves() -> None:
    names, masks = region_masks((4, 6, 8))
    assert names[0] == "whole" and len(names) == 7
    assert masks[0].sum() == 4 * 6 * 8
    for k in range(1, 7, 2):  # each pair of halves tiles the field of view
        np.testing.assert_array_equal(masks[k] + masks[k + 1], masks[0])


def test_region_ncc_is_one_for_a_copy_at_any_intensity_gain(volumes: np.ndarray) -> None:
    _, masks = region_masks((SHAPE,) * 3)
    template = volumes[5:].mean(axis=0)
    ref = volumes[0]
    inside = np.ones((SHAPE,) * 3, dtype=bool)
    for query in (ref, 1.4 * ref + 0.3):  # a partly changed case is standardized differently: a gain
        np.testing.assert_allclose(region_ncc(query, template, ref - template, inside, masks), 1.0, atol=1e-6)
    other = region_ncc(volumes[1], template, ref - template, inside, masks)
    assert np.all(other < 0.99)


def test_region_ncc_of_several_references_equals_one_at_a_time(volumes: np.ndarray) -> None:
    _, masks = region_masks((SHAPE,) * 3)
    templates = np.stack([volumes[5:].mean(axis=0) + 0.1 * i for i in range(3)])
    refs = volumes[:3]
    inside = np.zeros((SHAPE,) * 3, dtype=bool)
    inside[2:, :, 3:] = True
    batched = region_ncc(volumes[4], templates, refs - templates, inside, masks)
    for i in range(3):
        np.testing.assert_allclose(batched[i], region_ncc(volumes[4], templates[i], refs[i] - templates[i], inside,
                                                          masks), atol=1e-10)


def test_a_mirrored_and_moved_copy_is_registered_back(volumes: np.ndarray) -> None:
    src = volumes[0, 0]
    copy = np.roll(src[::-1], 3, axis=1)  # superior-inferior mirror, 3 voxels along y
    copy[:, :3] = src.min()
    reg = register(src, copy)
    assert reg.mirror == (True, False, False)
    assert abs(reg.scale - 1.0) < 0.02 and reg.rotation_deg < 2.0
    assert abs(abs(reg.translation[1]) - 3.0) < 0.5


@pytest.fixture(scope="module")
def demo_grid() -> np.ndarray:
    """Standardized phantom CTs on the demo's grid (32^3, 7.5 mm voxels) ``(N, 1, Z, Y, X)``."""
    cfg = PreprocessConfig.for_modality("ct", spacing=(7.5,) * 3, shape=(32,) * 3)
    return np.stack([standardized(preprocess_case(make_ct_phantom(i, shape=32, seed=0), cfg)[0]).numpy()
                     for i in range(8)])


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_a_rescaled_copy_matches_its_source_in_its_own_frame(demo_grid: np.ndarray, factor: float) -> None:
    """Rescaled once (as a generator would), a copy matches its source brought into its frame (one resampling each,
    at the same points) better than on the source's grid (two resamplings), and far better than another patient."""
    src = demo_grid[0]
    centre = (np.array(src.shape[1:]) - 1) / 2
    inverse = np.eye(3) / factor
    copy = np.stack([ndimage.affine_transform(c, inverse, offset=centre - inverse @ centre, order=1,
                                              mode="constant", cval=float(c.min())) for c in src])
    reg = register(src.mean(axis=0), copy.mean(axis=0))
    assert abs(reg.scale - factor) < 0.02 and reg.mirror == (False, False, False)
    assert np.isnan(warp_back(src, reg, src.shape[1:])).mean() < 0.5
    template = demo_grid[4:].mean(axis=0)
    found = search_copies([copy, demo_grid[5]], list(demo_grid[:4]), [[0], [0, 1, 2, 3]], template,
                          CopySearchSettings())
    n = len(region_masks(src.shape[1:])[0])
    assert found.regions[n] == "whole, in the case's frame" and len(found.regions) == 2 * n
    assert found.ncc[0, n] > 0.95 and found.ncc[0, n] > found.ncc[0, 0]
    assert np.nanmax(found.ncc[1, n:]) < found.ncc[0, n] - 0.1


def test_the_centred_shortlist_finds_a_far_moved_mirrored_copy(volumes: np.ndarray) -> None:
    copy = np.roll(volumes[3][:, :, ::-1], 5, axis=3)  # anterior-posterior mirror, 5 voxels along x
    top = centred_candidates(copy[None], volumes[:8], k=1)
    assert top[0, 0] == 3


def test_the_centred_shortlists_keep_the_best_of_a_coarse_and_a_fine_grid(volumes: np.ndarray) -> None:
    """One list per grid of ``SHORTLIST_SIZES``, side by side. On the coarse grid (24^3 pooled 2x) whole-voxel
    centring leaves a turned copy up to 10 mm off its source, and look-alikes outrank it; on the fine grid (the
    search grid itself) each turned, moved copy's source comes first, so the shortlists keep it."""
    assert SHORTLIST_SIZES[0] < SHAPE <= SHORTLIST_SIZES[-1]
    copies = np.stack([np.roll(ndimage.rotate(v, 10.0, axes=(1, 3), reshape=False, order=1, mode="nearest"), 3,
                               axis=2) for v in volumes[:8]])
    both = centred_shortlists(copies, volumes[:8], 1)
    assert both.shape == (8, len(SHORTLIST_SIZES))
    for i, size in enumerate(SHORTLIST_SIZES):
        np.testing.assert_array_equal(both[:, i], centred_candidates(copies, volumes[:8], 1, size)[:, 0])
    sources = np.arange(8)
    assert (both[:, 0] == sources).sum() <= 2  # the coarse grid alone misses most sources
    np.testing.assert_array_equal(both[:, 1], sources)  # the fine grid finds every one
    assert all(i in row for i, row in enumerate(both))


def test_search_scores_a_copy_near_one_and_another_patient_lower(volumes: np.ndarray) -> None:
    refs = list(volumes[:6])
    copy = np.roll(volumes[2][:, ::-1], 2, axis=2)
    found = search_copies([copy, volumes[8]], refs, [[2], [0, 1, 2]], volumes[:6].mean(axis=0),
                          CopySearchSettings())
    assert found.reference[0, 0] == 2 and found.ncc[0, 0] > 0.98
    assert np.nanmax(found.ncc[1]) < np.nanmax(found.ncc[0])


def test_the_line_is_at_least_the_holdout_maximum_and_rises_with_the_cases_judged() -> None:
    rng = np.random.default_rng(0)
    holdout = np.tanh(rng.normal(1.0, 0.2, size=(40, 7)))
    small, large = calibrate(holdout, 10, 0.05), calibrate(holdout, 1000, 0.05)
    assert small.threshold >= small.holdout_max and large.threshold > small.threshold
    stat, region = small.statistic(holdout)
    assert stat.max() == pytest.approx(small.holdout_max) and region.shape == (40,)
    copy = holdout[:1].copy()
    copy[0, 3] = 0.9999
    assert small.statistic(copy)[0][0] > small.threshold and small.statistic(copy)[1][0] == 3
    with pytest.raises(ValueError, match="too few holdout"):
        calibrate(holdout[:2], 10, 0.05)
