"""Face re-identification core: frontal skin depth maps of head scans and a matcher between them.

``face_depth_map`` renders the skin surface of a case, seen from the front, as a depth map in mm around the nose tip;
``face_similarity`` compares depth maps (RMS depth difference in mm, with a small shift and mirror search);
``gallery_threshold`` and ``rank1_rate`` turn similarities into the attacker's rank-1 match rate.

Orientation: the volume is reoriented (axis permutations and flips, from the direction cosines) so that its axes run
superior, posterior, left (LPS); the face looks towards the low end of the posterior axis. Maps have rows from
superior to inferior and columns from the patient's right to left, like a photograph of the face.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

from synthrelease.data.case import Case
from synthrelease.errors import InputError

__all__ = ["FaceMap", "face_depth_map", "face_similarity", "gallery_threshold", "rank1_rate"]

SMOOTH_MM = 3.0  # smoothing of the depth map before the nose search
HEAD_MM = 250.0  # the nose is searched this far below the top of the body
RING_MM = (25.0, 40.0)  # (upper half) ring around the nose tip whose median depth measures its protrusion
MIN_PROTRUSION_MM = 8.0
NEAR_MM = 15.0  # nose candidates: local minima of the depth at most this far behind the most anterior point
BEHIND_WEIGHT = 2.0  # score lost per mm a candidate lies behind the most anterior point
MIN_CONTRAST = 4.0  # tissue minus air median, in air standard deviations (pure noise gives about 2.2)
SKIN_LEVEL = 0.25  # skin threshold between the air and tissue levels that an Otsu split finds
MIN_VALID = 0.5  # least share of the face window with skin in view
MIN_OVERLAP = 0.25  # least share of pixels valid in both maps for a comparison


@dataclass(frozen=True)
class FaceMap:
    """Frontal depth map (mm, relative to the nose tip; larger = further back; NaN = no skin) of one face."""

    depth: np.ndarray  # (H, W) float32; rows superior -> inferior, columns patient right -> left
    valid_fraction: float
    nose_tip_mm: tuple[float, float, float] = (np.nan, np.nan, np.nan)  # physical (x, y, z) LPS, mm


def _canonical(case: Case) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """First channel as a view with axes (S, P, L), the spacing of those axes, and per axis: source array axis,
    flipped."""
    d = np.asarray(case.geometry.direction, dtype=float).reshape(3, 3)
    phys = np.argmax(np.abs(d), axis=0)  # physical axis (x, y, z) of each index axis (i, j, k)
    if len(set(phys.tolist())) != 3:
        phys = np.array([0, 1, 2])  # no axis-aligned reading of a 45-degree oblique grid: keep the array order
    index_of = np.argsort(phys)  # index axis of physical x, y, z
    order = [2 - int(index_of[2 - a]) for a in range(3)]  # array axes for S, P, L
    flips = np.array([d[2 - a, index_of[2 - a]] < 0 for a in range(3)])
    vol = np.transpose(case.image[0], order)[tuple(slice(None, None, -1) if f else slice(None) for f in flips)]
    spacing = np.asarray(case.geometry.spacing, dtype=float)[[index_of[2], index_of[1], index_of[0]]]
    return vol, spacing, np.asarray(order), flips


def _to_physical(case: Case, point: np.ndarray, order: np.ndarray, flips: np.ndarray) -> tuple[float, float, float]:
    """Physical (x, y, z) mm of a canonical (S, P, L) voxel coordinate."""
    shape = np.asarray(case.shape)[order]
    canon = np.where(flips, shape - 1 - point, point)
    zyx = np.empty(3)
    zyx[order] = canon
    g = case.geometry
    d = np.asarray(g.direction, dtype=float).reshape(3, 3)
    x, y, z = np.asarray(g.origin) + d @ (zyx[::-1] * np.asarray(g.spacing))
    return (float(x), float(y), float(z))


def _body(vol: np.ndarray) -> tuple[np.ndarray, float] | str:
    """Body mask (a quarter of the way from air to tissue, as an Otsu split finds them; largest component, holes
    filled) and its threshold, or why there is none."""
    if not float(vol.max()) > float(vol.min()):
        return "no body found (the image is flat)"
    otsu = float(threshold_otsu(vol))
    low, high = vol[vol <= otsu], vol[vol > otsu]
    air, tissue = float(np.median(low)), float(np.median(high))
    if tissue - air < MIN_CONTRAST * max(float(low.std()), 1e-12):
        return "no body found (no contrast between air and tissue)"
    thr = air + SKIN_LEVEL * (tissue - air)  # Otsu may split dark tissue (fat in CT, muscle in T1) from bright
    lab, n = ndimage.label(vol > thr)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    if n == 0 or sizes.max() < 0.001 * vol.size:
        return "no body found"
    return ndimage.binary_fill_holes(lab == int(np.argmax(sizes))), thr


def _depth(vol: np.ndarray, mask: np.ndarray, thr: float, step: float) -> tuple[np.ndarray, np.ndarray]:
    """(S, L) depth in mm from the anterior edge to the skin (sub-voxel: where the intensity crosses the threshold),
    NaN where a column holds no body; and where the body touches the anterior edge."""
    first = np.argmax(mask, axis=1)
    k = np.maximum(first, 1)[:, None, :]
    v0 = np.take_along_axis(vol, k - 1, axis=1)[:, 0]
    v1 = np.take_along_axis(vol, k, axis=1)[:, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.clip(np.nan_to_num((thr - v0) / (v1 - v0), nan=1.0), 0.0, 1.0)
    depth = (first - 0.5 + frac) * step
    touching = mask[:, 0, :]
    depth[touching] = 0.0
    depth[~mask.any(axis=1)] = np.nan
    return depth, touching


def _refine(d: np.ndarray, i: int, j: int) -> tuple[float, float]:
    """Sub-pixel position of the minimum at (i, j): a parabola through three samples along each axis."""
    out = [float(i), float(j)]
    for axis, line, c in ((0, d[:, j], i), (1, d[i, :], j)):
        if 0 < c < len(line) - 1 and (curv := line[c - 1] - 2 * line[c] + line[c + 1]) > 1e-9:
            out[axis] += float(np.clip(0.5 * (line[c - 1] - line[c + 1]) / curv, -0.5, 0.5))
    return out[0], out[1]


def _ring_protrusion(sm: np.ndarray, cand: np.ndarray, px: np.ndarray, upper: bool) -> np.ndarray:
    """Per candidate (K, 2), the median depth of the (upper half) ring of ``RING_MM`` around it minus its own."""
    reach = np.ceil(RING_MM[1] / px).astype(int)
    di, dj = np.meshgrid(np.arange(-reach[0], reach[0] + 1), np.arange(-reach[1], reach[1] + 1), indexing="ij")
    r = np.hypot(di * px[0], dj * px[1])
    keep = (r >= RING_MM[0]) & (r <= RING_MM[1]) & ((di >= 0) if upper else True)
    ii, jj = cand[:, :1] + di[keep], cand[:, 1:] + dj[keep]
    inside = (ii >= 0) & (ii < sm.shape[0]) & (jj >= 0) & (jj < sm.shape[1])
    ring = np.where(inside, sm[np.clip(ii, 0, sm.shape[0] - 1), np.clip(jj, 0, sm.shape[1] - 1)], np.inf)
    ring[~np.isfinite(ring)] = np.nan
    enough = np.sum(np.isfinite(ring), axis=1) >= 4
    with np.errstate(all="ignore"):
        med = np.nanmedian(np.where(enough[:, None], ring, 0.0), axis=1)
    return np.where(enough, med - sm[cand[:, 0], cand[:, 1]], -np.inf)


def _find_nose(depth: np.ndarray, spacing: np.ndarray) -> tuple[float, float] | str:
    """Nose tip (S, L) in voxels: among local minima of the smoothed skin depth near the most anterior point below the
    top of the body, the one that stands out most from the face around it and above it, least far back."""
    valid = np.isfinite(depth)
    rows = np.flatnonzero(valid.any(axis=1))
    if rows.size == 0:
        return "no body found"
    px = spacing[[0, 2]]
    w = ndimage.gaussian_filter(valid.astype(float), SMOOTH_MM / px, mode="constant")
    sm = ndimage.gaussian_filter(np.where(valid, depth, 0.0), SMOOTH_MM / px, mode="constant") / np.maximum(w, 1e-6)
    sm = np.where(valid, sm, np.inf)
    allowed = valid & (np.arange(depth.shape[0]) <= rows[0] + HEAD_MM / px[0])[:, None]
    front = float(np.min(np.where(allowed, sm, np.inf)))
    size = tuple(np.maximum(3, np.round(10.0 / px).astype(int) | 1))
    cand = np.argwhere(allowed & (sm <= front + NEAR_MM) & (sm == ndimage.minimum_filter(sm, size=size)))
    if cand.size == 0:
        return "no nose-like protrusion on the front of the body"
    full = _ring_protrusion(sm, cand, px, upper=False)
    score = 0.5 * (full + _ring_protrusion(sm, cand, px, upper=True)) - BEHIND_WEIGHT * (sm[tuple(cand.T)] - front)
    k = int(np.argmax(score))
    if not full[k] >= MIN_PROTRUSION_MM:
        return "no nose-like protrusion on the front of the body"
    return _refine(np.where(valid, sm, np.nanmax(depth)), int(cand[k, 0]), int(cand[k, 1]))


def face_depth_map(case: Case, *, size: int = 32, window_mm: tuple[float, float] = (120.0, 120.0)) -> FaceMap | str:
    """Frontal skin depth map of ``case`` (first channel) around the nose tip: ``size`` x ``size`` pixels over
    ``window_mm`` (superior-inferior, left-right) mm, depth in mm behind the nose tip; or why there is no face."""
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 4 or min(window_mm) <= 0:
        raise InputError(f"face map size {size!r} or window {window_mm} mm is unusable",
                         fix="use size >= 4 pixels and a positive window, e.g. size=32, window_mm=(120, 120)")
    vol, spacing, order, flips = _canonical(case)
    body = _body(vol)
    if isinstance(body, str):
        return body
    depth, touching = _depth(vol, *body, step=float(spacing[1]))
    nose = _find_nose(depth, spacing)
    cut = "the body touches the anterior edge of the field of view (face cut off)"
    if isinstance(nose, str):
        return cut if touching.any() else nose
    half = np.asarray(window_mm, dtype=float) / 2.0
    lo = np.floor(np.asarray(nose) - half / spacing[[0, 2]]).astype(int)
    hi = np.ceil(np.asarray(nose) + half / spacing[[0, 2]]).astype(int) + 1
    if touching[max(lo[0], 0):hi[0], max(lo[1], 0):hi[1]].any():
        return cut
    offs = [(np.arange(size) + 0.5) * (2 * h / size) - h for h in half]
    rows = nose[0] - offs[0] / spacing[0]  # superior first
    cols = nose[1] + offs[1] / spacing[2]  # patient right first
    grid = np.meshgrid(rows, cols, indexing="ij")
    valid = np.isfinite(depth)
    filled = np.where(valid, depth, 0.0)
    weight = ndimage.map_coordinates(valid.astype(float), grid, order=1, mode="constant", cval=0.0)
    value = ndimage.map_coordinates(filled, grid, order=1, mode="nearest") / np.maximum(weight, 1e-6)
    ok = weight >= 0.5
    holes = ndimage.binary_fill_holes(ok) & ~ok
    if holes.any():  # small gaps inside the face (within about two pixels of skin): the mean of their surroundings
        num = ndimage.gaussian_filter(np.where(ok, value, 0.0), 1.0)
        den = ndimage.gaussian_filter(ok.astype(float), 1.0)
        value[holes] = num[holes] / np.maximum(den[holes], 1e-6)
        ok = ok | (holes & (den > 0.05))
    if ok.mean() < MIN_VALID:
        return "less than half of the face window holds skin in view"
    ref = ndimage.map_coordinates(filled, [[nose[0]], [nose[1]]], order=1, mode="nearest")[0]
    out = np.where(ok, value - ref, np.nan).astype(np.float32)
    tip = _to_physical(case, np.array([nose[0], ref / spacing[1] - 0.5, nose[1]]), order, flips)
    return FaceMap(depth=out, valid_fraction=float(ok.mean()), nose_tip_mm=tip)


def _stack(maps: Sequence[FaceMap]) -> np.ndarray:
    shapes = {m.depth.shape for m in maps}
    if len(shapes) > 1:
        raise ValueError(f"face maps of different sizes {sorted(shapes)}")
    return np.stack([np.asarray(m.depth, dtype=np.float64) for m in maps])


def _shifted(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``x`` (N, H, W) moved by (dy, dx) pixels, NaN where nothing moved in."""
    out = np.full_like(x, np.nan)
    h, w = x.shape[1:]
    out[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = x[:, max(-dy, 0):h - max(dy, 0),
                                                                     max(-dx, 0):w - max(dx, 0)]
    return out


def _masked_rms(p: np.ndarray, g: np.ndarray) -> np.ndarray:
    """RMS depth difference (mm) of every row of ``p`` to every row of ``g`` over the pixels valid in both, after the
    best depth offset; ``inf`` where they share too few pixels. All sums are matrix products."""
    mp, mg = np.isfinite(p).astype(float), np.isfinite(g).astype(float)
    p0, g0 = np.nan_to_num(p), np.nan_to_num(g)
    n = mp @ mg.T
    nn = np.maximum(n, 1.0)
    mean = (p0 @ mg.T - mp @ g0.T) / nn
    var = ((p0 * p0) @ mg.T + mp @ (g0 * g0).T - 2.0 * (p0 @ g0.T)) / nn - mean * mean
    return np.where(n >= MIN_OVERLAP * p.shape[1], np.sqrt(np.maximum(var, 0.0)), np.inf)


def face_similarity(probes: Sequence[FaceMap], gallery: Sequence[FaceMap], *, max_shift: int = 2) -> np.ndarray:
    """(n_probe, n_gallery) similarity ``1 / (1 + rms)`` in (0, 1], with ``rms`` the smallest RMS difference in mm of
    the depth maps (pixels valid in both, best depth offset) over shifts of the probe by up to ``max_shift`` pixels
    and its left-right mirror image: 1 = the same surface, 0.5 = 1 mm apart, 0.2 = 4 mm; 0 = too little overlap."""
    if not probes or not gallery:
        return np.zeros((len(probes), len(gallery)))
    p, g = _stack(probes), _stack(gallery)
    if p.shape[1:] != g.shape[1:]:
        raise ValueError(f"probe maps {p.shape[1:]} and gallery maps {g.shape[1:]} differ in size")
    gf = g.reshape(len(g), -1)
    rms = np.full((len(p), len(g)), np.inf)
    for variant in (p, p[:, :, ::-1]):
        for dy in range(-max_shift, max_shift + 1):
            for dx in range(-max_shift, max_shift + 1):
                rms = np.minimum(rms, _masked_rms(_shifted(variant, dy, dx).reshape(len(p), -1), gf))
    return np.asarray(1.0 / (1.0 + rms))


def gallery_threshold(gallery_sim: np.ndarray) -> float:
    """The largest similarity between two distinct gallery faces (a square gallery x gallery matrix)."""
    sim = np.asarray(gallery_sim, dtype=float)
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1] or sim.shape[0] < 2:
        raise ValueError(f"need a square similarity matrix of at least two faces, got shape {sim.shape}")
    return float(np.nanmax(np.where(np.eye(len(sim), dtype=bool), np.nan, sim)))


def rank1_rate(sim: np.ndarray, threshold: float) -> tuple[float, np.ndarray, np.ndarray]:
    """Share of probes whose best gallery similarity exceeds ``threshold``; per probe the rank-1 gallery index and its
    similarity (NaN similarities never match)."""
    s = np.asarray(sim, dtype=float)
    if s.ndim != 2 or s.shape[1] == 0:
        raise ValueError(f"need a (n_probe, n_gallery >= 1) similarity matrix, got shape {s.shape}")
    s = np.where(np.isnan(s), -np.inf, s)
    idx = np.argmax(s, axis=1) if s.shape[0] else np.zeros(0, dtype=int)
    top = s[np.arange(len(s)), idx]
    rate = float(np.mean(top > threshold)) if len(s) else float("nan")
    return rate, idx, top
