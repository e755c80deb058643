"""Preprocessing: put an ingested real case onto the workspace grid and intensity range, and map generated volumes back.

``preprocess_case`` = reorient to identity direction and resample (``resample_case``) -> crop or pad a window placed
around the body (``crop_or_pad``) -> scale intensities to ``[-1, 1]`` (``normalize_intensity``: CT HU window, MRI
per-case percentiles inside the head). What was done to each case is a ``CaseRecord``, kept in the private workspace;
``from_model_range`` with the cohort's ``reference_range`` takes synthetic volumes back to HU / MR scale.

Axes follow ``Case``: arrays ``(C, Z, Y, X)`` / ``(Z, Y, X)``; spacing and origin ``(x, y, z)`` mm, LPS.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from skimage.filters import threshold_otsu

from synthrelease.data.case import IDENTITY_DIRECTION, Case, Geometry
from synthrelease.data.schema import Modality
from synthrelease.errors import DataError, InputError

__all__ = [
    "CT_WINDOWS",
    "CaseRecord",
    "Interpolation",
    "PreprocessConfig",
    "body_mask",
    "crop_or_pad",
    "from_model_range",
    "normalize_intensity",
    "preprocess_case",
    "reference_range",
    "resample_case",
    "to_model_range",
]

CT_WINDOWS: dict[str, tuple[float, float]] = {"soft": (-200.0, 200.0), "wide": (-1000.0, 1000.0)}
CT_PAD_HU = -1024.0
MR_PAD = 0.0
MIN_SHAPE = 8


class Interpolation(StrEnum):
    """Image interpolation for resampling (label maps are always nearest neighbour)."""

    LINEAR = "linear"
    BSPLINE = "bspline"

    @classmethod
    def parse(cls, value: str | Interpolation) -> Interpolation:
        try:
            return cls(str(value.value if isinstance(value, Interpolation) else value).strip().lower())
        except ValueError:
            raise InputError(f"unknown interpolation {value!r}", fix="use 'linear' or 'bspline'") from None


# -- configuration ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PreprocessConfig:
    """Target grid and intensity scaling of a workspace. Validated on construction (``InputError``)."""

    target_spacing: tuple[float, float, float] | None = None  # (x, y, z) mm; None = keep
    target_shape: tuple[int, int, int] | None = None  # (Z, Y, X); None = keep (after resampling)
    interpolation: Interpolation = Interpolation.LINEAR  # images; label maps always nearest neighbour
    ct_window: tuple[float, float] = CT_WINDOWS["soft"]  # HU -> [-1, 1]
    mri_percentiles: tuple[float, float] = (0.1, 99.9)  # inside the head mask -> [-1, 1]

    def __post_init__(self) -> None:
        where = "preprocessing config"
        if self.target_spacing is not None:
            sp = _floats(self.target_spacing, 3, "target_spacing", where)
            if any(not np.isfinite(v) or v <= 0 for v in sp):
                raise InputError(f"target_spacing {list(sp)} is not three positive numbers", where=where,
                                 fix="give the spacing in mm as three positive numbers (x, y, z), e.g. [1, 1, 1]")
            object.__setattr__(self, "target_spacing", sp)
        if self.target_shape is not None:
            try:
                shape = tuple(int(v) for v in self.target_shape)
                exact = all(float(v) == int(v) for v in self.target_shape)
            except (TypeError, ValueError):
                shape, exact = (), False
            if len(shape) != 3 or not exact or min(shape) < MIN_SHAPE:
                raise InputError(f"target_shape {self.target_shape} is not three integers >= {MIN_SHAPE}",
                                 where=where, fix="give the shape as (Z, Y, X), e.g. [128, 128, 128]")
            object.__setattr__(self, "target_shape", shape)
        object.__setattr__(self, "interpolation", Interpolation.parse(self.interpolation))
        lo, hi = _floats(self.ct_window, 2, "ct_window", where)
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise InputError(f"CT window [{lo}, {hi}] needs low < high", where=where,
                             fix="use 'soft' [-200, 200], 'wide' [-1000, 1000] or two HU values, low first")
        object.__setattr__(self, "ct_window", (lo, hi))
        plo, phi = _floats(self.mri_percentiles, 2, "mri_percentiles", where)
        if not 0.0 <= plo < phi <= 100.0:
            raise InputError(f"MRI percentiles [{plo}, {phi}] are not 0 <= low < high <= 100", where=where,
                             fix="use e.g. [0.1, 99.9]")
        object.__setattr__(self, "mri_percentiles", (plo, phi))

    def to_dict(self) -> dict[str, Any]:
        """TOML-safe dict (lists, numbers, strings); ``None`` entries are left out."""
        d: dict[str, Any] = {"interpolation": self.interpolation.value, "ct_window": list(self.ct_window),
                             "mri_percentiles": list(self.mri_percentiles)}
        if self.target_spacing is not None:
            d["target_spacing"] = list(self.target_spacing)
        if self.target_shape is not None:
            d["target_shape"] = list(self.target_shape)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, strict: bool = False) -> PreprocessConfig:
        """Inverse of ``to_dict``; missing keys take their defaults. Other keys (such as the workspace's
        ``reference`` table beside them) are ignored, or an ``InputError`` with ``strict`` (user-written configs)."""
        known = {"target_spacing", "target_shape", "interpolation", "ct_window", "mri_percentiles"}
        unknown = sorted(set(d) - known)
        if unknown and strict:
            raise InputError(f"unknown preprocessing keys {unknown}", where="preprocessing config",
                             fix=f"use only {sorted(known)}")
        kw: dict[str, Any] = {k: (tuple(v) if isinstance(v, list | tuple) else v) for k, v in d.items() if k in known}
        return cls(**kw)

    @classmethod
    def for_modality(
        cls,
        modality: Modality | str,
        *,
        spacing: Sequence[float] | None = None,
        shape: Sequence[int] | None = None,
        ct_window: str | tuple[float, float] = "soft",
        interpolation: str | Interpolation = "linear",
    ) -> PreprocessConfig:
        """The study's settings for a modality; ``ct_window`` is a name of ``CT_WINDOWS`` or ``(low, high)`` HU."""
        mod = Modality.parse(modality)
        window = CT_WINDOWS["soft"]
        if mod is Modality.CT:
            if isinstance(ct_window, str):
                if ct_window not in CT_WINDOWS:
                    raise InputError(f"unknown CT window {ct_window!r}", where="preprocessing config",
                                     fix=f"use one of {sorted(CT_WINDOWS)} or two HU values")
                window = CT_WINDOWS[ct_window]
            else:
                window = _floats(ct_window, 2, "ct_window", "preprocessing config")  # type: ignore[assignment]
        return cls(
            target_spacing=None if spacing is None else tuple(spacing),  # type: ignore[arg-type]
            target_shape=None if shape is None else tuple(shape),  # type: ignore[arg-type]
            interpolation=Interpolation.parse(interpolation),
            ct_window=window,
        )


@dataclass(frozen=True)
class CaseRecord:
    """What preprocessing did to one case (stays inside the private workspace)."""

    crop_start: tuple[int, int, int]  # (Z, Y, X) start of the output window in the resampled grid (< 0: padding)
    resampled_shape: tuple[int, int, int]
    intensity_low: tuple[float, ...]  # per channel: the value mapped to -1
    intensity_high: tuple[float, ...]  # per channel: the value mapped to +1
    labels_lost: dict[str, int] = field(default_factory=dict)  # voxels of each label cut away by the crop

    def to_dict(self) -> dict[str, Any]:
        return {"crop_start": list(self.crop_start), "resampled_shape": list(self.resampled_shape),
                "intensity_low": list(self.intensity_low), "intensity_high": list(self.intensity_high),
                "labels_lost": dict(self.labels_lost)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CaseRecord:
        return cls(
            crop_start=_int3(d["crop_start"]), resampled_shape=_int3(d["resampled_shape"]),
            intensity_low=tuple(float(v) for v in d["intensity_low"]),
            intensity_high=tuple(float(v) for v in d["intensity_high"]),
            labels_lost={str(k): int(v) for k, v in dict(d.get("labels_lost", {})).items()},
        )


# -- body mask ----------------------------------------------------------------------------------------------------
def body_mask(image: np.ndarray, modality: Modality | str) -> np.ndarray:
    """Boolean ``(Z, Y, X)`` mask of the body / head in ``image`` (``(C, Z, Y, X)`` or ``(Z, Y, X)``).

    CT: HU > -500 on the first channel. MRI: Otsu threshold of the channel mean, then a closing. Both keep the
    largest connected component and fill its holes (in 3D, then slice by slice along Z). Empty if nothing is found.
    """
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 3:
        img = img[None]
    if Modality.parse(modality) is Modality.CT:
        mask = img[0] > -500.0
    else:
        mean = img.mean(axis=0)
        if float(mean.max()) <= float(mean.min()):
            return np.zeros(mean.shape, dtype=bool)
        mask = mean > threshold_otsu(mean)
        r = 2  # pad so that the closing does not erode a head that touches the volume border
        closed = ndimage.binary_closing(np.pad(mask, r), structure=ndimage.generate_binary_structure(3, 1),
                                        iterations=r)
        mask = closed[r:-r, r:-r, r:-r]
    lab, n = ndimage.label(mask)
    if n == 0:
        return np.zeros(mask.shape, dtype=bool)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    mask = lab == int(np.argmax(sizes))
    mask = ndimage.binary_fill_holes(mask)
    for z in range(mask.shape[0]):
        mask[z] = ndimage.binary_fill_holes(mask[z])
    return np.asarray(mask, dtype=bool)


# -- resampling ---------------------------------------------------------------------------------------------------
def _to_sitk(arr: np.ndarray, geo: Geometry) -> sitk.Image:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(geo.spacing)
    img.SetOrigin(geo.origin)
    img.SetDirection(geo.direction)
    return img


def _resample(img: sitk.Image, size: np.ndarray, spacing: np.ndarray, origin: np.ndarray,
              interp: int, default: float) -> sitk.Image:
    return sitk.Resample(img, [int(s) for s in size], sitk.Transform(), interp, [float(v) for v in origin],
                         [float(v) for v in spacing], IDENTITY_DIRECTION, float(default), img.GetPixelID())


def resample_case(case: Case, spacing: Sequence[float] | None,
                  interpolation: Interpolation | str = Interpolation.LINEAR) -> Case:
    """``case`` on an identity-direction grid with ``spacing`` (x, y, z mm; ``None`` keeps the spacing).

    Axis-aligned directions (flips, axis permutations) are reoriented with ``sitk.DICOMOrient`` (no interpolation).
    Oblique directions are resampled onto the identity-direction grid covering the same physical extent (spacing
    ``None``: each physical axis takes the spacing of the image axis closest to it; corners outside the scan take the
    channel minimum, label 0). The resampled grid keeps the centre of the scan; its extent changes by under one voxel.
    Images use linear or B-spline interpolation (B-spline clipped to the input's range), label maps nearest neighbour.
    Raises ``DataError`` if a label present in the input vanishes.
    """
    where = f"case {case.case_id}"
    interp = Interpolation.parse(interpolation)
    geo = case.geometry
    d = np.asarray(geo.direction, dtype=float).reshape(3, 3)
    sp_in = np.asarray(geo.spacing, dtype=float)
    imgs = [_to_sitk(case.image[c], geo) for c in range(case.n_channels)]
    labs = _to_sitk(case.labels, geo)
    mins = [float(case.image[c].min()) for c in range(case.n_channels)]
    maxs = [float(case.image[c].max()) for c in range(case.n_channels)]
    img_interp = sitk.sitkLinear if interp is Interpolation.LINEAR else sitk.sitkBSpline3

    axis_aligned = bool(np.all(np.isclose(np.abs(d), 0.0, atol=1e-6) | np.isclose(np.abs(d), 1.0, atol=1e-6)))
    if axis_aligned:
        if not np.allclose(d, np.eye(3), atol=1e-6):
            imgs = [sitk.DICOMOrient(im, "LPS") for im in imgs]
            labs = sitk.DICOMOrient(labs, "LPS")
        size_in = np.asarray(labs.GetSize(), dtype=float)
        sp_cur = np.asarray(labs.GetSpacing(), dtype=float)
        lo = np.asarray(labs.GetOrigin(), dtype=float) - sp_cur / 2.0
        hi = lo + size_in * sp_cur
    else:  # oblique: bounding box of the voxel-corner hull
        size_xyz = np.asarray(case.shape[::-1], dtype=float)
        corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=float)
        idx = corners * size_xyz - 0.5
        phys = np.asarray(geo.origin) + (d @ (idx * sp_in).T).T
        lo, hi = phys.min(axis=0), phys.max(axis=0)
        sp_cur = sp_in[np.argmax(np.abs(d), axis=1)]
    sp_out = sp_cur if spacing is None else np.asarray([float(v) for v in spacing])
    if spacing is not None and (len(sp_out) != 3 or np.any(~np.isfinite(sp_out)) or np.any(sp_out <= 0)):
        raise InputError(f"target spacing {list(spacing)} is not three positive numbers", where=where,
                         fix="give the spacing in mm as three positive numbers (x, y, z)")

    if not axis_aligned or not np.allclose(sp_out, sp_cur, rtol=1e-6, atol=0):
        size_out = np.maximum(1, np.round((hi - lo) / sp_out)).astype(int)
        origin_out = (lo + hi) / 2.0 - (size_out - 1) * sp_out / 2.0
        resampled = [_resample(im, size_out, sp_out, origin_out, img_interp, m) for im, m in zip(imgs, mins,
                                                                                                  strict=True)]
        if interp is Interpolation.BSPLINE:
            resampled = [sitk.Clamp(im, im.GetPixelID(), lo_, hi_) for im, lo_, hi_ in zip(resampled, mins, maxs,
                                                                                             strict=True)]
        imgs = resampled
        labs = _resample(labs, size_out, sp_out, origin_out, sitk.sitkNearestNeighbor, 0)

    labels = sitk.GetArrayFromImage(labs).astype(np.uint8)
    before = set(np.unique(case.labels).tolist())
    lost = sorted(before - set(np.unique(labels).tolist()))
    if lost:
        names = [case.schema.name_of(v) for v in lost]
        raise DataError(f"labels {names} vanish when resampled to spacing {tuple(float(v) for v in sp_out)} mm",
                        where=where, fix="use a finer target spacing (or check these tiny structures)")
    image = np.stack([sitk.GetArrayFromImage(im) for im in imgs]).astype(np.float32)
    new_geo = Geometry(spacing=tuple(labs.GetSpacing()), origin=tuple(labs.GetOrigin()),
                       direction=IDENTITY_DIRECTION)
    return case.with_(image=image, labels=labels, geometry=new_geo)


# -- crop / pad ---------------------------------------------------------------------------------------------------
def _window_start(n: int, w: int, body: tuple[int, int] | None, fg: tuple[int, int] | None) -> int:
    """Start index of a length-``w`` window on an axis of length ``n``: body-centred, labels in, inside the scan."""
    centre = (body[0] + body[1]) / 2.0 if body is not None else (n - 1) / 2.0
    s = int(np.floor(centre - (w - 1) / 2.0 + 0.5))
    if fg is not None and fg[1] - fg[0] + 1 <= w:
        s = min(max(s, fg[1] - w + 1), fg[0])
    return min(max(s, min(0, n - w)), max(0, n - w))


def _bbox(mask: np.ndarray) -> list[tuple[int, int]] | None:
    if not mask.any():
        return None
    out = []
    for ax in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != ax)))
        out.append((int(hit[0]), int(hit[-1])))
    return out


def crop_or_pad(case: Case, shape: Sequence[int], modality: Modality | str | None = None,
                ) -> tuple[Case, tuple[int, int, int], dict[str, int]]:
    """Cut or pad ``case`` to ``shape`` (Z, Y, X) with the window placed around the body.

    Per axis the window is centred on the body-mask bounding box, shifted so that every labelled voxel is inside when
    the labels' bounding box fits, and kept inside the scan where the scan is larger (all of the scan where smaller).
    Padding is -1024 HU for CT and 0 for MRI, label 0. The origin moves so that kept voxels keep their physical
    position. Returns the new case, the window start ``(Z, Y, X)`` (negative = padding) and labelled voxels lost.
    """
    mod = Modality.parse(modality if modality is not None else case.modality)
    shp = _int3(shape)
    if min(shp) < 1:
        raise InputError(f"crop shape {shp} is not three positive integers", where=f"case {case.case_id}")
    body = _bbox(body_mask(case.image, mod))
    fg = _bbox(case.labels > 0)
    start = tuple(
        _window_start(case.shape[a], shp[a], None if body is None else body[a], None if fg is None else fg[a])
        for a in range(3)
    )
    src = tuple(slice(max(s, 0), min(s + w, n)) for s, w, n in zip(start, shp, case.shape, strict=True))
    dst = tuple(slice(sl.start - s, sl.stop - s) for sl, s in zip(src, start, strict=True))
    pad = CT_PAD_HU if mod is Modality.CT else MR_PAD
    image = np.full((case.n_channels, *shp), pad, dtype=np.float32)
    image[(slice(None), *dst)] = case.image[(slice(None), *src)]
    labels = np.zeros(shp, dtype=case.labels.dtype)
    labels[dst] = case.labels[src]
    before = np.bincount(case.labels.ravel(), minlength=256)
    after = np.bincount(labels.ravel(), minlength=256)
    lost = {name: int(before[v] - after[v]) for name, v in case.schema.foreground.items()}
    geo = case.geometry
    d = np.asarray(geo.direction, dtype=float).reshape(3, 3)
    offset = d @ (np.asarray(start[::-1], dtype=float) * np.asarray(geo.spacing))
    new_geo = Geometry(spacing=geo.spacing, origin=tuple(np.asarray(geo.origin) + offset), direction=geo.direction)
    s3 = (int(start[0]), int(start[1]), int(start[2]))
    return case.with_(image=image, labels=labels, geometry=new_geo), s3, lost


# -- intensities --------------------------------------------------------------------------------------------------
def _channel_params(image: np.ndarray, lows: Sequence[float], highs: Sequence[float]
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image as ``(C, ...)`` and lows/highs shaped to broadcast over it; a 3D image with one pair is one channel."""
    arr = np.asarray(image, dtype=np.float64)
    lo = np.asarray(lows, dtype=np.float64).ravel()
    hi = np.asarray(highs, dtype=np.float64).ravel()
    if lo.shape != hi.shape or lo.size == 0:
        raise InputError(f"{lo.size} lows for {hi.size} highs", fix="give one low and one high per channel")
    if arr.ndim == 3 and lo.size == 1:
        arr = arr[None]
    if arr.shape[0] != lo.size:
        raise InputError(f"image has {arr.shape[0]} channels but {lo.size} intensity ranges",
                         fix="give one low and one high per channel (axis 0)")
    if np.any(~np.isfinite(lo)) or np.any(~np.isfinite(hi)) or np.any(hi <= lo):
        raise InputError(f"intensity ranges {lo.tolist()} .. {hi.tolist()} need low < high")
    bshape = (-1,) + (1,) * (arr.ndim - 1)
    return arr, lo.reshape(bshape), hi.reshape(bshape)


def to_model_range(image: np.ndarray, lows: Sequence[float], highs: Sequence[float]) -> np.ndarray:
    """Per channel (axis 0), map ``[low, high]`` linearly to ``[-1, 1]``, clipping outside; float32."""
    arr, lo, hi = _channel_params(image, lows, highs)
    out = np.clip(2.0 * (arr - lo) / (hi - lo) - 1.0, -1.0, 1.0).astype(np.float32)
    return out.reshape(np.shape(image))


def from_model_range(image: np.ndarray, lows: Sequence[float], highs: Sequence[float]) -> np.ndarray:
    """Inverse of ``to_model_range``: ``[-1, 1]`` (clipped) -> ``[low, high]`` per channel (HU for CT); float32."""
    arr, lo, hi = _channel_params(image, lows, highs)
    out = (lo + (np.clip(arr, -1.0, 1.0) + 1.0) * 0.5 * (hi - lo)).astype(np.float32)
    return out.reshape(np.shape(image))


def normalize_intensity(case: Case, config: PreprocessConfig) -> tuple[Case, tuple[float, ...], tuple[float, ...]]:
    """Scale ``case`` to ``[-1, 1]``; returns the case and per-channel values mapped to -1 and +1.

    CT: clip to ``config.ct_window`` (HU). MRI: per channel, the ``config.mri_percentiles`` of the voxels inside the
    head mask; voxels outside the head become -1. Raises ``DataError`` for an MRI with no head or a flat channel.
    """
    c = case.n_channels
    if case.modality is Modality.CT:
        lows, highs = (config.ct_window[0],) * c, (config.ct_window[1],) * c
        return case.with_(image=to_model_range(case.image, lows, highs)), lows, highs
    where = f"case {case.case_id}"
    mask = body_mask(case.image, Modality.MR)
    if not mask.any():
        raise DataError("no head found (the image is flat)", where=where, fix="repair or exclude the scan")
    lo_list, hi_list = [], []
    for ch in range(c):
        lo, hi = np.percentile(case.image[ch][mask], config.mri_percentiles)
        if not hi > lo:
            raise DataError(f"channel {case.channel_names[ch]} is flat inside the head", where=where,
                            fix="repair or exclude the scan")
        lo_list.append(float(lo))
        hi_list.append(float(hi))
    lows, highs = tuple(lo_list), tuple(hi_list)
    out = to_model_range(case.image, lows, highs)
    out[:, ~mask] = -1.0
    return case.with_(image=out), lows, highs


# -- whole pipeline -----------------------------------------------------------------------------------------------
def preprocess_case(case: Case, config: PreprocessConfig) -> tuple[Case, CaseRecord]:
    """Resample -> crop/pad -> normalize. Result: float32 in ``[-1, 1]`` on an identity-direction grid with the
    target spacing, origin at the physical position of the window's first voxel; and the ``CaseRecord``."""
    res = resample_case(case, config.target_spacing, config.interpolation)
    resampled_shape = res.shape
    start: tuple[int, int, int] = (0, 0, 0)
    lost = {name: 0 for name in case.schema.foreground}
    if config.target_shape is not None:
        res, start, lost = crop_or_pad(res, config.target_shape, case.modality)
    out, lows, highs = normalize_intensity(res, config)
    record = CaseRecord(crop_start=start, resampled_shape=resampled_shape, intensity_low=lows,
                        intensity_high=highs, labels_lost=lost)
    return out, record


def reference_range(records: Sequence[CaseRecord]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Cohort reference for the inverse mapping: per-channel median of the records' lows and highs."""
    if not records:
        raise InputError("no preprocessing records to take a reference range from",
                         fix="preprocess at least one case first")
    n = {len(r.intensity_low) for r in records} | {len(r.intensity_high) for r in records}
    if len(n) != 1:
        raise InputError(f"records disagree on the number of channels: {sorted(n)}",
                         fix="use records of one cohort")
    lows = np.median(np.asarray([r.intensity_low for r in records], dtype=float), axis=0)
    highs = np.median(np.asarray([r.intensity_high for r in records], dtype=float), axis=0)
    return tuple(float(v) for v in lows), tuple(float(v) for v in highs)


# -- helpers ------------------------------------------------------------------------------------------------------
def _floats(values: Any, n: int, name: str, where: str) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        out = ()
    if len(out) != n:
        raise InputError(f"{name} {values!r} is not {n} numbers", where=where, fix=f"give {name} as {n} numbers")
    return out


def _int3(values: Sequence[Any]) -> tuple[int, int, int]:
    a, b, c = (int(v) for v in values)
    return (a, b, c)
