"""DICOM Segmentation (SEG) objects via highdicom: read onto an image grid, write from a label map.

Segments map to label values through the same ``roi_map`` patterns as RTSTRUCT ROI names (matched against the
SegmentLabel), painted in ``roi_map`` order (later wins). Written SEGs are BINARY with one segment per label value.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code
from pydicom.valuerep import DA, TM

from synthrelease.data.case import Geometry
from synthrelease.data.dicom.deid import derived_uid
from synthrelease.data.dicom.rtstruct import RoiMap, match_roi
from synthrelease.data.dicom.series import affine_of, plant_identity, sort_slices
from synthrelease.data.phantoms.identity import FakeIdentity
from synthrelease.errors import DicomError, InputError

__all__ = ["read_seg", "referenced_series_uids_seg", "write_seg"]

log = logging.getLogger(__name__)

_ABNORMAL = Code("49755003", "SCT", "Morphologically Abnormal Structure")
_ANATOMY = Code("91723000", "SCT", "Anatomical Structure")
_TYPES: list[tuple[tuple[str, ...], Code, Code]] = [
    (("BONE", "MANDIBLE", "VERTEBRA", "SKULL"), _ANATOMY, Code("272673000", "SCT", "Bone")),
    (("SNFH", "EDEMA", "OEDEMA"), _ABNORMAL, Code("79654002", "SCT", "Edema")),
    (("NCR", "NECRO"), _ABNORMAL, Code("6574001", "SCT", "Necrosis")),
]
_NEOPLASM = Code("108369006", "SCT", "Neoplasm")


def _codes(name: str) -> tuple[Code, Code]:
    upper = name.upper()
    for keys, category, kind in _TYPES:
        if any(upper.startswith(k) for k in keys):
            return category, kind
    return _ABNORMAL, _NEOPLASM


def referenced_series_uids_seg(ds: Dataset) -> set[str]:
    """Series UIDs a SEG refers to (ReferencedSeriesSequence, plus the common-instance reference module)."""
    uids = {str(s.SeriesInstanceUID) for s in ds.get("ReferencedSeriesSequence", []) if "SeriesInstanceUID" in s}
    for study in ds.get("StudiesContainingOtherReferencedInstancesSequence", []):
        uids |= {str(s.SeriesInstanceUID) for s in study.get("ReferencedSeriesSequence", [])}
    return uids


def _read(path: Path) -> hd.seg.Segmentation:
    try:
        return hd.seg.segread(path)
    except Exception as exc:
        raise DicomError(f"is not a readable DICOM Segmentation ({type(exc).__name__})", where=path,
                         fix="replace it with an intact SEG file or remove it") from None


def _by_position(seg: hd.seg.Segmentation, geometry: Geometry, shape: tuple[int, int, int],
                 path: Path) -> dict[int, np.ndarray]:
    """Per-segment masks placed by each frame's plane position (for SEGs read without the source images)."""
    inverse = np.linalg.inv(affine_of(geometry))
    frames = np.asarray(seg.pixel_array).reshape(-1, int(seg.Rows), int(seg.Columns))
    if frames.shape[1:] != shape[1:]:
        raise DicomError(f"frames are {frames.shape[1:]} but the image slices are {shape[1:]}", where=path,
                         fix="use a SEG made on the image grid of this series")
    masks: dict[int, np.ndarray] = {}
    for f, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        ipp = [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        i, j, k = (inverse @ np.r_[ipp, 1.0])[:3]
        if abs(i) > 0.05 or abs(j) > 0.05 or abs(k - round(k)) > 0.05 or not 0 <= round(k) < shape[0]:
            raise DicomError("a frame does not lie on the image grid", where=path,
                             fix="use a SEG made on the image grid of this series (or resample it)")
        masks.setdefault(number, np.zeros(shape, dtype=bool))[round(k)] |= frames[f] > 0
    return masks


def read_seg(path: Path, image_datasets_or_series_uid: Sequence[Dataset] | str, shape: tuple[int, int, int],
             roi_map: RoiMap, *, geometry: Geometry | None = None,
             report: dict[str, Any] | None = None) -> np.ndarray:
    """Read a SEG into a ``(Z, Y, X)`` uint8 label map on the image grid.

    Pass the image series' datasets (headers suffice; sorted or not) to match frames by source instance, or the
    series UID plus ``geometry`` to place frames by their plane positions.
    """
    path = Path(path)
    seg = _read(path)
    numbers = [int(n) for n in seg.segment_numbers]
    if isinstance(image_datasets_or_series_uid, str):
        series_uid = image_datasets_or_series_uid
        if geometry is None:
            raise InputError("read_seg needs geometry when given a series UID", where=path,
                             fix="pass geometry= (or the image datasets)")
    else:
        slices = sort_slices(list(image_datasets_or_series_uid))
        series_uid = str(slices[0].SeriesInstanceUID)
    refs = referenced_series_uids_seg(seg)
    if refs and series_uid not in refs:
        raise DicomError("segmentation references another series", where=path,
                         fix="put the matching image series beside it")
    if isinstance(image_datasets_or_series_uid, str):
        assert geometry is not None
        masks = _by_position(seg, geometry, shape, path)
    else:
        try:
            stack = seg.get_pixels_by_source_instance(
                [str(d.SOPInstanceUID) for d in slices], segment_numbers=numbers, combine_segments=False,
                ignore_spatial_locations=True, assert_missing_frames_are_empty=True, skip_overlap_checks=True)
        except (ValueError, KeyError, IndexError, RuntimeError) as exc:
            raise DicomError(f"frames cannot be matched to the image slices ({type(exc).__name__})", where=path,
                             fix="use a SEG that references the slices of this series") from None
        stack = np.asarray(stack)
        if stack.shape[:3] != tuple(shape):
            raise DicomError(f"segmentation grid {stack.shape[:3]} differs from the image grid {tuple(shape)}",
                             where=path, fix="use a SEG made on the image grid of this series")
        masks = {n: stack[..., i] > (0.5 if stack.dtype.kind == "f" else 0) for i, n in enumerate(numbers)}
    names = {n: str(seg.get_segment_description(n).segment_label) for n in numbers}
    labels = np.zeros(shape, dtype=np.uint8)
    for i, (value, _) in enumerate(roi_map):
        for n in numbers:
            if i in match_roi(names[n], roi_map) and n in masks:
                labels[masks[n]] = value
    unmatched = sum(1 for n in numbers if not match_roi(names[n], roi_map))
    if unmatched:
        log.info("%s: %d segment(s) match no ROI-map pattern and were ignored", path.name, unmatched)
    if report is not None:
        report.update(matched=len(numbers) - unmatched, unmatched=unmatched, off_grid=0)
    return labels


def write_seg(labels: np.ndarray, image_datasets: Sequence[Dataset], roi_names: Mapping[int, str],
              out_path: Path, *, identity: FakeIdentity | None = None) -> Path:
    """Write a BINARY SEG, one segment per label value in ``roi_names``, on the grid of ``image_datasets``.

    ``labels[k]`` is the slice ``sort_slices(image_datasets)[k]`` (the order ``read_image_series`` returns).
    UIDs derive from the image series UID and dates from the images, so equal inputs give equal bytes.
    """
    slices = sort_slices(list(image_datasets))
    if labels.shape != (len(slices), int(slices[0].Rows), int(slices[0].Columns)):
        raise DicomError(f"label map {labels.shape} does not fit {len(slices)} slices of "
                         f"{slices[0].Rows}x{slices[0].Columns}", where=out_path, fix="pass the matching images")
    values = sorted(roi_names)
    segmap = np.zeros(labels.shape, dtype=np.uint8)
    descriptions = []
    for number, value in enumerate(values, start=1):
        segmap[labels == value] = number
        category, kind = _codes(roi_names[value])
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=roi_names[value], segmented_property_category=category,
            segmented_property_type=kind, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL))
    series_uid = str(slices[0].SeriesInstanceUID)
    date, time = str(slices[0].get("StudyDate", "20000101")), str(slices[0].get("StudyTime", "000000"))
    seg = hd.seg.Segmentation(
        source_images=slices, pixel_array=segmap, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=derived_uid(series_uid, "seg", "series"),
        series_number=901,
        sop_instance_uid=derived_uid(series_uid, "seg", "sop"),
        instance_number=1, manufacturer="SYNTHRELEASE", manufacturer_model_name="synthrelease phantom",
        software_versions="1", device_serial_number="0", content_date=date, content_time=time,
        content_label="SYNTHRELEASE", omit_empty_frames=True)
    # highdicom stamps now() and a random dimension-organization UID: pin them so equal inputs give equal bytes
    seg.InstanceCreationDate, seg.InstanceCreationTime = DA(date), TM(time)
    for elem in seg.iterall():
        if elem.keyword == "ContributionDateTime":
            elem.value = f"{date}{time}"
        elif elem.keyword == "DimensionOrganizationUID":
            elem.value = derived_uid(series_uid, "seg", "dimension-organization")
    if identity is not None:
        plant_identity(seg, identity)
    out_path = Path(out_path)
    seg.save_as(out_path)
    return out_path
