"""Write a phantom ``Case`` as DICOM: one image file per slice plus an RTSTRUCT or a SEG, with planted fake PHI.

Everything is deterministic: UIDs derive from ``uid_seed`` and the case id, dates and times come from the fake
identity, so the same inputs give byte-identical files. CT is stored as int16 with ``RescaleIntercept = -1024``
(1 HU steps); MR as uint16 with a linear rescale chosen to keep the value range.
"""

from __future__ import annotations

from collections.abc import Mapping
from io import BytesIO
from pathlib import Path
from typing import Literal

import numpy as np
from pydicom import dcmread
from pydicom.charset import convert_encodings
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, MRImageStorage
from pydicom.valuerep import format_number_as_ds

from synthrelease.data.case import Case, Geometry
from synthrelease.data.dicom.deid import derived_uid
from synthrelease.data.dicom.rtstruct import write_rtstruct
from synthrelease.data.dicom.seg import write_seg
from synthrelease.data.dicom.series import plant_identity
from synthrelease.data.phantoms.identity import FakeIdentity
from synthrelease.data.schema import LabelSchema, Modality

__all__ = ["roi_names_for", "write_dicom_case"]

_CT_ROI = {"tumour": "GTV_primary", "tumor": "GTV_primary", "bone": "Bone_Mandible"}


def roi_names_for(schema: LabelSchema, modality: Modality | str) -> dict[int, str]:
    """ROI / segment names of a schema's foreground labels: names the default ROI map reads back."""
    if Modality.parse(modality) is Modality.CT:
        return {v: _CT_ROI.get(name.lower(), name) for name, v in schema.foreground.items()}
    return dict((v, name) for name, v in schema.foreground.items())


def _right_handed(image: np.ndarray, labels: np.ndarray, geometry: Geometry
                  ) -> tuple[np.ndarray, np.ndarray, Geometry]:
    """Flip z where the direction is left-handed: DICOM slice order follows row x col."""
    d = np.asarray(geometry.direction, dtype=float).reshape(3, 3)
    if np.linalg.det(d) > 0:
        return image, labels, geometry
    origin = np.asarray(geometry.origin) + d[:, 2] * geometry.spacing[2] * (labels.shape[0] - 1)
    d[:, 2] = -d[:, 2]
    flipped = Geometry(spacing=geometry.spacing, origin=tuple(origin), direction=tuple(d.ravel()))
    return image[::-1].copy(), labels[::-1].copy(), flipped


def _encode(volume: np.ndarray, modality: Modality) -> tuple[np.ndarray, float, float]:
    """Stored pixel values, slope, intercept."""
    if modality is Modality.CT:
        return np.clip(np.round(volume + 1024.0), -32768, 32767).astype(np.int16), 1.0, -1024.0
    lo, hi = float(volume.min()), float(volume.max())
    integral = np.array_equal(volume, np.round(volume))
    if integral and lo >= 0 and hi <= 65535:
        return volume.astype(np.uint16), 1.0, 0.0
    slope = float(_ds((hi - lo) / 65535.0)) if hi > lo else 1.0
    lo = float(_ds(lo))
    stored = np.clip(np.round((volume - lo) / slope), 0, 65535).astype(np.uint16)
    return stored, slope, lo


def _ds(value: float) -> str:
    """A decimal string of at most 16 characters (DICOM DS)."""
    v = float(value)
    return "0" if abs(v) < 1e-12 else format_number_as_ds(v)


def _slice_dataset(stored: np.ndarray, k: int, geometry: Geometry, modality: Modality, uids: Mapping[str, str],
                   slope: float, intercept: float, identity: FakeIdentity, sop_uid: str) -> Dataset:
    d = np.asarray(geometry.direction, dtype=float).reshape(3, 3)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    sop_class = CTImageStorage if modality is Modality.CT else MRImageStorage
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = sop_class, UID(sop_uid)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Modality = modality.value
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uids["study"], uids["series"]
    ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = uids["frame"], ""
    ds.SeriesNumber, ds.InstanceNumber, ds.AcquisitionNumber = 1, k + 1, 1
    ds.SeriesDescription = "SYNTHRELEASE PHANTOM"
    ds.Manufacturer, ds.ManufacturerModelName, ds.SoftwareVersions = "SYNTHRELEASE", "PHANTOM", "1"
    ds.PatientPosition, ds.BodyPartExamined = "HFS", ("HEADNECK" if modality is Modality.CT else "BRAIN")
    plant_identity(ds, identity)
    if modality is Modality.CT:
        ds.KVP, ds.ConvolutionKernel, ds.RescaleType = "120", "STANDARD", "HU"
    else:
        ds.MagneticFieldStrength, ds.RepetitionTime, ds.EchoTime = "3", "2300", "2.3"
        ds.ScanningSequence, ds.SequenceVariant, ds.MRAcquisitionType = "GR", "SP", "3D"
        ds.ImagedNucleus = "1H"
    ds.ImageOrientationPatient = [_ds(v) for v in np.r_[d[:, 0], d[:, 1]]]
    ds.PixelSpacing = [_ds(geometry.spacing[1]), _ds(geometry.spacing[0])]  # row spacing, column spacing
    ds.SliceThickness = ds.SpacingBetweenSlices = _ds(geometry.spacing[2])
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = int(stored.shape[1]), int(stored.shape[2])
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1 if stored.dtype == np.int16 else 0
    ds.RescaleSlope, ds.RescaleIntercept = _ds(slope), _ds(intercept)
    _set_slice(ds, stored, k, geometry, sop_uid)
    return ds


def _set_slice(ds: Dataset, stored: np.ndarray, k: int, geometry: Geometry, sop_uid: str) -> None:
    """The attributes that differ from slice to slice (all others are the same in every slice of the series)."""
    d = np.asarray(geometry.direction, dtype=float).reshape(3, 3)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    ds.SOPInstanceUID = sop_uid
    ds.InstanceNumber = k + 1
    position = np.asarray(geometry.origin) + d[:, 2] * geometry.spacing[2] * k
    ds.ImagePositionPatient = [_ds(v) for v in position]
    ds.SliceLocation = _ds(np.dot(position, d[:, 2]))
    ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()


def _raw_template(ds: Dataset) -> Dataset:
    """``ds`` encoded once (explicit VR little endian) and read back undecoded: raw elements to copy into every
    slice, which pydicom then writes as they are instead of encoding each value of each slice again."""
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return dcmread(BytesIO(buffer.getvalue()))


def _from_template(template: Dataset) -> Dataset:
    """A new dataset holding ``template``'s elements (raw ones stay raw: they are immutable and shared safely)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    for tag, elem in template.file_meta.items():  # items() gives the stored (raw) elements, undecoded
        ds.file_meta[tag] = elem
    for tag, elem in template.items():
        ds[tag] = elem
    # written as it was read (explicit VR little endian, its own character set): raw elements are copied as they are
    ds.set_original_encoding(False, True, convert_encodings(template.SpecificCharacterSet))
    return ds


def write_dicom_case(case: Case, out_dir: Path, identity: FakeIdentity, *,
                     labels: Literal["rtstruct", "seg"] = "rtstruct", uid_seed: int) -> list[Path]:
    """Write ``case`` (first image channel) as a DICOM series plus RTSTRUCT or SEG; returns the paths written.

    Files: ``CT_0001.dcm`` ... (or ``MR_``), then ``RTSTRUCT.dcm`` or ``SEG.dcm``. Same inputs, same bytes.
    """
    if labels not in ("rtstruct", "seg"):
        raise ValueError(f"labels must be 'rtstruct' or 'seg', not {labels!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    modality = case.modality
    image, label_map, geometry = _right_handed(case.image[0], case.labels, case.geometry)
    stored, slope, intercept = _encode(image, modality)

    def uid(*role: object) -> str:
        return derived_uid("synthrelease-phantom", str(uid_seed), case.case_id, *map(str, role))

    uids = {"study": uid("study"), "series": uid("series"), "frame": uid("frame")}
    paths: list[Path] = []
    datasets: list[Dataset] = []
    # everything but the per-slice attributes is encoded once, from slice 0 (same bytes as encoding every slice)
    template = _raw_template(_slice_dataset(stored, 0, geometry, modality, uids, slope, intercept, identity,
                                            uid("sop", 0)))
    for k in range(stored.shape[0]):
        ds = _from_template(template)
        _set_slice(ds, stored, k, geometry, uid("sop", k))
        path = out_dir / f"{modality.value}_{k + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        ds.filename = str(path)
        datasets.append(ds)
        paths.append(path)
    roi_names = roi_names_for(case.schema, modality)
    if labels == "rtstruct":
        paths.append(write_rtstruct(label_map, geometry, datasets, roi_names, out_dir / "RTSTRUCT.dcm", identity))
    else:
        paths.append(write_seg(label_map, datasets, roi_names, out_dir / "SEG.dcm", identity=identity))
    return paths
