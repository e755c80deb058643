"""``privacy.tumour_memorization``'s scores: a training tumour moved, mirrored, placed in another neighbourhood keeps
its shape and its intensities; another tumour does not."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from synthrelease.checks.privacy.tumour import SCORES, TumourCubes, best_tumour_matches

SIDE, MASK_SIDE = 8, 12


def _blob(rng: np.random.Generator) -> np.ndarray:
    """A lobulated blob near the centre of the mask cube (a random smooth field thresholded)."""
    field = ndimage.gaussian_filter(rng.standard_normal((MASK_SIDE,) * 3), 1.5)
    z, y, x = np.indices((MASK_SIDE,) * 3) - (MASK_SIDE - 1) / 2
    return (field + 0.12 - 0.02 * (z * z + y * y + x * x)) > 0


def _cubes(masks: list[np.ndarray], rng: np.random.Generator) -> TumourCubes:
    n = len(masks)
    mask = torch.from_numpy(np.stack(masks)[:, None].astype(np.float32))
    texture = ndimage.gaussian_filter(rng.standard_normal((n, MASK_SIDE, MASK_SIDE, MASK_SIDE)), (0, 1, 1, 1))
    inside = torch.from_numpy((np.stack(masks) * (1.0 + texture))[:, None].astype(np.float32))
    around = torch.from_numpy(rng.standard_normal((n, 1, SIDE, SIDE, SIDE)).astype(np.float32))
    return TumourCubes(around, mask, inside, np.ones(n, dtype=bool))


def test_a_moved_and_mirrored_tumour_in_new_surroundings_matches_its_source() -> None:
    rng = np.random.default_rng(0)
    refs = _cubes([_blob(rng) for _ in range(6)], rng)
    # reference 3's tumour, mirrored on z, moved one voxel along x, in other surroundings (a new neighbourhood cube)
    mask = torch.roll(refs.mask[3].flip(1), 1, dims=3)
    inside = torch.roll(refs.inside[3].flip(1), 1, dims=3)
    others = _cubes([_blob(rng) for _ in range(3)], rng)
    query = TumourCubes(torch.cat([others.around[:1], others.around[1:]]),
                        torch.cat([mask[None], others.mask[1:]]), torch.cat([inside[None], others.inside[1:]]),
                        np.ones(3, dtype=bool))
    sims, which = best_tumour_matches(query, refs, refs.around.mean(dim=0))
    shape, intensities = SCORES.index("tumour shape (label mask)"), SCORES.index("tumour intensities")
    assert sims.shape == (3, len(SCORES))
    assert sims[0, shape] > 0.999 and which[0, shape] == 3
    assert sims[0, intensities] > 0.999 and which[0, intensities] == 3
    # unrelated tumours: lower on both scores
    assert np.all(sims[1:, shape] < 0.95) and np.all(sims[1:, intensities] < 0.95)


def test_the_intensity_score_is_the_weighted_ncc_within_the_grown_tumour() -> None:
    rng = np.random.default_rng(1)
    refs = _cubes([_blob(rng) for _ in range(2)], rng)
    query = _cubes([_blob(rng)], rng)
    sims, _ = best_tumour_matches(query, refs, refs.around.mean(dim=0))
    # the unmoved, unmirrored view is one of the views: the best is at least its NCC, computed directly
    w = ndimage.binary_dilation(query.mask[0, 0].numpy() > 0.5, np.ones((3, 3, 3), bool))
    q = query.inside[0, 0].numpy()[w].astype(np.float64)
    direct = []
    for r in refs.inside[:, 0].numpy():
        a, b = q - q.mean(), r[w] - r[w].mean()
        direct.append(float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum())))
    assert sims[0, SCORES.index("tumour intensities")] >= max(direct) - 1e-9
    assert sims[0, SCORES.index("tumour intensities")] <= 1.0 + 1e-9
