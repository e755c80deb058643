"""Read a single-frame CT/MR image series into a (Z, Y, X) volume with its physical geometry.

Conventions match SimpleITK's ``ImageSeriesReader``: slices sorted by position along the slice normal
``n = row x col`` (ascending), origin = ``ImagePositionPatient`` of the first slice, spacing ``(x, y, z)`` =
(column spacing, row spacing, slice step), direction columns = (row cosines, column cosines, normal).
Also holds small helpers shared by the RTSTRUCT/SEG readers and the phantom writer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from synthrelease.data.case import Geometry
from synthrelease.data.phantoms.identity import FakeIdentity
from synthrelease.data.schema import Modality
from synthrelease.errors import DicomError

__all__ = [
    "PRIVATE_CREATOR",
    "affine_of",
    "geometry_of_slices",
    "load_series",
    "plant_identity",
    "read_image_series",
    "slice_normal",
    "sort_slices",
]

PRIVATE_CREATOR = "SYNTHRELEASE PHANTOM"
_REL_TOL = 0.01  # relative tolerance on slice spacing / in-plane drift
_ABS_TOL = 0.01  # mm


def _where(ds: Dataset) -> str:
    return str(getattr(ds, "filename", None) or "<dataset>")


def slice_normal(ds: Dataset) -> np.ndarray:
    """Unit normal ``row x col`` of a slice's ``ImageOrientationPatient``."""
    iop = np.asarray([float(v) for v in ds.ImageOrientationPatient], dtype=float)
    n = np.cross(iop[:3], iop[3:])
    return np.asarray(n / np.linalg.norm(n))


def sort_slices(datasets: Sequence[Dataset]) -> list[Dataset]:
    """Slices in ascending position along the slice normal (SimpleITK / GDCM order)."""
    for ds in datasets:
        for kw in ("ImagePositionPatient", "ImageOrientationPatient"):
            if kw not in ds:
                raise DicomError(f"slice lacks {kw}", where=_where(ds),
                                 fix="ingest only image series with patient geometry (CT/MR axial series)")
    n = slice_normal(datasets[0])
    return sorted(datasets, key=lambda d: float(np.dot(n, [float(v) for v in d.ImagePositionPatient])))


def geometry_of_slices(slices: Sequence[Dataset]) -> Geometry:
    """Geometry of slices already sorted by ``sort_slices``; checks they form one regular grid."""
    first = slices[0]
    where = _where(first)
    iop = np.asarray([float(v) for v in first.ImageOrientationPatient], dtype=float)
    spacing_rc = [float(v) for v in first.PixelSpacing]
    rows, cols = int(first.Rows), int(first.Columns)
    for ds in slices[1:]:
        if (int(ds.Rows), int(ds.Columns)) != (rows, cols):
            raise DicomError(f"slice size {ds.Rows}x{ds.Columns} differs from {rows}x{cols} in the same series",
                             where=_where(ds), fix="remove the odd slice (a localizer?) from the series folder")
        if not np.allclose([float(v) for v in ds.ImageOrientationPatient], iop, atol=1e-4):
            raise DicomError("slice orientation differs from the rest of the series", where=_where(ds),
                             fix="remove the odd slice (a localizer or another reconstruction) from the folder")
        if not np.allclose([float(v) for v in ds.PixelSpacing], spacing_rc, rtol=1e-4):
            raise DicomError("pixel spacing differs from the rest of the series", where=_where(ds),
                             fix="keep one reconstruction per series folder")
    normal = slice_normal(first)
    positions = np.asarray([[float(v) for v in ds.ImagePositionPatient] for ds in slices], dtype=float)
    if len(slices) > 1:
        steps = np.diff(positions @ normal)
        step = float(np.median(steps))
        if step <= _ABS_TOL:
            raise DicomError("two slices share one position", where=where,
                             fix="remove duplicate slices (or split the series by acquisition)")
        if np.max(np.abs(steps - step)) > max(_ABS_TOL, _REL_TOL * step):
            raise DicomError(f"uneven slice spacing ({steps.min():.3g} to {steps.max():.3g} mm)", where=where,
                             fix="fill the missing slices or resample the series to even spacing before ingest")
        drift = np.diff(positions, axis=0) - np.outer(steps, normal)
        if np.max(np.linalg.norm(drift, axis=1)) > max(_ABS_TOL, _REL_TOL * step):
            raise DicomError("slices are offset in-plane (gantry tilt or a sheared grid)", where=where,
                             fix="resample the series to an untilted grid before ingest")
    else:
        step = float(first.get("SliceThickness", 1.0) or 1.0)
    direction = np.stack([iop[:3], iop[3:], normal], axis=1)  # columns: x, y, z axes
    return Geometry(spacing=(spacing_rc[1], spacing_rc[0], step), origin=tuple(positions[0]),
                    direction=tuple(direction.ravel()))


def affine_of(geometry: Geometry) -> np.ndarray:
    """4x4 matrix mapping voxel index ``(i=x, j=y, k=z, 1)`` to patient LPS millimetres."""
    a = np.eye(4)
    a[:3, :3] = np.asarray(geometry.direction, dtype=float).reshape(3, 3) * np.asarray(geometry.spacing)
    a[:3, 3] = geometry.origin
    return a


def _modality_of(ds: Dataset) -> Modality:
    value = str(ds.get("Modality", "")).upper()
    if value not in ("CT", "MR"):
        raise DicomError(f"modality {value or 'missing'} is not CT or MR", where=_where(ds),
                         fix="keep only CT or MR image series (and their RTSTRUCT/SEG) in the source")
    return Modality(value)


def read_image_series(files: Sequence[Path]) -> tuple[np.ndarray, Geometry, Modality]:
    """Read one single-frame CT/MR series: ``(Z, Y, X)`` float32 after rescale, its geometry and modality."""
    volume, geometry, modality, _ = load_series(files)
    return volume, geometry, modality


def load_series(files: Sequence[Path]) -> tuple[np.ndarray, Geometry, Modality, list[Dataset]]:
    """``read_image_series`` plus the slice datasets in volume order (``slices[k]`` is ``volume[k]``)."""
    if not files:
        raise DicomError("no image files given", fix="pass the files of one image series")
    datasets: list[Dataset] = []
    for f in files:
        try:
            ds: Dataset = dcmread(f)
        except Exception as exc:
            raise DicomError(f"is not a readable DICOM file ({type(exc).__name__})", where=f,
                             fix="replace it with an intact copy or remove it") from None
        if "PixelData" not in ds:
            raise DicomError("image file has no pixel data", where=f,
                             fix="export the series again with its pixel data (not headers only)")
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise DicomError("multi-frame (enhanced) image is not supported", where=f,
                             fix="convert the series to single-frame images (e.g. dcm2niix or emf2sf) first")
        datasets.append(ds)
    modality = _modality_of(datasets[0])
    for ds in datasets[1:]:
        if _modality_of(ds) is not modality:
            raise DicomError(f"one series mixes {modality.value} and {ds.Modality} files", where=_where(ds),
                             fix="keep one image series per folder")
    slices = sort_slices(datasets)
    geometry = geometry_of_slices(slices)
    volume = np.empty((len(slices), int(slices[0].Rows), int(slices[0].Columns)), dtype=np.float32)
    for k, ds in enumerate(slices):
        try:
            pixels = np.asarray(_pixel_array(ds), dtype=np.float64)
        except Exception as exc:
            raise DicomError(f"pixel data cannot be decoded ({type(exc).__name__})", where=_where(ds),
                             fix="re-export the series uncompressed or install the matching pixel-data handler"
                             ) from None
        slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
        volume[k] = pixels * slope + intercept
    return volume, geometry, modality, slices


_NATIVE_LITTLE_ENDIAN = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian})


def _pixel_array(ds: Dataset) -> np.ndarray:
    """``ds.pixel_array``; for the plainest slices (uncompressed little endian, one sample of 8 or 16 bits, all bits
    stored, one frame) straight from the bytes, which are then exactly its values, skipping pydicom's decoder set-up."""
    meta = getattr(ds, "file_meta", None)
    elem = ds.get_item(0x7FE00010)
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    bits = ds.get("BitsAllocated")
    if (meta is not None and meta.get("TransferSyntaxUID") in _NATIVE_LITTLE_ENDIAN and elem is not None
            and elem.VR in ("OB", "OW", None) and isinstance(elem.value, bytes) and bits in (8, 16)
            and ds.get("BitsStored") == bits and ds.get("PixelRepresentation") in (0, 1)
            and ds.get("SamplesPerPixel", 1) == 1 and int(ds.get("NumberOfFrames", 1) or 1) == 1
            and str(ds.get("PhotometricInterpretation", "")) in ("MONOCHROME1", "MONOCHROME2")
            and rows > 0 and cols > 0):
        size = rows * cols * bits // 8
        if len(elem.value) in (size, size + 1):  # (+1: the padding byte of an odd length)
            dtype = np.dtype(("<i" if ds.PixelRepresentation == 1 else "<u") + str(bits // 8))
            return np.frombuffer(elem.value, dtype=dtype, count=rows * cols).reshape(rows, cols)
    return ds.pixel_array


def plant_identity(ds: Dataset, identity: FakeIdentity) -> None:
    """Write the phantom's fake PHI into ``ds`` (patient, study, equipment attributes and a private block)."""
    family, given = identity.patient_name.split("^")
    ds.PatientName = identity.patient_name
    ds.PatientID = identity.patient_id
    ds.PatientBirthDate = identity.birth_date
    ds.PatientSex = identity.sex
    ds.AccessionNumber = identity.accession_number
    ds.InstitutionName = identity.institution
    ds.InstitutionAddress = f"{int(identity.patient_id[-3:]) % 97 + 1} EXAMPLE ROAD, SPRINGFIELD"
    ds.ReferringPhysicianName = identity.referring_physician
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = identity.study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = identity.study_time
    ds.StationName = identity.station_name
    ds.OperatorsName = f"TECH^{given[:1]}{family[:1]}"
    ds.DeviceSerialNumber = f"SN{identity.patient_id[-6:]}"
    ds.StudyID = identity.accession_number[-8:]
    block = ds.private_block(0x0011, PRIVATE_CREATOR, create=True)
    block.add_new(0x01, "LO", identity.private_note)
