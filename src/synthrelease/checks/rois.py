"""What the fidelity checks share: every case on one intensity scale (the model range ``[-1, 1]``), its body mask
and its regions of interest.

Workspace cohorts differ in scale: preprocessed real cases are stored in ``[-1, 1]``, sampled sets in HU / the
cohort's MR scale, and sets from other tools in whatever they use. ``model_image`` brings each case to ``[-1, 1]``:
a case already there (every voxel in ``[-1, 1]`` with background at -1) is kept; otherwise it is mapped with the
workspace's intensity reference (the exact inverse of sampling), or, without one, with the default preprocessing
of its modality (CT soft-tissue window, MRI head percentiles), as ingest does. The paired MAE of the study is taken
on this scale.

Regions of interest: each foreground label (CT: ``tumour``, ``bone``; BraTS: ``NCR``, ``SNFH``, ``ET``) and
``tissue`` = the body (head) minus every label (soft tissue for CT, brain and head for MRI). The ``tumour`` of the
label statistics is the label named ``tumour`` if there is one, else the whole-tumour region ``WT``, else the union
of every foreground label.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from synthrelease.data.case import Case
from synthrelease.data.preprocess import PreprocessConfig, normalize_intensity, to_model_range
from synthrelease.data.schema import LabelSchema

__all__ = ["TISSUE", "IntensityReference", "body_from_model", "in_model_range", "model_image", "roi_masks",
           "roi_names", "tumour_mask", "tumour_values"]

IntensityReference = tuple[Sequence[float], Sequence[float]]
TISSUE = "tissue"
_EPS = 1e-3


def in_model_range(image: np.ndarray) -> bool:
    """True when every voxel lies in ``[-1, 1]`` and the background sits at -1 (a preprocessed case)."""
    lo, hi = float(image.min()), float(image.max())
    return lo >= -1 - _EPS and hi <= 1 + _EPS and lo <= -1 + 0.01


def model_image(case: Case, reference: IntensityReference | None = None) -> np.ndarray:
    """The case's image channels on the model range ``[-1, 1]`` (float32, ``(C, Z, Y, X)``)."""
    image = np.asarray(case.image, dtype=np.float32)
    if in_model_range(image):
        return np.clip(image, -1.0, 1.0)
    if reference is not None:
        lows, highs = reference
        return to_model_range(image, lows, highs)
    config = PreprocessConfig.for_modality(case.modality)
    return np.asarray(normalize_intensity(case, config)[0].image, dtype=np.float32)


BODY_LEVEL = -0.9  # CT soft window: -180 HU (fat at -100 HU lies above); MRI: the head's darkest 5% of range


def body_from_model(image: np.ndarray) -> np.ndarray:
    """Body / head mask of a model-range image: the channel mean, smoothed (sigma 1 voxel, so that noise in the air
    of a generated volume does not join the background to the body), above ``BODY_LEVEL``; largest component,
    holes filled."""
    mean = np.asarray(image, dtype=np.float32).mean(axis=0) if image.ndim == 4 else np.asarray(image, np.float32)
    mask = ndimage.gaussian_filter(mean, 1.0) > BODY_LEVEL
    lab, n = ndimage.label(mask)
    if n == 0:
        return np.zeros(mask.shape, dtype=bool)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return np.asarray(ndimage.binary_fill_holes(lab == int(np.argmax(sizes))), dtype=bool)


def roi_names(schema: LabelSchema) -> list[str]:
    """Foreground label names, then ``tissue``."""
    return [*schema.foreground, TISSUE]


def roi_masks(labels: np.ndarray, body: np.ndarray, schema: LabelSchema) -> dict[str, np.ndarray]:
    """Boolean mask of each region of interest (``roi_names`` order)."""
    out = {name: labels == v for name, v in schema.foreground.items()}
    out[TISSUE] = body & (labels == 0)
    return out


def tumour_values(schema: LabelSchema) -> tuple[str, tuple[int, ...]]:
    """The name and label values of the lesion whose count and position the label statistics compare."""
    fg = schema.foreground
    for name in ("tumour", "tumor", "GTV", "gtv"):
        if name in fg:
            return name, (fg[name],)
    if "WT" in schema.regions:
        return "WT", tuple(schema.regions["WT"])
    return "foreground", tuple(fg.values())


def tumour_mask(labels: np.ndarray, schema: LabelSchema) -> np.ndarray:
    return np.isin(labels, tumour_values(schema)[1])
