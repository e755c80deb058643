"""The copy search: is a case a copy of a training patient, moved, mirrored, turned, rescaled, blurred or cut, whole
or in part? And the per-copy threshold that judges it.

The dense search of ``AuditContext.pixel_matches`` tries one mirror, shifts of a few voxels and small rotations: the
envelope of the ``copycat`` control, which therefore proves nothing about copies outside it. This search widens the
envelope to what a generator (or a careless export) can plausibly do to a training patient:

1. **Shortlist** per query: the ``candidates`` nearest training patients of the dense pixel search, as many after
   centring both cases on their centre of mass in each of the 8 mirror states (no shift or mirror hides a copy
   from this one), and as many by the contrastive embedding (trained with mirrors on every axis, rotations up to
   15 degrees, shifts up to 15% of the field of view and scaling by up to 15%).
2. **Register** each (query, candidate): each of the 8 mirror states is placed by its centre of mass (image
   moments) and scored on a half-resolution grid; the best is registered to the candidate by a similarity transform
   (rotation, translation, isotropic scale; SimpleITK, correlation metric, on the grid halved, one thread so the
   result is the same on every machine). The population template (mean training volume) is registered to each
   candidate the same way, once.
3. **Score**: the deviations of both cases from the template registered to the candidate, smoothed by ``smoothing``
   voxels (resampling a copy blurs its edges; smoothing both sides removes that difference and keeps the anatomy),
   NCC over the overlap of the field of view, its six halves and its eight octants. A region scores a partial
   copy: one patient's half joined to another's, or a copy with a quarter blanked out.
4. **Calibrate** (``CopyThreshold``): the same search for every holdout patient, who is no copy of anyone. Each
   region's ``atanh(NCC)`` is standardized by the holdout's mean and spread, a case's statistic is its largest
   standardized region, and the threshold is the ``1 - alpha / n`` quantile of a Gumbel law fitted (by moments) to
   the holdout's statistics, ``n`` the number of cases judged: a set of unseen patients is called a copy with
   probability about ``alpha`` in all. The threshold is never below the largest holdout statistic.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

__all__ = ["CopyScores", "CopySearchSettings", "CopyThreshold", "Registration", "calibrate", "centred_candidates",
           "region_masks", "register", "search_copies"]

MIRRORS: tuple[tuple[bool, bool, bool], ...] = tuple((z, y, x) for z in (False, True) for y in (False, True)
                                                     for x in (False, True))  # mirrored on (z, y, x)
MIN_OVERLAP = 0.5  # share of the field of view a registered pair must overlap, or it scores nothing
MIN_REGION = 0.05  # share of the field of view a region's overlap must cover to be scored


@dataclass(frozen=True)
class CopySearchSettings:
    candidates: int = 2  # training patients per query from each shortlist (dense, centred, embedding)
    smoothing: float = 1.5  # Gaussian sigma (voxels of the search grid) applied to both deviations before the NCC
    iterations: int = 40  # optimizer iterations
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


def register(fixed: np.ndarray, moving: np.ndarray, *, iterations: int = 40) -> Registration:
    """Bring ``moving`` ``(Z, Y, X)`` onto ``fixed``: the best mirror state by moments, then a similarity
    registration. Both are shifted to a zero minimum (air) so that the moments weigh tissue, not background."""
    f = _image(fixed - fixed.min())
    f_half = sitk.Shrink(f, [2, 2, 2])
    tried = []
    for mirror in MIRRORS:
        m = _image(_mirrored(moving, mirror) - moving.min())
        init = sitk.CenteredTransformInitializer(f, m, sitk.Similarity3DTransform(),
                                                 sitk.CenteredTransformInitializerFilter.MOMENTS)
        tried.append((_method(init).MetricEvaluate(f_half, sitk.Shrink(m, [2, 2, 2])), mirror, init, m))
    _, mirror, init, m = min(tried, key=lambda t: t[0])  # the correlation metric is negative: lower is better
    reg = _method(init)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-3, numberOfIterations=iterations,
                                                 gradientMagnitudeTolerance=1e-8)
    reg.SetOptimizerScalesFromPhysicalShift()
    # one level on the grid halved (the pose of a whole head is set by its coarse structure); the score is taken on
    # the full grid afterwards
    reg.SetShrinkFactorsPerLevel([2])
    reg.SetSmoothingSigmasPerLevel([1])
    found = reg.Execute(f, m)
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


def region_masks(shape: tuple[int, ...]) -> tuple[tuple[str, ...], np.ndarray]:
    """Names and ``(R, Z*Y*X)`` float masks: the whole field of view, its six halves and its eight octants (axis
    names as preprocessing orients them: z inferior to superior, y, x the patient's left-right axis)."""
    z, y, x = shape
    grids = np.meshgrid(np.arange(z) < z / 2, np.arange(y) < y / 2, np.arange(x) < x / 2, indexing="ij")
    names, masks = ["whole"], [np.ones(shape, bool)]
    for axis, (low, high) in enumerate((("z low", "z high"), ("y low", "y high"), ("x low", "x high"))):
        names += [f"half {low}", f"half {high}"]
        masks += [grids[axis], ~grids[axis]]
    for bits in itertools.product((True, False), repeat=3):
        names.append("octant " + " ".join(f"{a} {'low' if b else 'high'}" for a, b in zip("zyx", bits, strict=True)))
        masks.append(np.logical_and.reduce([g if b else ~g for g, b in zip(grids, bits, strict=True)]))
    return tuple(names), np.stack(masks).reshape(len(masks), -1).astype(np.float64)


def region_ncc(a: np.ndarray, b: np.ndarray, overlap: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """NCC of ``(C, Z, Y, X)`` maps ``a`` and ``b`` over ``overlap`` within each region of ``masks``; NaN where a
    region's overlap is too small to score."""
    w = masks * overlap.reshape(1, -1)  # (R, V)
    n = w.sum(axis=1) * a.shape[0]
    sx = sy = sxx = syy = sxy = 0.0
    for ca, cb in zip(a.reshape(a.shape[0], -1).astype(np.float64), b.reshape(b.shape[0], -1).astype(np.float64),
                      strict=True):
        sx, sy = sx + w @ ca, sy + w @ cb
        sxx, syy, sxy = sxx + w @ (ca * ca), syy + w @ (cb * cb), sxy + w @ (ca * cb)
    safe = np.maximum(n, 1.0)
    var = np.maximum(sxx - sx * sx / safe, 1e-12) * np.maximum(syy - sy * sy / safe, 1e-12)
    ncc = (sxy - sx * sy / safe) / np.sqrt(var)
    return np.where(w.sum(axis=1) >= MIN_REGION * masks.shape[1], np.clip(ncc, -1.0, 1.0), np.nan)


def _centred(volumes: np.ndarray) -> np.ndarray:
    """``(N, C, Z, Y, X)`` each moved by whole voxels so that its centre of mass (of the channel mean above its
    minimum) sits at the grid centre; what enters the view is the volume's minimum."""
    out = np.empty_like(volumes)
    centre = (np.array(volumes.shape[2:]) - 1) / 2
    for i, v in enumerate(volumes):
        weight = v.mean(axis=0) - v.mean(axis=0).min()
        com = np.array(ndimage.center_of_mass(weight)) if weight.sum() > 0 else centre
        move = np.round(centre - com).astype(int)
        out[i] = ndimage.shift(v, (0, *move), order=0, mode="constant", cval=float(v.min()))
    return out


def centred_candidates(queries: np.ndarray, references: np.ndarray, k: int) -> np.ndarray:
    """``(Q, k)`` nearest references of each query after both are centred on their centre of mass and the query is
    tried in each of the 8 mirror states: a shortlist that no shift or mirror can hide a copy from, whatever the
    distance moved (the dense search reaches a few voxels, the embedding what it learnt)."""
    refs = _centred(references).reshape(len(references), -1)
    refs = refs - refs.mean(axis=1, keepdims=True)
    refs /= np.maximum(np.linalg.norm(refs, axis=1, keepdims=True), 1e-12)
    best = np.full((len(queries), len(references)), -np.inf)
    for mirror in MIRRORS:
        q = _centred(_mirrored(queries, mirror).copy()).reshape(len(queries), -1)
        q = q - q.mean(axis=1, keepdims=True)
        q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        best = np.maximum(best, q @ refs.T)
    return np.argsort(-best, axis=1, kind="stable")[:, :k]


@dataclass(frozen=True)
class CopyScores:
    """Per query: the best NCC in each region over its candidates, which candidate gave it, and how it was
    aligned (the description of the registration per region's best)."""

    regions: tuple[str, ...]
    ncc: np.ndarray  # (Q, R), NaN where no candidate scored the region
    reference: np.ndarray  # (Q, R) reference index, -1 where none
    alignment: list[list[str]]  # (Q, R) descriptions


def _smoothed(x: np.ndarray, sigma: float) -> np.ndarray:
    return ndimage.gaussian_filter(x, sigma=(0, sigma, sigma, sigma)) if sigma > 0 else x


def search_copies(queries: Sequence[np.ndarray], references: Sequence[np.ndarray], candidates: Sequence[Sequence[int]],
                  template: np.ndarray, settings: CopySearchSettings,
                  progress: Callable[[int, int], None] | None = None) -> CopyScores:
    """Register each query ``(C, Z, Y, X)`` (standardized) to each of its candidate references and score every
    region (``CopyScores``). ``template`` is the mean training volume; it is registered to each reference once."""
    shape = tuple(template.shape[1:])
    names, masks = region_masks(shape)
    ncc = np.full((len(queries), len(names)), np.nan)
    ref_of = np.full((len(queries), len(names)), -1, dtype=np.int64)
    how = [["" for _ in names] for _ in queries]
    placed: dict[int, np.ndarray] = {}  # reference -> its smoothed deviation from the template registered to it
    aligned_template: dict[int, np.ndarray] = {}

    def reference_side(r: int) -> tuple[np.ndarray, np.ndarray]:
        if r not in placed:
            ref = references[r]
            reg = register(ref.mean(axis=0), template.mean(axis=0), iterations=settings.iterations)
            t = warp(template, reg, shape)
            t = np.where(np.isnan(t), template, t)
            aligned_template[r] = t
            placed[r] = _smoothed(ref - t, settings.smoothing)
        return aligned_template[r], placed[r]

    for qi, (query, cands) in enumerate(zip(queries, candidates, strict=True)):
        for r in dict.fromkeys(int(c) for c in cands if c >= 0):
            t, ref_dev = reference_side(r)
            reg = register(references[r].mean(axis=0), query.mean(axis=0), iterations=settings.iterations)
            moved = warp(query, reg, shape)
            overlap = ~np.isnan(moved).any(axis=0)
            if overlap.mean() < MIN_OVERLAP:
                continue
            dev = _smoothed(np.where(overlap, moved, t) - t, settings.smoothing)
            scores = region_ncc(dev, ref_dev, overlap, masks)
            better = np.nan_to_num(scores, nan=-np.inf) > np.nan_to_num(ncc[qi], nan=-np.inf)
            ncc[qi] = np.where(better, scores, ncc[qi])
            ref_of[qi] = np.where(better, r, ref_of[qi])
            for k in np.flatnonzero(better):
                how[qi][k] = reg.describe()
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
