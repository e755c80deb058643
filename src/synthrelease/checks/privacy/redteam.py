"""Red-team copies: training patients disguised by transforms outside the memorization search's envelope.

The pixel search of ``privacy.memorization`` tries a left-right flip, shifts of up to 2 voxels and 5-degree
rotations, and the ``copycat`` negative control perturbs inside that same envelope: a proof built on it is circular
(SCIENCE.md, "Invariance"). This kit makes copies a generator could emit that the old search does not cover: larger
shifts, anterior-posterior and superior-inferior flips, 15-degree rotations, rescaling, smooth warps, blur and noise,
a blanked quarter, half a patient joined to someone else, a tumour transplanted into another body, and two of these
in a row. ``hide_copies`` hides such copies among unseen patients, as a synthetic set an audit must catch them in.

Every transform is a pure function ``Case -> Case`` on the case's own grid: images are resampled linearly, label maps
by nearest neighbour with the same mapping, and what enters the field of view is air (each channel's minimum,
label 0). Random transforms take an explicit seed; the same arguments give the same bytes.

Axes are the array's ``(Z, Y, X)``. On the workspace grid (identity direction, LPS) ``z`` runs inferior -> superior,
``y`` anterior -> posterior and ``x`` right -> left, which is what the region names of ``blank`` assume.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from synthrelease.checks.base import CheckResult
from synthrelease.checks.rois import tumour_mask
from synthrelease.data.case import IDENTITY_DIRECTION, Case, Geometry

__all__ = [
    "AXES",
    "BLANK_REGIONS",
    "COPY_CHECKS",
    "HOSTED_CLASSES",
    "RED_TEAM_CLASSES",
    "Detection",
    "HiddenCopy",
    "RedTeamClass",
    "RedTeamCopy",
    "blank",
    "blur_noise",
    "combined",
    "copies_listed",
    "detect",
    "elastic",
    "elastic_by",
    "flip",
    "half_mix",
    "hide_copies",
    "rotate",
    "shift",
    "tumour_transplant",
    "zoom",
]

AXES: dict[str, int] = {"z": 0, "y": 1, "x": 2}  # array axis of the label map (the image's is one more)
# region -> (axis, whether the region is at the high-index end), on the identity-direction LPS grid
BLANK_REGIONS: dict[str, tuple[str, bool]] = {
    "superior": ("z", True), "inferior": ("z", False), "posterior": ("y", True), "anterior": ("y", False),
    "left": ("x", True), "right": ("x", False)}
# the checks whose evidence["copies"] lists the copies they found (one case at a time, not as a share)
COPY_CHECKS: tuple[str, ...] = ("privacy.memorization", "privacy.mask_memorization", "privacy.tumour_memorization")

Axis = str | int


# -- helpers -----------------------------------------------------------------------------------------------------
def _axis(axis: Axis) -> int:
    """Array axis (0, 1, 2) of the label map from ``"z"``, ``"y"``, ``"x"`` or the integer itself."""
    if isinstance(axis, str):
        if axis not in AXES:
            raise ValueError(f"axis {axis!r} is not one of {sorted(AXES)}")
        return AXES[axis]
    if axis not in (0, 1, 2):
        raise ValueError(f"axis {axis} is not 0, 1 or 2")
    return int(axis)


def _air(image: np.ndarray) -> np.ndarray:
    """``(C,)``: each channel's minimum, the value of what enters the field of view (air)."""
    return image.reshape(image.shape[0], -1).min(axis=1)


def _spacing_zyx(case: Case) -> np.ndarray:
    """Voxel size (mm) per array axis (the geometry stores it as x, y, z)."""
    return np.asarray(case.geometry.spacing[::-1], dtype=np.float64)


def _centre(case: Case) -> np.ndarray:
    return (np.asarray(case.shape, dtype=np.float64) - 1.0) / 2.0


def _affine(case: Case, matrix: np.ndarray, offset: np.ndarray) -> Case:
    """Output voxel ``o`` takes the case's value at ``matrix @ o + offset`` (array index space): linear for the
    image, nearest neighbour for the labels, air outside the field of view."""
    air = _air(case.image)
    image = np.stack([ndimage.affine_transform(case.image[c], matrix, offset, order=1, mode="grid-constant",
                                               cval=float(air[c])) for c in range(case.n_channels)])
    labels = ndimage.affine_transform(case.labels, matrix, offset, order=0, mode="grid-constant", cval=0)
    return case.with_(image=image.astype(np.float32), labels=labels)


def _about_centre(case: Case, matrix: np.ndarray) -> Case:
    """``_affine`` with ``matrix`` acting about the grid's centre (the centre stays where it is)."""
    c = _centre(case)
    return _affine(case, matrix, c - matrix @ c)


# -- transforms ----------------------------------------------------------------------------------------------------
def shift(case: Case, axis: Axis, voxels: float) -> Case:
    """The content moved by ``voxels`` along ``axis`` (positive: towards higher indices). A whole number of voxels
    moves every value exactly; a fraction interpolates."""
    move = np.zeros(3)
    move[_axis(axis)] = float(voxels)
    return _affine(case, np.eye(3), -move)


def flip(case: Case, axis: Axis) -> Case:
    """The case mirrored along ``axis``: ``y`` anterior-posterior, ``z`` superior-inferior, ``x`` left-right."""
    a = _axis(axis)
    return case.with_(image=np.flip(case.image, axis=a + 1).copy(), labels=np.flip(case.labels, axis=a).copy())


def _rotation(i: int, j: int, degrees: float) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def rotate(case: Case, axis: Axis, degrees: float) -> Case:
    """The case rotated by ``degrees`` about ``axis`` through the grid's centre, in millimetres (an anisotropic grid
    is rotated as the body is, not as the voxel array is)."""
    a = _axis(axis)
    i, j = (k for k in range(3) if k != a)
    s = _spacing_zyx(case)
    # the output's physical offset p comes from the source at R^-1 p; in voxels S^-1 R^T S
    matrix = np.diag(1.0 / s) @ _rotation(i, j, degrees).T @ np.diag(s)
    return _about_centre(case, matrix)


def zoom(case: Case, factor: float) -> Case:
    """The case rescaled by ``factor`` about the grid's centre on the same grid (> 1 enlarges: a volume grows by
    ``factor**3``, and what leaves the field of view is lost; < 1 shrinks, and air fills the border)."""
    if factor <= 0:
        raise ValueError(f"zoom factor {factor} must be positive")
    return _about_centre(case, np.eye(3) / float(factor))


def elastic(case: Case, magnitude_voxels: float, seed: int, *, smoothness_voxels: float | None = None) -> Case:
    """The case warped by a smooth random displacement field whose largest displacement is ``magnitude_voxels``.

    The field is white noise per axis smoothed by a Gaussian of ``smoothness_voxels`` (default: an eighth of the
    grid's largest side: a few bulges across the body, not a jitter of single voxels), then scaled to the magnitude.
    """
    rng = np.random.default_rng(seed)
    shape = case.shape
    sigma = max(shape) / 8.0 if smoothness_voxels is None else float(smoothness_voxels)
    field_ = np.stack([ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="reflect") for _ in range(3)])
    peak = float(np.sqrt((field_**2).sum(axis=0)).max())
    field_ *= float(magnitude_voxels) / max(peak, 1e-12)
    coords = np.indices(shape, dtype=np.float64) + field_
    air = _air(case.image)
    image = np.stack([ndimage.map_coordinates(case.image[c], coords, order=1, mode="grid-constant",
                                              cval=float(air[c])) for c in range(case.n_channels)])
    labels = ndimage.map_coordinates(case.labels, coords, order=0, mode="grid-constant", cval=0)
    return case.with_(image=image.astype(np.float32), labels=labels)


def blur_noise(case: Case, sigma: float, noise_std: float, seed: int) -> Case:
    """The image blurred by a Gaussian of ``sigma`` voxels, plus Gaussian noise of ``noise_std`` (image units),
    kept inside each channel's original range (air stays air); the label map is unchanged."""
    rng = np.random.default_rng(seed)
    out = np.empty_like(case.image)
    for c in range(case.n_channels):
        lo, hi = float(case.image[c].min()), float(case.image[c].max())
        blurred = ndimage.gaussian_filter(case.image[c].astype(np.float64), float(sigma), mode="nearest")
        noisy = blurred + float(noise_std) * rng.standard_normal(case.shape)
        out[c] = np.clip(noisy, lo, hi)
    return case.with_(image=out)


def _slab(shape: tuple[int, ...], axis: int, count: int, high: bool) -> tuple[slice, ...]:
    """Index of the ``count`` slices at the low or high end of ``axis`` of a (Z, Y, X) grid."""
    n = shape[axis]
    index = [slice(None)] * 3
    index[axis] = slice(n - count, n) if high else slice(0, count)
    return tuple(index)


def blank(case: Case, fraction: float = 0.25, region: str = "superior") -> Case:
    """``fraction`` of the field of view on the side named by ``region`` (``BLANK_REGIONS``) set to air, labels to
    background: a copy cropped to three quarters of the patient."""
    if region not in BLANK_REGIONS:
        raise ValueError(f"region {region!r} is not one of {sorted(BLANK_REGIONS)}")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction {fraction} must lie strictly between 0 and 1")
    if not np.allclose(case.geometry.direction, IDENTITY_DIRECTION):
        raise ValueError("blank names sides of the workspace grid, whose direction is the identity")
    name, high = BLANK_REGIONS[region]
    axis = AXES[name]
    count = round(fraction * case.shape[axis])
    where = _slab(case.shape, axis, count, high)
    image, labels = case.image.copy(), case.labels.copy()
    air = _air(case.image)
    for c in range(case.n_channels):
        image[c][where] = air[c]
    labels[where] = 0
    return case.with_(image=image, labels=labels)


def _same_grid(a: Case, b: Case) -> None:
    if a.shape != b.shape or a.channel_names != b.channel_names:
        raise ValueError(f"cases {a.case_id} and {b.case_id} differ in grid {a.shape} / {b.shape} or channels")


def half_mix(a: Case, b: Case, axis: Axis) -> Case:
    """The low-index half of ``a`` along ``axis`` joined to the high-index half of ``b`` (image and labels): half a
    patient, the rest someone else."""
    _same_grid(a, b)
    ax = _axis(axis)
    half = _slab(a.shape, ax, a.shape[ax] // 2, False)
    image, labels = b.image.copy(), b.labels.copy()
    image[(slice(None), *half)] = a.image[(slice(None), *half)]
    labels[half] = a.labels[half]
    return a.with_(image=image, labels=labels)


def _centroid(mask: np.ndarray) -> np.ndarray:
    return np.argwhere(mask).mean(axis=0)


def _moved(mask: np.ndarray, offset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Source and destination voxel indices ``(K, 3)`` of ``mask`` moved by the whole-voxel ``offset``, keeping
    the voxels that land inside the grid."""
    src = np.argwhere(mask)
    dst = src + offset.astype(np.int64)
    inside = np.all((dst >= 0) & (dst < np.asarray(mask.shape)), axis=1)
    return src[inside], dst[inside]


def _erase_tumour(host: Case, keep: np.ndarray, margin: int) -> tuple[np.ndarray, np.ndarray]:
    """The host's image and labels with its own tumour gone where ``keep`` (the pasted region) does not cover it:
    labels to background, image to the median of the host's non-tumour tissue within ``margin`` voxels around it
    (so the image shows one tumour, the donor's)."""
    image, labels = host.image.copy(), host.labels.copy()
    own = tumour_mask(host.labels, host.schema)
    if not own.any():
        return image, labels
    ring = ndimage.binary_dilation(own, iterations=max(1, margin)) & ~own
    gone = own & ~keep
    labels[gone] = 0
    for c in range(host.n_channels):
        fill = float(np.median(host.image[c][ring])) if ring.any() else float(np.median(host.image[c]))
        image[c][gone] = fill
    return image, labels


def tumour_transplant(donor: Case, host: Case, *, at: str = "host", margin: int = 2) -> Case:
    """The donor's tumour with ``margin`` voxels of its neighbourhood (image and labels) pasted into the host: at
    the host's own tumour (centroids aligned, to whole voxels; the donor's position if the host has none) with
    ``at="host"``, or at the donor's position with ``at="donor"``. The label map carries the donor's tumour and not
    the host's; voxels pushed past the grid's edge are lost."""
    _same_grid(donor, host)
    if at not in ("host", "donor"):
        raise ValueError(f"at={at!r} is not 'host' or 'donor'")
    tumour = tumour_mask(donor.labels, donor.schema)
    if not tumour.any():
        raise ValueError(f"donor {donor.case_id} has no tumour")
    region = ndimage.distance_transform_edt(~tumour) <= float(margin)
    own = tumour_mask(host.labels, host.schema)
    offset = np.zeros(3)
    if at == "host" and own.any():
        offset = np.round(_centroid(own) - _centroid(tumour))
    src, dst = _moved(region, offset)
    keep = np.zeros(host.shape, dtype=bool)
    keep[tuple(dst.T)] = True
    image, labels = _erase_tumour(host, keep, margin)
    image[(slice(None), *dst.T)] = donor.image[(slice(None), *src.T)]
    labels[tuple(dst.T)] = donor.labels[tuple(src.T)]
    return host.with_(image=image, labels=labels)


def combined(case: Case, first: Callable[[Case], Case], second: Callable[[Case], Case]) -> Case:
    """``second(first(case))``: two transforms in a row (bind their parameters with ``functools.partial``)."""
    return second(first(case))


# -- red-team classes ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RedTeamCopy:
    """One red-team copy and the parameters drawn for it (enough to make it again)."""

    case: Case
    params: dict[str, Any]


# (training patient copied, unseen host for the classes that need another body, rng) -> the copy
RedTeamClass = Callable[[Case, Case, np.random.Generator], RedTeamCopy]


def _pick_axis(rng: np.random.Generator) -> str:
    return str(rng.choice(list(AXES)))


def _sign(rng: np.random.Generator) -> int:
    return int(rng.choice([-1, 1]))


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**31 - 1))


def _shift_by(voxels: float | None, fraction: float | None) -> RedTeamClass:
    """A shift along a random axis in a random direction by ``voxels``, or by ``fraction`` of that axis' size."""
    def make(source: Case, host: Case, rng: np.random.Generator) -> RedTeamCopy:
        axis, sign = _pick_axis(rng), _sign(rng)
        amount = voxels if voxels is not None else float(fraction or 0.0) * source.shape[AXES[axis]]
        return RedTeamCopy(shift(source, axis, sign * amount), {"axis": axis, "voxels": sign * amount})
    return make


def _flip_along(axis: str) -> RedTeamClass:
    def make(source: Case, host: Case, rng: np.random.Generator) -> RedTeamCopy:
        return RedTeamCopy(flip(source, axis), {"axis": axis})
    return make


def _rotate_by(degrees: float) -> RedTeamClass:
    """A rotation by ``degrees`` about a random axis in a random direction."""
    def make(source: Case, host: Case, rng: np.random.Generator) -> RedTeamCopy:
        axis, sign = _pick_axis(rng), _sign(rng)
        return RedTeamCopy(rotate(source, axis, sign * degrees), {"axis": axis, "degrees": sign * degrees})
    return make


def _zoom_by(factor: float) -> RedTeamClass:
    def make(source: Case, host: Case, rng: np.random.Generator) -> RedTeamCopy:
        return RedTeamCopy(zoom(source, factor), {"factor": factor})
    return make


def elastic_by(magnitude: float) -> RedTeamClass:
    """The red-team class of elastic warps whose largest displacement is ``magnitude`` voxels."""
    def make(source: Case, host: Case, rng: np.random.Generator) -> RedTeamCopy:
        seed = _seed(rng)
        return RedTeamCopy(elastic(source, magnitude, seed), {"magnitude_voxels": magnitude, "seed": seed})
    return make


def _blur_noise_by(sigma: float, noise_std: float) -> RedTeamClass:
    def make(source: Case, host: Case, rng: np.random.Generator) -> RedTeamCopy:
        seed = _seed(rng)
        return RedTeamCopy(blur_noise(source, sigma, noise_std, seed),
                           {"sigma": sigma, "noise_std": noise_std, "seed": seed})
    return make


def _blank_by(fraction: float) -> RedTeamClass:
    """A random side of the field of view blanked."""
    def make(source: Case, host: Case, rng: np.random.Generator) -> RedTeamCopy:
        region = str(rng.choice(list(BLANK_REGIONS)))
        return RedTeamCopy(blank(source, fraction, region), {"fraction": fraction, "region": region})
    return make


def _half_mix(source: Case, host: Case, rng: np.random.Generator) -> RedTeamCopy:
    """Half of the training patient (the low-index half of a random axis), the other half the host."""
    axis = _pick_axis(rng)
    return RedTeamCopy(half_mix(source, host, axis), {"axis": axis})


def _transplant(at: str) -> RedTeamClass:
    def make(source: Case, host: Case, rng: np.random.Generator) -> RedTeamCopy:
        return RedTeamCopy(tumour_transplant(source, host, at=at, margin=2), {"at": at, "margin": 2})
    return make


def _rotate_then_shift(degrees: float, voxels: float) -> RedTeamClass:
    """A rotation about one random axis, then a shift along another random axis."""
    def make(source: Case, host: Case, rng: np.random.Generator) -> RedTeamCopy:
        r_axis, r_sign = _pick_axis(rng), _sign(rng)
        s_axis = str(rng.choice([a for a in AXES if a != r_axis]))
        s_sign = _sign(rng)
        case = combined(source, functools.partial(rotate, axis=r_axis, degrees=r_sign * degrees),
                        functools.partial(shift, axis=s_axis, voxels=s_sign * voxels))
        return RedTeamCopy(case, {"rotate": {"axis": r_axis, "degrees": r_sign * degrees},
                                  "shift": {"axis": s_axis, "voxels": s_sign * voxels}})
    return make


# one copy of a training patient per class; half_mix and tumour_transplant also take an unseen host's body
RED_TEAM_CLASSES: dict[str, RedTeamClass] = {
    "shift_4vox": _shift_by(4.0, None),
    "shift_15pct": _shift_by(None, 0.15),
    "flip_ap": _flip_along("y"),
    "flip_si": _flip_along("z"),
    "rotate_15": _rotate_by(15.0),
    "zoom_0.9": _zoom_by(0.9),
    "zoom_1.1": _zoom_by(1.1),
    "elastic_3vox": elastic_by(3.0),
    "blur_noise": _blur_noise_by(1.0, 0.1),
    "blank_quarter": _blank_by(0.25),
    "half_mix": _half_mix,
    "tumour_transplant": _transplant("host"),
    "tumour_transplant_in_place": _transplant("donor"),
    "rotate_10+shift_3vox": _rotate_then_shift(10.0, 3.0),
    "elastic_2vox": elastic_by(2.0),
}
# the classes whose copy carries only part of the training patient inside an unseen host's body
HOSTED_CLASSES: frozenset[str] = frozenset({"half_mix", "tumour_transplant", "tumour_transplant_in_place"})


# -- hiding copies -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HiddenCopy:
    """Ground truth of one hidden copy: its id in the set, its class, the training patient it copies, the unseen
    host whose body carries it (hosted classes) and the parameters drawn."""

    synthetic: str
    red_team_class: str
    train_id: str
    host_id: str | None
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"synthetic": self.synthetic, "class": self.red_team_class, "train_id": self.train_id,
                "host_id": self.host_id, "params": self.params}


def _cycled(rng: np.random.Generator, size: int, n: int) -> list[int]:
    """``n`` indices into ``size`` items: a random order, repeated only once every item has been used."""
    out: list[int] = []
    while len(out) < n:
        out.extend(int(i) for i in rng.permutation(size))
    return out[:n]


def hide_copies(unseen: Sequence[Case], train: Sequence[Case], classes: Sequence[str], n: int, seed: int, *,
                hosts: Sequence[Case] | None = None) -> tuple[list[Case], list[HiddenCopy]]:
    """A synthetic set: every ``unseen`` patient plus ``n`` red-team copies, shuffled, renamed ``syn0000``... .

    Copy ``k`` is of class ``classes[k % len(classes)]``, of a training patient drawn without replacement until
    every one has been used; its random choices come from ``(seed, k)`` alone. Hosted classes take the body of a
    patient drawn from ``hosts``, which should be unseen patients *not* in ``unseen`` (default: ``unseen``, whose
    drawn host then also appears in the set unchanged). Every case of the set gets the first unseen case's geometry
    (or the first training case's) and empty metadata, so neither an id, a header nor an origin tells a copy apart.
    Returns the set and the truth (one ``HiddenCopy`` per copy, in the set's order).
    """
    unknown = [c for c in classes if c not in RED_TEAM_CLASSES]
    if unknown:
        raise ValueError(f"unknown red-team classes {unknown}; known: {sorted(RED_TEAM_CLASSES)}")
    if n > 0 and (not classes or not train):
        raise ValueError("copies need at least one class and one training patient")
    pool = list(hosts) if hosts is not None else list(unseen)
    if n > 0 and not pool and any(classes[k % len(classes)] in HOSTED_CLASSES for k in range(n)):
        raise ValueError("hosted classes need at least one unseen host")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0]))
    sources = _cycled(rng, len(train), n) if n else []
    host_ix = _cycled(rng, len(pool), n) if n and pool else []
    made: list[tuple[Case, HiddenCopy | None]] = [(c, None) for c in unseen]
    for k in range(n):
        name = classes[k % len(classes)]
        source = train[sources[k]]
        host = pool[host_ix[k]] if host_ix else source
        copy = RED_TEAM_CLASSES[name](source, host, np.random.default_rng(np.random.SeedSequence([int(seed), 1, k])))
        made.append((copy.case, HiddenCopy("", name, source.case_id,
                                           host.case_id if name in HOSTED_CLASSES else None, copy.params)))
    order = rng.permutation(len(made))
    reference = unseen[0] if unseen else train[0]
    geometry = Geometry(reference.geometry.spacing, reference.geometry.origin, reference.geometry.direction)
    cases, truth = [], []
    for i, j in enumerate(order):
        case, hidden = made[int(j)]
        case_id = f"syn{i:04d}"
        cases.append(case.with_(case_id=case_id, geometry=geometry, meta={}))
        if hidden is not None:
            truth.append(HiddenCopy(case_id, hidden.red_team_class, hidden.train_id, hidden.host_id, hidden.params))
    return cases, truth


# -- scoring an audit --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Detection:
    """Whether an audit found one hidden copy: the checks that listed it in ``evidence["copies"]``, whether one of
    them named the copied training patient as its nearest, and the highest score any of them gave it."""

    copy: HiddenCopy
    checks: tuple[str, ...]
    named_source: bool
    score: float | None

    @property
    def detected(self) -> bool:
        """Listed as a copy of the right training patient by at least one check."""
        return self.named_source

    def to_dict(self) -> dict[str, Any]:
        return {**self.copy.to_dict(), "detected": self.detected, "checks": list(self.checks),
                "named_source": self.named_source, "score": self.score}


def copies_listed(results: Mapping[str, CheckResult]) -> dict[str, list[dict[str, Any]]]:
    """Per copy check that ran: its ``evidence["copies"]`` (empty when the check lists none or did not run)."""
    return {name: list(results[name].evidence.get("copies", [])) for name in COPY_CHECKS if name in results}


def detect(results: Mapping[str, CheckResult], truth: Sequence[HiddenCopy]) -> list[Detection]:
    """Each hidden copy against the copies the checks listed (``COPY_CHECKS``' ``evidence["copies"]``)."""
    listed = copies_listed(results)
    out = []
    for hidden in truth:
        hits = [(name, e) for name, entries in listed.items() for e in entries
                if e.get("synthetic") == hidden.synthetic]
        scores = [float(e["score"]) for _, e in hits if e.get("score") is not None]
        out.append(Detection(hidden, tuple(sorted({name for name, _ in hits})),
                             any(e.get("nearest_train") == hidden.train_id for _, e in hits),
                             max(scores) if scores else None))
    return out
