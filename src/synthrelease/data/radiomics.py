"""PyRadiomics features of one case from plain arrays: what ``fidelity.radiomics`` runs in its worker processes.

Kept outside ``synthrelease.checks`` on purpose: importing anything there imports the audit context and torch, and a
spawned worker imports the module of the function it runs. Here a worker imports numpy, SimpleITK and pyradiomics
only (well under a second and no torch in memory, against several seconds and a few hundred MB per worker).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["extract_case", "extractors", "init_worker", "pyradiomics_version"]

_EXTRACTORS: dict[str, tuple[Any, Any]] = {}


def _silence() -> None:
    """PyRadiomics logs notes per region (e.g. on GLCM symmetry) through its own handler and the root logger."""
    import radiomics

    radiomics.setVerbosity(logging.ERROR)
    logging.getLogger("radiomics").setLevel(logging.ERROR)


def pyradiomics_version() -> str:
    import radiomics

    return str(radiomics.__version__)


def extractors(params: str) -> tuple[Any, Any]:
    """``(every feature class of the parameter file, the same without shape)``, built once per process and file."""
    if params not in _EXTRACTORS:
        from radiomics import featureextractor

        _silence()
        with warnings.catch_warnings():  # pykwalify, validating the parameter file, loads modules the deprecated way
            warnings.simplefilter("ignore", DeprecationWarning)
            full = featureextractor.RadiomicsFeatureExtractor(params)
            shapeless = featureextractor.RadiomicsFeatureExtractor(params)
        shapeless.disableAllFeatures()
        shapeless.enableFeaturesByName(**{k: v for k, v in full.enabledFeatures.items() if k != "shape"})
        _EXTRACTORS[params] = (full, shapeless)
    return _EXTRACTORS[params]


def init_worker() -> None:
    """One ITK thread per worker process (the pool is the parallelism), PyRadiomics quiet."""
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    _silence()


def extract_case(image: np.ndarray, masks: Mapping[str, np.ndarray], spacing: Sequence[float],
                 channels: Sequence[str], params: str, shapeless: Collection[str] = ()) -> dict[str, float]:
    """Features of one case: ``{"roi/channel/feature": value}`` for ``image`` ``(C, Z, Y, X)`` and boolean region
    ``masks`` ``(Z, Y, X)`` on a grid of ``spacing`` ``(x, y, z)`` mm. Shape features depend on the mask only: they are
    taken once per region, from the first channel, as ``"roi/shape_*"``, and not at all for the regions in
    ``shapeless``. A region that is empty or fails the parameter file's minimum size or dimensions has no entry: it is
    missing for this case, not an error."""
    import SimpleITK as sitk

    full, no_shape = extractors(params)
    sp = tuple(float(s) for s in spacing)
    images = []
    for c in range(len(channels)):
        img = sitk.GetImageFromArray(np.ascontiguousarray(image[c], dtype=np.float32))
        img.SetSpacing(sp)
        images.append(img)
    out: dict[str, float] = {}
    for roi, mask in masks.items():
        if not mask.any():
            continue
        roi_mask = sitk.GetImageFromArray(np.ascontiguousarray(mask, dtype=np.uint8))
        roi_mask.CopyInformation(images[0])
        for c, channel in enumerate(channels):
            extractor = full if c == 0 and roi not in shapeless else no_shape
            try:
                result = extractor.execute(images[c], roi_mask, label=1)
            except ValueError:  # pyradiomics' mask check: below minimumROISize / minimumROIDimensions
                break
            for key, value in result.items():
                if not key.startswith("original_"):
                    continue  # diagnostics (versions, bounding box, ...)
                name = key.removeprefix("original_")
                out[f"{roi}/{name}" if name.startswith("shape_") else f"{roi}/{channel}/{name}"] = float(value)
    return out
