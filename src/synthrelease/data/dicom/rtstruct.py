"""RT Structure Set: rasterize CLOSED_PLANAR contours onto an image grid, and write one from a label map.

ROI names map to label values through an ordered ``roi_map`` of ``(value, pattern)`` pairs; a pattern is an
``fnmatch`` pattern, case-insensitive, with alternatives separated by ``|``. ROIs are painted in list order (a later
entry overwrites an earlier one); ROIs that match no entry are ignored and counted.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.charset import convert_encodings
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID, ExplicitVRLittleEndian, RTStructureSetStorage
from skimage.draw import polygon
from skimage.measure import find_contours

from synthrelease.data.case import Geometry
from synthrelease.data.dicom.deid import derived_uid
from synthrelease.data.dicom.fast import (
    ContourItem,
    contour_sequence_element,
    new_item,
    read_contours,
    read_ds_array,
)
from synthrelease.data.dicom.series import affine_of, plant_identity, slice_normal
from synthrelease.data.phantoms.identity import FakeIdentity
from synthrelease.data.schema import Modality
from synthrelease.errors import DicomError, InputError

__all__ = [
    "default_roi_map",
    "match_roi",
    "parse_roi_map",
    "read_rtstruct",
    "referenced_series_uids",
    "write_rtstruct",
]

log = logging.getLogger(__name__)
RoiMap = Sequence[tuple[int, str]]

_CONTOUR_DATA = 0x30060050
_CONTOUR_SEQUENCE = 0x30060040
_CT_MAP: list[tuple[int, str]] = [(2, "Mandible*|Bone*|Vertebra*|C[1-7]*|Skull*"), (1, "GTV*|Tumo*")]
_MR_MAP: list[tuple[int, str]] = [(2, "SNFH|Edema|Oedema*|FLAIR*"), (1, "NCR|Necro*"), (3, "ET|Enhanc*")]


def default_roi_map(modality: Modality | str) -> list[tuple[int, str]]:
    """The study's ROI-name patterns: CT bone then tumour (tumour wins); MR SNFH, NCR, ET (ET wins)."""
    return list(_CT_MAP if Modality.parse(modality) is Modality.CT else _MR_MAP)


def parse_roi_map(text: str) -> list[tuple[int, str]]:
    """Parse ``"1=GTV*;2=Mandible|Bone*"`` into ``[(1, "GTV*"), (2, "Mandible|Bone*")]`` (order kept)."""
    fix = 'write VALUE=PATTERN pairs separated by ";", e.g. "1=GTV*;2=Mandible|Bone*" (values 1..255)'
    out: list[tuple[int, str]] = []
    for part in (p.strip() for p in str(text).split(";")):
        if not part:
            continue
        m = re.fullmatch(r"\s*(\d+)\s*=\s*(\S(?:.*\S)?)\s*", part)
        if m is None or not 1 <= int(m.group(1)) <= 255 or any(not a.strip() for a in m.group(2).split("|")):
            raise InputError(f"cannot read ROI map entry {part!r}", where="--roi-map", fix=fix)
        out.append((int(m.group(1)), m.group(2)))
    if not out:
        raise InputError("ROI map is empty", where="--roi-map", fix=fix)
    return out


def match_roi(name: str, roi_map: RoiMap) -> list[int]:
    """Indices into ``roi_map`` whose pattern matches ROI ``name`` (case-insensitive)."""
    key = name.strip().lower()
    return [i for i, (_, pat) in enumerate(roi_map)
            if any(fnmatchcase(key, alt.strip().lower()) for alt in pat.split("|"))]


def referenced_series_uids(ds: Dataset) -> set[str]:
    """Series UIDs an RTSTRUCT refers to (through its referenced frame of reference sequence)."""
    uids: set[str] = set()
    for fr in ds.get("ReferencedFrameOfReferenceSequence", []):
        for study in fr.get("RTReferencedStudySequence", []):
            for series in study.get("RTReferencedSeriesSequence", []):
                if "SeriesInstanceUID" in series:
                    uids.add(str(series.SeriesInstanceUID))
    return uids


def _contours(roi_contour: Dataset) -> list[tuple[str, np.ndarray | None]]:
    """(geometric type, contour numbers) of each contour of an ROI: parsed straight from the sequence bytes where
    they are plain explicit VR little endian, else through pydicom (the same values either way)."""
    fast = read_contours(roi_contour)
    if fast is not None:
        return fast
    return [(str(c.get("ContourGeometricType", "")), read_ds_array(c, _CONTOUR_DATA))
            for c in roi_contour.get("ContourSequence", [])]


def _rasterize(contours: list[np.ndarray], inverse: np.ndarray, shape: tuple[int, int, int]) -> tuple[np.ndarray, int]:
    """Even-odd fill of contours (N, 3 mm) per slice; returns the mask and the number of contours off the grid."""
    mask = np.zeros(shape, dtype=bool)
    off = 0
    for pts in contours:
        homogeneous = np.empty((len(pts), 4))
        homogeneous[:, :3], homogeneous[:, 3] = pts, 1.0
        idx = (inverse @ homogeneous.T)[:3]  # rows: i (x), j (y), k (z)
        k = np.round(idx[2])
        if np.ptp(idx[2]) > 0.5 or not 0 <= k[0] < shape[0]:
            off += 1
            continue
        rr, cc = polygon(idx[1], idx[0], shape=shape[1:])
        plane = np.zeros(shape[1:], dtype=bool)
        plane[rr, cc] = True
        mask[int(k[0])] ^= plane
    return mask, off


def read_rtstruct(path: Path, image_geometry: Geometry, shape: tuple[int, int, int], series_uid: str | None,
                  roi_map: RoiMap, *, report: dict[str, Any] | None = None) -> np.ndarray:
    """Rasterize an RTSTRUCT onto the image grid: a ``(Z, Y, X)`` uint8 label map.

    ``series_uid`` is the image series the structure set must reference (``None`` skips the check).
    ``report``, if given, receives ``matched`` / ``unmatched`` ROI counts and ``off_grid`` contours.
    """
    try:
        ds = dcmread(path)
    except Exception as exc:
        raise DicomError(f"is not a readable DICOM file ({type(exc).__name__})", where=path,
                         fix="replace it with an intact copy or remove it") from None
    if str(ds.get("Modality", "")) != "RTSTRUCT" or "StructureSetROISequence" not in ds:
        raise DicomError("is not an RT Structure Set", where=path, fix="pass the RTSTRUCT file of the series")
    refs = referenced_series_uids(ds)
    if series_uid is not None and refs and series_uid not in refs:
        raise DicomError("structure set references another series", where=path,
                         fix="put the matching image series beside it")
    names = {int(r.ROINumber): str(r.get("ROIName", "")) for r in ds.StructureSetROISequence}
    contours: dict[int, list[np.ndarray]] = {}
    for rc in ds.get("ROIContourSequence", []):
        for gtype, values in _contours(rc):
            if gtype.upper() != "CLOSED_PLANAR" or values is None or not values.size:
                continue
            if values.size % 3:
                raise DicomError(f"contour data holds {values.size} numbers, not x/y/z triplets", where=path,
                                 fix="repair or re-export the structure set")
            contours.setdefault(int(rc.ReferencedROINumber), []).append(values.reshape(-1, 3))
    inverse = np.linalg.inv(affine_of(image_geometry))
    labels = np.zeros(shape, dtype=np.uint8)
    unmatched = sum(1 for name in names.values() if not match_roi(name, roi_map))
    off_total = 0
    for i, (value, _) in enumerate(roi_map):
        for number, name in sorted(names.items()):
            if i in match_roi(name, roi_map) and number in contours:
                mask, off = _rasterize(contours[number], inverse, shape)
                labels[mask] = value
                off_total += off
    if unmatched:
        log.info("%s: %d ROI(s) match no ROI-map pattern and were ignored", Path(path).name, unmatched)
    if report is not None:
        report.update(matched=len(names) - unmatched, unmatched=unmatched, off_grid=off_total)
    return labels


def _slice_contours(mask2d: np.ndarray) -> list[np.ndarray]:
    """Closed contours (row, col) of a binary slice; the 0.5 iso-line between inside and outside pixel centres."""
    padded = np.pad(mask2d.astype(np.float32), 1)
    return [c - 1.0 for c in find_contours(padded, 0.5) if len(c) >= 4]


def write_rtstruct(labels: np.ndarray, geometry: Geometry, image_datasets: Sequence[Dataset],
                   roi_names: Mapping[int, str], out_path: Path, identity: FakeIdentity | None = None) -> Path:
    """Write an RT Structure Set (one ROI per label value in ``roi_names``) referencing ``image_datasets``.

    Patient and study attributes are copied from the first image; ``identity`` (if given) is planted as well.
    UIDs derive from the image series UID, so the same images give byte-identical output.
    """
    ref = image_datasets[0]
    normal = slice_normal(ref)
    by_k: dict[int, Dataset] = {}
    origin_proj = float(np.dot(normal, geometry.origin))
    for ds in image_datasets:
        k = round((float(np.dot(normal, [float(v) for v in ds.ImagePositionPatient])) - origin_proj)
                  / geometry.spacing[2])
        by_k[k] = ds
    series_uid = str(ref.SeriesInstanceUID)

    def uid(role: str) -> str:
        return derived_uid(series_uid, "rtstruct", role)

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = RTStructureSetStorage
    ds.file_meta.MediaStorageSOPInstanceUID = UID(uid("sop"))
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID, ds.SOPInstanceUID = RTStructureSetStorage, ds.file_meta.MediaStorageSOPInstanceUID
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
               "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName", "Manufacturer",
               "InstitutionName"):
        if kw in ref:
            setattr(ds, kw, ref[kw].value)
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = uid("series"), 900, 1
    ds.StructureSetLabel = "SYNTHRELEASE"
    ds.StructureSetDate, ds.StructureSetTime = ref.get("StudyDate", ""), ref.get("StudyTime", "")
    if identity is not None:
        plant_identity(ds, identity)
    contour_images = []
    for k in sorted(by_k):
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = by_k[k].SOPClassUID, by_k[k].SOPInstanceUID
        contour_images.append(item)
    rs = Dataset()
    rs.SeriesInstanceUID, rs.ContourImageSequence = series_uid, DicomSequence(contour_images)
    study = Dataset()
    study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management (retired, customary)
    study.ReferencedSOPInstanceUID = ref.StudyInstanceUID
    study.RTReferencedSeriesSequence = DicomSequence([rs])
    frame = Dataset()
    frame.FrameOfReferenceUID = ref.FrameOfReferenceUID
    frame.RTReferencedStudySequence = DicomSequence([study])
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([frame])

    affine = affine_of(geometry)
    rois, roi_contours, observations = [], [], []
    for number, (value, name) in enumerate(sorted(roi_names.items()), start=1):
        roi = Dataset()
        roi.ROINumber, roi.ReferencedFrameOfReferenceUID = number, ref.FrameOfReferenceUID
        roi.ROIName, roi.ROIGenerationAlgorithm = name, "AUTOMATIC"
        rois.append(roi)
        items = []
        for k in range(labels.shape[0]):
            for rc in _slice_contours(labels[k] == value):
                ijk1 = np.empty((len(rc), 4))  # columns i (x), j (y), k (z), 1
                ijk1[:, 0], ijk1[:, 1], ijk1[:, 2], ijk1[:, 3] = rc[:, 1], rc[:, 0], k, 1.0
                mm = (affine @ ijk1.T)[:3].T
                img = by_k.get(k)
                items.append(ContourItem(mm, *((str(img.SOPClassUID), str(img.SOPInstanceUID)) if img else ())))
        rcd = new_item()  # its raw ContourSequence is written as it is: no pydicom object per contour or value
        rcd.ROIDisplayColor = [[255, 0, 0], [230, 230, 200], [0, 160, 255], [0, 200, 0]][value % 4]
        rcd.ReferencedROINumber = number
        rcd[_CONTOUR_SEQUENCE] = contour_sequence_element(items)
        roi_contours.append(rcd)
        obs = Dataset()
        obs.ObservationNumber, obs.ReferencedROINumber = number, number
        obs.RTROIInterpretedType, obs.ROIInterpreter = ("GTV" if name.upper().startswith("GTV") else "ORGAN"), ""
        observations.append(obs)
    ds.StructureSetROISequence = DicomSequence(rois)
    ds.ROIContourSequence = DicomSequence(roi_contours)
    ds.RTROIObservationsSequence = DicomSequence(observations)
    # Mark the new dataset as explicit VR little endian in its own character set (what it is written as): pydicom
    # then writes the raw contour sequences as they are instead of decoding every item to check for ambiguous VRs
    # (this dataset has none). Same bytes either way; only faster.
    ds.set_original_encoding(False, True, convert_encodings(ds.SpecificCharacterSet))
    out_path = Path(out_path)
    ds.save_as(out_path, enforce_file_format=True)
    return out_path
