"""Protected source folders (nnU-Net raw, BraTS, DICOM): layout detection and one view over all of them.

A ``SourceCase`` knows how to load one case under a *new* id (the pseudonym); source names and patient keys
live only in memory, for messages and for the patient-level split, and are never written (unless the steward
asks for the id map).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from synthrelease.data.brats import BRATS_CHANNELS, BratsCaseFiles, looks_like_brats, remap_brats_labels, scan_brats
from synthrelease.data.case import Case, Geometry
from synthrelease.data.nifti import read_nifti, read_nifti_geometry
from synthrelease.data.nnunet import load_nnunet_case, scan_nnunet
from synthrelease.data.schema import BRATS_SCHEMA, LabelSchema, Modality, default_schema
from synthrelease.errors import DataError, GeometryError, InputError, LabelError, LayoutError

__all__ = ["Layout", "Source", "SourceCase", "detect_layout", "open_source"]

_SKIP_SUFFIXES = {".json", ".txt", ".md", ".csv", ".xml", ".png", ".jpg", ".jpeg", ".pdf", ".tsv"}


class Layout(StrEnum):
    AUTO = "auto"
    NNUNET = "nnunet"
    BRATS = "brats"
    DICOM = "dicom"


@dataclass(frozen=True)
class SourceCase:
    """One case of a source folder, not yet loaded."""

    source_name: str
    patient_key: str
    load: Callable[[str], tuple[Case, dict[str, Any]]]  # new case id -> (case, de-identified header summary)
    header: Callable[[], tuple[tuple[int, int, int], Geometry]]  # grid shape (Z, Y, X) and geometry, cheaply
    # (both are partials of module-level functions, so that ingest can call them in worker processes; a source
    # built with closures instead still works, in process)


@dataclass(frozen=True)
class Source:
    root: Path
    layout: Layout
    modality: Modality
    channel_names: tuple[str, ...]
    schema: LabelSchema
    cases: tuple[SourceCase, ...] = field(repr=False)


def _is_dicom_file(path: Path) -> bool:
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with path.open("rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def detect_layout(root: Path) -> Layout:
    """nnU-Net raw (``dataset.json`` + ``imagesTr/``), BraTS case folders, or DICOM files anywhere below."""
    root = Path(root)
    if not root.exists():
        raise InputError("path does not exist", where=root, fix="check the source path")
    if not root.is_dir():
        raise InputError("is not a folder", where=root, fix="point to the folder that holds the cases")
    if (root / "dataset.json").is_file() and (root / "imagesTr").is_dir():
        return Layout.NNUNET
    if not any(root.iterdir()):
        raise LayoutError("is empty", where=root, fix="point to the folder that holds the cases")
    if looks_like_brats(root):
        return Layout.BRATS
    files = (p for p in root.rglob("*") if p.is_file() and p.suffix.lower() not in _SKIP_SUFFIXES)
    if any(_is_dicom_file(p) for p in files):
        return Layout.DICOM
    raise LayoutError("holds no nnU-Net dataset, BraTS case folders or DICOM files", where=root,
                      fix="pass --layout nnunet|brats|dicom, or point to the right folder")


def _nifti_header(paths: Sequence[Path]) -> Callable[[], tuple[tuple[int, int, int], Geometry]]:
    return functools.partial(read_nifti_geometry, paths[0])  # a partial, not a lambda: it pickles (for workers)


def _load_nnunet(files: Any, index: Any, case_id: str) -> tuple[Case, dict[str, Any]]:
    return load_nnunet_case(files, index, case_id=case_id), {}


def _load_dicom(src: Any, deid: Any, schema: LabelSchema, case_id: str) -> tuple[Case, dict[str, Any]]:
    return src.load(deid, schema, case_id)


def _open_nnunet(root: Path, modality: Modality) -> Source:
    index = scan_nnunet(root, modality=modality)
    if index.modality is not modality:
        raise LayoutError(f"dataset.json describes {index.modality.value} data, not {modality.value}",
                          where=root / "dataset.json", fix="pass the matching --modality")

    slim = dataclasses.replace(index, cases=())  # what loading one case needs (each case's loader carries it)
    cases = tuple(SourceCase(f.case_id, f.case_id, functools.partial(_load_nnunet, f, slim), _nifti_header(f.images))
                  for f in index.cases)
    return Source(root, Layout.NNUNET, modality, index.channel_names, index.schema, cases)


def _load_brats(files: BratsCaseFiles, channels: Sequence[str], case_id: str) -> tuple[Case, dict[str, Any]]:
    labels, geom = read_nifti(files.label)
    images = []
    for path in files.images:
        arr, g = read_nifti(path)
        if arr.shape != labels.shape or not g.matches(geom):
            raise GeometryError(f"image grid {arr.shape} differs from the label map {files.label.name} "
                                f"grid {labels.shape}", where=path,
                                fix="resample the label map onto the image grid (nearest neighbour)")
        if not np.all(np.isfinite(arr)):
            raise DataError("holds NaN or infinite voxels", where=path, fix="repair or exclude the scan")
        images.append(arr.astype(np.float32, copy=False))
    try:
        case = Case(case_id=case_id, image=np.stack(images), labels=remap_brats_labels(labels, files.naming),
                    geometry=geom, modality=Modality.MR, channel_names=tuple(channels), schema=BRATS_SCHEMA)
    except LabelError as exc:
        raise LabelError(exc.problem, where=files.label, fix=exc.fix) from None
    return case, {}


def _open_brats(root: Path, modality: Modality, channels: Sequence[str] | None) -> Source:
    if modality is not Modality.MR:
        raise LayoutError("BraTS folders hold MRI", where=root, fix="pass --modality mri")
    chans = tuple(channels or BRATS_CHANNELS)
    scanned = scan_brats(root, chans)
    cases = tuple(
        SourceCase(f.name, f.patient_key, functools.partial(_load_brats, f, chans), _nifti_header(f.images))
        for f in scanned
    )
    return Source(root, Layout.BRATS, modality, chans, BRATS_SCHEMA, cases)


def _open_dicom(root: Path, modality: Modality, roi_map: Sequence[tuple[int, str]] | None,
                uid_salt: bytes) -> Source:
    from synthrelease.data.dicom import Deidentifier, scan_dicom_source
    scanned = scan_dicom_source(root, modality, roi_map)
    schema = default_schema(modality)
    deid = Deidentifier(uid_salt=uid_salt)

    cases = tuple(
        SourceCase(s.source_name, s.patient_key, functools.partial(_load_dicom, s, deid, schema), s.header)
        for s in scanned
    )
    return Source(root, Layout.DICOM, modality, (modality.value,), schema, cases)


def open_source(root: Path, *, layout: Layout | str = Layout.AUTO, modality: Modality | str,
                channels: Sequence[str] | None = None, roi_map: Sequence[tuple[int, str]] | None = None,
                uid_salt: bytes = b"synthrelease") -> Source:
    """Scan a source folder (structure only; volumes load later, one at a time)."""
    root = Path(root)
    modality = Modality.parse(modality)
    layout = Layout(layout)
    found = detect_layout(root) if layout is Layout.AUTO else layout
    if layout is not Layout.AUTO and not root.is_dir():
        raise InputError("path does not exist or is not a folder", where=root, fix="check the source path")
    if found is Layout.NNUNET:
        source = _open_nnunet(root, modality)
    elif found is Layout.BRATS:
        source = _open_brats(root, modality, channels)
    else:
        source = _open_dicom(root, modality, roi_map, uid_salt)
    if channels and found is not Layout.BRATS:
        missing = [c for c in channels if c not in source.channel_names]
        if missing:
            raise InputError(f"channels {missing} are not in the source's {list(source.channel_names)}",
                             where=root, fix="drop --channels or name existing channels")
    return source
