"""The copy search: is a case a copy of a training patient, moved, mirrored, turned, rescaled, blurred or cut, whole
or in part? And the per-copy threshold that judges it.

The dense search of ``AuditContext.pixel_matches`` tries one mirror, shifts of a few voxels and small rotations: the
envelope of the ``copycat`` control, which therefore proves nothing about copies outside it. This search widens the
envelope to what a generator (or a careless export) can plausibly do to a training patient:

1. **Shortlist** per query: the ``candidates`` nearest training patients of the dense pixel search, as many after
   centring both cases on their centre of mass in each of the 8 mirror states, at 3 scales and turned by 10 degrees
   about each axis (``centred_candidates``; no shift or mirror hides a copy from this one), once on a coarse grid
   and once on the search grid (``SHORTLIST_SIZES``), and as many by the
   contrastive embedding (trained with mirrors on every axis, rotations up to 15 degrees, shifts up to 15% of the
   field of view and scaling by up to 15%).
2. **Register** each (query, candidate): each of the 8 mirror states is placed by its centre of mass (image
   moments) and scored on a half-resolution grid; the best two are registered to the candidate by a similarity
   transform (rotation, translation, isotropic scale; SimpleITK, correlation metric, on the grid halved, one thread
   so the result is the same on every machine) and the better fit (by the optimizer's last metric) is kept (a head is
   nearly symmetric left to right, so its mirror image can place best by moments). The population template (mean
   training volume) is registered to every training patient the same way, once per audit.
3. **Score**: the deviations of both cases from the template registered to the candidate, the query's at the
   intensity gain that fits best (a case changed in part is standardized differently), NCC over the overlap of the
   field of view and its six halves, for the registered case smoothed by ``smoothing`` voxels on both sides
   (resampling a copy blurs its edges; smoothing removes that difference and keeps the anatomy) and unsmoothed.
   The same regions are scored a second time in the query's own frame: the candidate and its template brought back
   by the inverse transform, unsmoothed. A copy a generator rescaled or turned was resampled once; its source
   brought into its frame is resampled once at the same points and matches it, where bringing the copy onto its
   source resamples it a second time and blurs it about as much as two look-alike patients differ (each frame's
   regions are columns of their own, standardized by the holdout's own spread in that column).
   Every case is also scored as it is, unsmoothed, against every training patient (one product, no registration):
   a partial copy left in place (one patient's half joined to another's, a quarter blanked out) pulls a
   registration that weighs the whole field of view off its source and can rank below the shortlists'
   look-alikes, while one of its halves is its source's.
4. **Calibrate** (``CopyThreshold``): the same search for every holdout patient, who is no copy of anyone. Each
   region's ``atanh(NCC)`` is standardized by the holdout's mean and spread, a case's statistic is its largest
   standardized region, and the threshold is the ``1 - alpha / n`` quantile of a Gumbel law fitted (by moments) to
   the holdout's statistics, ``n`` the number of cases judged: a set of unseen patients is called a copy with
   probability about ``alpha`` in all. The threshold is never below the largest holdout statistic.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

__all__ = ["SHORTLIST_SIZES", "CopyScores", "CopySearchSettings", "CopyThreshold", "Registration", "calibrate",
           "centred_candidates", "centred_shortlists", "region_masks", "register", "registered_templates",
           "search_copies", "warp", "warp_back"]

MIRRORS: tuple[tuple[bool, bool, bool], ...] = tuple((z, y, x) for z in (False, True) for y in (False, True)
                                                     for x in (False, True))  # mirrored on (z, y, x)
MIN_OVERLAP = 0.5  # share of the field of view a registered pair must overlap, or it scores nothing
MIN_REGION = 0.05  # share of the field of view a region's overlap must cover to be scored
MIN_HALVED = 32  # registration runs on the grid halved where every axis has at least this many voxels


@dataclass(frozen=True)
class CopySearchSettings:
    candidates: int = 2  # training patients per query from each shortlist (dense, centred, embedding)
    smoothing: float = 1.5  # Gaussian sigma (voxels of the search grid) applied to both deviations before the NCC
    iterations: int = 60  # optimizer iterations
    alpha: float = 0.05  # chance that a set of unseen patients holds a case called a copy


@dataclass(frozen=True)
class Registration:
    """How the query was brought onto the reference: mirrored on ``mirror`` (z, y, x), then ``transform``."""

    mirror: tuple[bool, bool, bool]
    transform: sitk.Transform
    scale: float
    rotation_deg: float
    translation: tuple[float, float, float]

    def describe(self) -> str:
        axes = "".join(a for a, m in zip("zyx", self.mirror, strict=True) if m)
        moved = ", ".join(f"{v:+.1f}" for v in self.translation)
        return (f"mirror {axes or 'none'}, rotate {self.rotation_deg:.1f} deg, scale {self.scale:.3f}, "
                f"move ({moved}) voxels")


def _image(a: np.ndarray) -> sitk.Image:
    return sitk.GetImageFromArray(np.ascontiguousarray(a, dtype=np.float32))


def _method(initial: sitk.Transform) -> sitk.ImageRegistrationMethod:
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsCorrelation()
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetInitialTransform(initial, inPlace=False)
    reg.SetNumberOfThreads(1)
    return reg


def _mirrored(a: np.ndarray, mirror: tuple[bool, bool, bool]) -> np.ndarray:
    axes = tuple(a.ndim - 3 + i for i, m in enumerate(mirror) if m)
    return np.flip(a, axes) if axes else a


MIRROR_TRIES = 2  # mirror states registered per pair, best first by the metric at their moments' placement
LEARNING_RATE = 0.5  # the optimizer's first step: at 1.0 the scale of some pairs ran off to 0.2 (a shrunken copy
# was then scored against its source blown up five-fold)
RELAXATION = 0.8  # the step shrinks by this where the gradient turns back: at 0.5 a copy turned by 15 degrees
# stopped at 11 (its NCC 0.976 where 0.997 at 14 degrees)


def register(fixed: np.ndarray, moving: np.ndarray, *, iterations: int = 60) -> Registration:
    """Bring ``moving`` ``(Z, Y, X)`` onto ``fixed``: the ``MIRROR_TRIES`` best mirror states by moments, each
    registered by a similarity transform, the best fit kept (a head is nearly symmetric left to right, so its mirror
    image places almost as well by moments and can win there while losing once registered). Both are shifted to a
    zero minimum (air) so that the moments weigh tissue, not background."""
    f = _image(fixed - fixed.min())
    # the grid halved where it has at least MIN_HALVED voxels per axis (the pose of a whole head is set by its
    # coarse structure; the score is taken on the full grid afterwards)
    shrink = 2 if min(fixed.shape) >= MIN_HALVED else 1
    f_half = sitk.Shrink(f, [shrink] * 3)
    tried = []
    for order, mirror in enumerate(MIRRORS):
        m = _image(_mirrored(moving, mirror) - moving.min())
        init = sitk.CenteredTransformInitializer(f, m, sitk.Similarity3DTransform(),
                                                 sitk.CenteredTransformInitializerFilter.MOMENTS)
        # the correlation metric is negative: lower is better; ties keep the mirrors' order
        tried.append((_method(init).MetricEvaluate(f_half, sitk.Shrink(m, [shrink] * 3)), order, mirror, init, m))
    tried.sort(key=lambda t: (t[0], t[1]))
    fits = []
    for _, order, mirror, init, m in tried[:MIRROR_TRIES]:
        reg = _method(init)
        reg.SetOptimizerAsRegularStepGradientDescent(learningRate=LEARNING_RATE, minStep=1e-3,
                                                     numberOfIterations=iterations, gradientMagnitudeTolerance=1e-8,
                                                     relaxationFactor=RELAXATION)
        reg.SetOptimizerScalesFromPhysicalShift()
        reg.SetShrinkFactorsPerLevel([shrink])
        reg.SetSmoothingSigmasPerLevel([shrink - 1])
        found = reg.Execute(f, m)
        # the optimizer's own last metric (on the grid it ran on): both fits were optimized on the same grid, so it
        # ranks them as a fresh evaluation would, at no extra cost
        fits.append((reg.GetMetricValue(), order, mirror, found))
    _, _, mirror, found = min(fits, key=lambda t: (t[0], t[1]))
    sim = sitk.Similarity3DTransform(sitk.CompositeTransform(found).GetNthTransform(0))
    versor = sim.GetVersor()
    angle = math.degrees(2 * math.acos(min(1.0, abs(versor[3]))))
    tx, ty, tz = sim.GetTranslation()
    return Registration(mirror, found, float(sim.GetScale()), angle, (tz, ty, tx))


def warp(volume: np.ndarray, reg: Registration, shape: tuple[int, ...]) -> np.ndarray:
    """``(C, Z, Y, X)`` mirrored and resampled onto the reference grid (linear); NaN where it has no data."""
    ref = sitk.Image([int(n) for n in reversed(shape)], sitk.sitkFloat32)
    out = np.empty((volume.shape[0], *shape), dtype=np.float32)
    for c, channel in enumerate(_mirrored(volume, reg.mirror)):
        out[c] = sitk.GetArrayFromImage(sitk.Resample(_image(channel), ref, reg.transform, sitk.sitkLinear,
                                                      float("nan")))
    return out


def warp_back(volume: np.ndarray, reg: Registration, shape: tuple[int, ...]) -> np.ndarray:
    """``(C, Z, Y, X)`` reference-grid volume resampled into the frame of the query ``reg`` moved (after its
    mirroring), by the inverse transform (linear); NaN where it has no data. A copy resampled once by a generator
    (zoomed, turned) matches its source resampled once here at the same points, where bringing the copy onto its
    source resamples it a second time and blurs it as much as two unrelated patients differ."""
    sim = sitk.Similarity3DTransform(sitk.CompositeTransform(reg.transform).GetNthTransform(0))
    inverse = sim.GetInverse()
    ref = sitk.Image([int(n) for n in reversed(shape)], sitk.sitkFloat32)
    out = np.empty((volume.shape[0], *shape), dtype=np.float32)
    for c, channel in enumerate(volume):
        out[c] = sitk.GetArrayFromImage(sitk.Resample(_image(channel), ref, inverse, sitk.sitkLinear, float("nan")))
    return out


def region_masks(shape: tuple[int, ...]) -> tuple[tuple[str, ...], np.ndarray]:
    """Names and ``(R, Z*Y*X)`` float masks: the whole field of view and its six halves (axis names as preprocessing
    orients them: z inferior to superior, y, x the patient's left-right axis). A half is what a partial copy keeps
    of its source (one patient's half joined to another's; a quarter blanked leaves a whole half untouched)."""
    z, y, x = shape
    grids = np.meshgrid(np.arange(z) < z / 2, np.arange(y) < y / 2, np.arange(x) < x / 2, indexing="ij")
    names, masks = ["whole"], [np.ones(shape, bool)]
    for axis, (low, high) in enumerate((("z low", "z high"), ("y low", "y high"), ("x low", "x high"))):
        names += [f"half {low}", f"half {high}"]
        masks += [grids[axis], ~grids[axis]]
    return tuple(names), np.stack(masks).reshape(len(masks), -1).astype(np.float64)


GAIN_RANGE = (0.5, 2.0)  # intensity gains a query may carry against its reference (standardizing a case whose
# content changed in part, blanked, blurred or rescaled, scales what is left of its source)


def region_ncc(query: np.ndarray, template: np.ndarray, reference: np.ndarray, overlap: np.ndarray,
               masks: np.ndarray) -> np.ndarray:
    """Per region of ``masks``, within ``overlap``: the NCC of the query's deviation from the template,
    ``gain * query - template``, with the reference's deviation ``reference``, at the gain in ``GAIN_RANGE`` that
    maximizes it (closed form). ``(C, Z, Y, X)`` arrays give ``(R,)``; ``template`` and ``reference`` may also be
    ``(N, C, Z, Y, X)`` (one per reference, the query shared), giving ``(N, R)``. NaN where a region's overlap is
    too small to score."""
    batched = template.ndim == query.ndim + 1
    w = masks * overlap.reshape(1, -1)  # (R, V)
    channels = query.shape[0]
    u = query.reshape(1, channels, -1).astype(np.float64)
    t, v = (x.reshape(-1, channels, u.shape[2]).astype(np.float64) for x in (template, reference))
    n = np.maximum(w.sum(axis=1) * channels, 1.0)  # (R,)

    def total(x: np.ndarray) -> np.ndarray:  # (N, C, V) -> (N, R): the sum over channels and each region
        return np.asarray(np.einsum("rv,ncv->nr", w, x, optimize=True))

    sums = {"u": total(u), "t": total(t), "v": total(v)}
    arrays = {"u": u, "t": t, "v": v}

    def cov(a: str, b: str) -> np.ndarray:
        return total(arrays[a] * arrays[b]) - sums[a] * sums[b] / n

    uv, tv, uu, ut, tt, vv = cov("u", "v"), cov("t", "v"), cov("u", "u"), cov("u", "t"), cov("t", "t"), cov("v", "v")

    def ncc_at(gain: np.ndarray) -> np.ndarray:
        var = np.maximum(gain * gain * uu - 2 * gain * ut + tt, 1e-12) * np.maximum(vv, 1e-12)
        return np.asarray((gain * uv - tv) / np.sqrt(var))

    with np.errstate(divide="ignore", invalid="ignore"):
        best = np.clip(np.nan_to_num((uv * tt - tv * ut) / (uv * ut - tv * uu), nan=1.0), *GAIN_RANGE)
    ncc = np.maximum(ncc_at(best), ncc_at(np.ones_like(best)))
    out = np.where(w.sum(axis=1) >= MIN_REGION * masks.shape[1], np.clip(ncc, -1.0, 1.0), np.nan)
    return out if batched else out[0]


def _centring_move(volume: np.ndarray) -> np.ndarray:
    """The whole-voxel move ``(z, y, x)`` that brings the centre of mass of ``volume`` ``(C, Z, Y, X)`` (of its
    channel mean above its minimum) to the grid centre."""
    centre = (np.array(volume.shape[1:]) - 1) / 2
    weight = volume.mean(axis=0) - volume.mean(axis=0).min()
    com = np.array(ndimage.center_of_mass(weight)) if weight.sum() > 0 else centre
    return np.asarray(np.round(centre - com).astype(int))


def _moved(volume: np.ndarray, move: np.ndarray) -> np.ndarray:
    """``volume`` ``(C, Z, Y, X)`` moved by whole voxels; its minimum enters the view."""
    return np.asarray(ndimage.shift(volume, (0, *move), order=0, mode="constant", cval=float(volume.min())))


def _centred(volumes: np.ndarray) -> np.ndarray:
    """``(N, C, Z, Y, X)`` each moved by whole voxels so that its centre of mass sits at the grid centre."""
    return np.stack([_moved(v, _centring_move(v)) for v in volumes])


SHORTLIST_SCALES = (1 / 1.1, 1.0, 1.1)  # the query magnified by these about its centre of mass, for the shortlist
SHORTLIST_TURNS = (10.0,)  # and turned by plus and minus these degrees about each axis
# voxels per axis of the centred shortlists' grids (each pooled by a whole factor down to at most this): one list
# on a coarse grid and one on the search grid itself. Whole-voxel centring leaves a case up to half a voxel off its
# source; on the coarse grid that is half of a 15 mm voxel, enough to drop a turned or shrunken copy's source behind
# dozens of look-alikes, while the fine grid ranks some enlarged copies' sources lower. Each keeps its best.
SHORTLIST_SIZES = (16, 32)


def _rotation(axis: int, degrees: float) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    i, j = [a for a in range(3) if a != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def _shortlist_poses() -> list[np.ndarray]:
    """The linear maps (about the grid centre) the shortlist tries: every scale, unturned and turned about each
    axis."""
    turns = [np.eye(3)] + [_rotation(axis, sign * deg) for deg in SHORTLIST_TURNS for axis in range(3)
                           for sign in (-1.0, 1.0)]
    return [turn * factor for factor in SHORTLIST_SCALES for turn in turns]


def _posed(volumes: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``(N, C, Z, Y, X)`` under the linear map ``matrix`` about the grid centre (linear; air enters the view)."""
    if np.allclose(matrix, np.eye(3)):
        return volumes
    centre = (np.array(volumes.shape[2:]) - 1) / 2
    inverse = np.linalg.inv(matrix)
    offset = centre - inverse @ centre
    out = np.empty_like(volumes)
    for i, v in enumerate(volumes):
        for c, channel in enumerate(v):
            out[i, c] = ndimage.affine_transform(channel, inverse, offset=offset, order=1, mode="constant",
                                                 cval=float(channel.min()))
    return out


def _pooled(volumes: np.ndarray, size: int) -> np.ndarray:
    """``(N, C, Z, Y, X)`` averaged over blocks of a whole factor that brings the longest axis to at most ``size``."""
    f = max(1, math.ceil(max(volumes.shape[2:]) / size))
    if f == 1:
        return volumes
    z, y, x = (n // f * f for n in volumes.shape[2:])
    v = volumes[:, :, :z, :y, :x]
    return np.asarray(v.reshape(*v.shape[:2], z // f, f, y // f, f, x // f, f).mean(axis=(3, 5, 7)))


def _in_view(shape: tuple[int, ...], matrix: np.ndarray) -> np.ndarray:
    """Where a volume of ``shape`` under the linear map ``matrix`` about the grid centre still has data (the rest
    came from outside the field of view)."""
    if np.allclose(matrix, np.eye(3)):
        return np.ones(shape, dtype=bool)
    centre = (np.array(shape) - 1) / 2
    inverse = np.linalg.inv(matrix)
    inside = ndimage.affine_transform(np.ones(shape), inverse, offset=centre - inverse @ centre, order=1,
                                      mode="constant", cval=0.0)
    return np.asarray(inside > 0.999)


def centred_candidates(queries: np.ndarray, references: np.ndarray, k: int, size: int = 16) -> np.ndarray:
    """``(Q, k)`` nearest references of each query after both are centred on their centre of mass (on a grid pooled
    to at most ``size`` per axis; ``SHORTLIST_SIZES`` are the audit's) and the query is tried in each of the 8 mirror
    states, magnified by each of ``SHORTLIST_SCALES`` and turned by ``SHORTLIST_TURNS``: a shortlist that no shift,
    mirror, rescaling or turn within the envelope hides a copy from, whatever the distance moved (the dense search
    reaches a few voxels, the embedding what it learnt). The NCC of each pose is taken where the posed query still
    has data: an enlarged copy lost its border, and shrinking it back must not compare air with its source's
    border."""
    queries, references = _pooled(queries, size), _pooled(references, size)
    refs = _centred(references).reshape(len(references), -1).astype(np.float64)
    refs_sq = refs * refs
    centred = _centred(queries)
    channels, shape = queries.shape[1], tuple(queries.shape[2:])
    best = np.full((len(queries), len(references)), -np.inf)
    for pose in _shortlist_poses():
        posed = _posed(centred, pose)
        view = np.broadcast_to(_in_view(shape, pose), (channels, *shape))
        for mirror in MIRRORS:
            w = np.ascontiguousarray(_mirrored(view, mirror)).reshape(-1).astype(np.float64)
            n = max(float(w.sum()), 1.0)
            q = _mirrored(posed, mirror).reshape(len(queries), -1).astype(np.float64)
            q = (q - (q @ w)[:, None] / n) * w  # centred within the view, zero outside
            ref_mean = (refs @ w) / n
            ref_var = np.maximum(refs_sq @ w - n * ref_mean**2, 1e-12)
            q_var = np.maximum((q * q).sum(axis=1), 1e-12)
            best = np.maximum(best, (q @ refs.T) / np.sqrt(q_var[:, None] * ref_var[None, :]))
    return np.argsort(-best, axis=1, kind="stable")[:, :k]


def centred_shortlists(queries: np.ndarray, references: np.ndarray, k: int) -> np.ndarray:
    """``(Q, k * len(SHORTLIST_SIZES))``: ``centred_candidates`` on each of ``SHORTLIST_SIZES``' grids, side by
    side (a reference on both lists appears twice; the search registers it once)."""
    return np.concatenate([centred_candidates(queries, references, k, size) for size in SHORTLIST_SIZES], axis=1)


@dataclass(frozen=True)
class CopyScores:
    """Per query: the best NCC in each region over its candidates, which candidate gave it, and how it was
    aligned (the description of the registration per region's best)."""

    regions: tuple[str, ...]
    ncc: np.ndarray  # (Q, R), NaN where no candidate scored the region
    reference: np.ndarray  # (Q, R) reference index, -1 where none
    alignment: list[list[str]]  # (Q, R) descriptions


def _smoothed_within(x: np.ndarray, inside: np.ndarray, sigma: float) -> np.ndarray:
    """``(C, Z, Y, X)`` smoothed by a Gaussian of ``sigma`` voxels using only the voxels ``inside`` (normalized
    convolution: nothing outside the overlap of a moved case blurs in); unchanged when ``sigma`` is 0."""
    if sigma <= 0:
        return x
    weight = ndimage.gaussian_filter(inside.astype(np.float64), sigma)
    smooth = ndimage.gaussian_filter(x * inside, sigma=(0, sigma, sigma, sigma))
    return np.asarray(smooth / np.maximum(weight, 1e-6))


def registered_templates(references: Sequence[np.ndarray], template: np.ndarray, *, iterations: int = 60,
                         progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """``(N, C, Z, Y, X)``: the template ``(C, Z, Y, X)`` (the mean training volume) registered to each reference,
    itself where the registered template has no data. The same for every search against these references, so an
    audit computes it once (``AuditContext.copy_templates``)."""
    shape = tuple(template.shape[1:])
    out = np.empty((len(references), *template.shape), dtype=np.float32)
    for r, ref in enumerate(references):
        reg = register(ref.mean(axis=0), template.mean(axis=0), iterations=iterations)
        t = warp(template, reg, shape)
        out[r] = np.where(np.isnan(t), template, t)
        if progress:
            progress(r + 1, len(references))
    return out


def search_copies(queries: Sequence[np.ndarray], references: Sequence[np.ndarray], candidates: Sequence[Sequence[int]],
                  template: np.ndarray, settings: CopySearchSettings,
                  progress: Callable[[int, int], None] | None = None,
                  templates: np.ndarray | None = None) -> CopyScores:
    """Register each query ``(C, Z, Y, X)`` (standardized) to each of its candidate references and score every
    region (``CopyScores``). ``template`` is the mean training volume; ``templates`` is it registered to each
    reference (``registered_templates``), computed here when not given."""
    shape = tuple(template.shape[1:])
    regions, masks = region_masks(shape)
    # each region scored twice: on the reference's grid (the query brought onto it) and in the query's frame (the
    # reference brought into it); each kind of score has its own spread among unseen patients, so its own column
    names = regions + tuple(f"{r}, in the case's frame" for r in regions)
    blank = np.full(len(regions), np.nan)
    ncc = np.full((len(queries), len(names)), np.nan)
    ref_of = np.full((len(queries), len(names)), -1, dtype=np.int64)
    how = [["" for _ in names] for _ in queries]

    def keep(qi: int, r: int, scores: np.ndarray, how_found: str) -> None:
        better = np.nan_to_num(scores, nan=-np.inf) > np.nan_to_num(ncc[qi], nan=-np.inf)
        ncc[qi] = np.where(better, scores, ncc[qi])
        ref_of[qi] = np.where(better, r, ref_of[qi])
        for k in np.flatnonzero(better):
            how[qi][k] = how_found

    # a partial copy left in place (half of one patient joined to another, a quarter blanked) pulls a registration
    # weighing the whole field of view off its source, and may rank below the shortlists' look-alikes: every case is
    # also scored as it is, unsmoothed, against every training patient (cheap: no registration, one product)
    if templates is None:
        templates = registered_templates(references, template, iterations=settings.iterations)
    elif templates.shape != (len(references), *template.shape):
        raise ValueError(f"templates of shape {templates.shape} for {len(references)} references of {template.shape}")
    deviations = np.stack(references) - templates
    everywhere = np.ones(shape, dtype=bool)
    for qi, (query, cands) in enumerate(zip(queries, candidates, strict=True)):
        as_is = region_ncc(query, templates, deviations, everywhere, masks)  # (N, R)
        for r in range(len(references)):
            keep(qi, r, np.concatenate([as_is[r], blank]), "as it is (no move)")
        for r in dict.fromkeys(int(c) for c in cands if c >= 0):
            t, ref = templates[r], references[r]
            reg = register(ref.mean(axis=0), query.mean(axis=0), iterations=settings.iterations)
            moved = warp(query, reg, shape)
            overlap = ~np.isnan(moved).any(axis=0)
            if overlap.mean() < MIN_OVERLAP:
                continue
            # the registered case smoothed (resampling blurred it) and as it is
            for sigma in (settings.smoothing, 0.0):
                q_s, t_s, r_s = (_smoothed_within(x, overlap, sigma) for x in (np.nan_to_num(moved), t, ref))
                keep(qi, r, np.concatenate([region_ncc(q_s, t_s, r_s - t_s, overlap, masks), blank]),
                     reg.describe())
            # in the query's frame: the reference and its template brought back by the inverse transform, unsmoothed
            back = warp_back(np.concatenate([ref, t]), reg, shape)
            inside = ~np.isnan(back).any(axis=0)
            if inside.mean() >= MIN_OVERLAP:
                r_b, t_b = np.split(np.nan_to_num(back), 2)
                keep(qi, r, np.concatenate([blank, region_ncc(np.ascontiguousarray(_mirrored(query, reg.mirror)), t_b,
                                                              r_b - t_b, inside, masks)]), reg.describe())
        if progress:
            progress(qi + 1, len(queries))
    return CopyScores(names, ncc, ref_of, how)


def _atanh(x: np.ndarray) -> np.ndarray:
    return np.arctanh(np.clip(x, -0.999999, 0.999999))


EULER_GAMMA = 0.5772156649015329


@dataclass(frozen=True)
class CopyThreshold:
    """The per-copy line, calibrated on unseen patients (see the module docstring)."""

    mean: np.ndarray  # (R,) holdout mean of atanh(NCC) per region
    sd: np.ndarray  # (R,) holdout spread per region
    loc: float  # Gumbel location and scale of the holdout statistics
    scale: float
    threshold: float  # on the statistic
    holdout_max: float
    n_judged: int
    alpha: float

    def statistic(self, ncc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per case: the largest standardized region score and which region gave it (-inf / 0 if none scored)."""
        z = (_atanh(ncc) - self.mean) / self.sd
        z = np.where(np.isnan(z), -np.inf, z)
        return z.max(axis=1), z.argmax(axis=1)

    def ncc_line(self, region: int) -> float:
        """The NCC a case needs in ``region`` alone to be called a copy."""
        return float(np.tanh(self.mean[region] + self.threshold * self.sd[region]))


def calibrate(holdout_ncc: np.ndarray, n_judged: int, alpha: float) -> CopyThreshold:
    """The copy threshold from the holdout's ``(H, R)`` region scores, for judging ``n_judged`` cases."""
    z = _atanh(holdout_ncc)
    if np.isnan(z).all(axis=0).any() or len(z) < 3:
        raise ValueError("too few holdout patients scored in every region to calibrate the copy threshold")
    mean = np.nanmean(z, axis=0)
    sd = np.maximum(np.nanstd(z, axis=0, ddof=1), 1e-3)
    partial = CopyThreshold(mean, sd, 0.0, 1.0, 0.0, 0.0, n_judged, alpha)
    stat = partial.statistic(holdout_ncc)[0]
    stat = stat[np.isfinite(stat)]
    scale = max(float(np.std(stat, ddof=1)) * math.sqrt(6) / math.pi, 1e-3)
    loc = float(np.mean(stat)) - EULER_GAMMA * scale
    p = 1.0 - alpha / max(n_judged, 1)
    line = loc - scale * math.log(-math.log(p))
    return CopyThreshold(mean, sd, loc, scale, max(line, float(stat.max())), float(stat.max()), n_judged, alpha)
