"""Find the cases of a DICOM source: image series (CT or MR) each with exactly one RTSTRUCT or SEG.

Every file under the root is read as DICOM, except names ending in .json .txt .md .csv .xml .png .jpg, hidden
files and DICOMDIR. Image series of other modalities (PET, ...) and other objects (RT plans, SR, ...) are ignored.
Errors name the offending file and say how to fix the source; they never print identifiers or UIDs.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from synthrelease.data.case import Case, Geometry
from synthrelease.data.dicom.deid import Deidentifier, header_summary
from synthrelease.data.dicom.rtstruct import RoiMap, default_roi_map, read_rtstruct, referenced_series_uids
from synthrelease.data.dicom.seg import read_seg, referenced_series_uids_seg
from synthrelease.data.dicom.series import geometry_of_slices, load_series, sort_slices
from synthrelease.data.schema import LabelSchema, Modality
from synthrelease.errors import DicomError, LabelError, LayoutError

__all__ = ["DicomCaseSource", "scan_dicom_source"]

log = logging.getLogger(__name__)
SKIP_SUFFIXES = frozenset({".json", ".txt", ".md", ".csv", ".xml", ".png", ".jpg"})
_IMAGE_MODALITIES = ("CT", "MR")
_SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
_IMAGE_CLASSES = frozenset(f"1.2.840.10008.5.1.4.1.1.{c}" for c in ("2", "2.1", "2.2", "4", "4.1", "4.3", "4.4"))
_CLI_NAME = {Modality.CT: "ct", Modality.MR: "mri"}


@dataclass(frozen=True)
class DicomCaseSource:
    """One case found in a DICOM source: its image files and its RTSTRUCT or SEG file."""

    files: tuple[Path, ...]
    label_file: Path
    label_kind: Literal["rtstruct", "seg"]
    patient_key: str = field(repr=False)  # PatientID: in memory only, for patient-level splits; never written
    source_name: str
    modality: Modality = Modality.CT
    roi_map: tuple[tuple[int, str], ...] = ()
    # grid shape (Z, Y, X) and geometry from the headers the scan read (None: read them again when asked)
    grid: tuple[tuple[int, int, int], Geometry] | None = field(default=None, repr=False, compare=False)

    def header(self) -> tuple[tuple[int, int, int], Geometry]:
        """Grid shape ``(Z, Y, X)`` and geometry of the image series, without reading pixel data."""
        return self.grid if self.grid is not None else series_header(self.files)

    def load(self, deidentifier: Deidentifier, schema: LabelSchema, case_id: str) -> tuple[Case, dict[str, Any]]:
        """Read the case (image, rasterized labels, geometry; ``meta`` empty) and a de-identified header summary.

        The summary also holds ``label_rois``: how many ROIs/segments matched the ROI map and how many did not.
        """
        image, geometry, modality, slices = load_series(self.files)
        roi_map = list(self.roi_map) or default_roi_map(modality)
        report: dict[str, Any] = {}
        if self.label_kind == "rtstruct":
            labels = read_rtstruct(self.label_file, geometry, image.shape, str(slices[0].SeriesInstanceUID),
                                   roi_map, report=report)
        else:
            labels = read_seg(self.label_file, slices, image.shape, roi_map, report=report)
        if report.get("matched", 0) == 0:
            raise LabelError(f"no ROI matches the ROI map ({report.get('unmatched', 0)} ignored)",
                             where=self.label_file,
                             fix='pass an ROI map naming its structures, e.g. --roi-map "1=GTV*;2=Mandible*"')
        first = dcmread(slices[0].filename, stop_before_pixels=True)
        summary = header_summary(deidentifier.deidentify(first))
        summary["label_rois"] = {k: int(report.get(k, 0)) for k in ("matched", "unmatched", "off_grid")}
        case = Case(case_id=case_id, image=image[None], labels=labels, geometry=geometry, modality=modality,
                    channel_names=(modality.value,), schema=schema, meta={})
        return case, summary


def _skipped(path: Path) -> bool:
    return path.name.startswith(".") or path.name.upper() == "DICOMDIR" or path.suffix.lower() in SKIP_SUFFIXES


def _read_header(path: Path) -> Dataset:
    """Header with large values deferred (so ``"PixelData" in ds`` works without loading pixels)."""
    try:
        try:
            return dcmread(path, defer_size=4096)
        except InvalidDicomError:  # no preamble: accept only if it parses into a real object
            ds = dcmread(path, defer_size=4096, force=True)
            if "SOPClassUID" in ds and "Modality" in ds:
                return ds
    except Exception:
        pass
    raise DicomError("is not a readable DICOM file", where=path,
                     fix="remove it from the source or replace it with an intact copy")


def _kind(ds: Dataset) -> str:
    modality = str(ds.get("Modality", "")).upper()
    if modality == "RTSTRUCT":
        return "rtstruct"
    if modality == "SEG" or str(ds.get("SOPClassUID", "")) == _SEG_CLASS:
        return "seg"
    if str(ds.get("SOPClassUID", "")) in _IMAGE_CLASSES:
        return "image"
    return "image" if "ImagePositionPatient" in ds or "PixelData" in ds else "other"


def scan_dicom_source(root: Path, modality: Modality | str, roi_map: RoiMap | None = None) -> list[DicomCaseSource]:
    """All cases under ``root``; raises ``DicomError`` / ``LayoutError`` naming the file and the fix."""
    root = Path(root)
    wanted = Modality.parse(modality)
    if not root.is_dir():
        raise LayoutError("is not a folder", where=root, fix="point at the folder that holds the DICOM files")
    series: dict[str, list[tuple[Path, Dataset]]] = defaultdict(list)
    labels: list[tuple[Path, Dataset, str]] = []
    ignored_series: set[str] = set()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not _skipped(p)):
        ds = _read_header(path)
        kind = _kind(ds)
        if kind in ("rtstruct", "seg"):
            labels.append((path, ds, kind))
        elif kind == "image" and str(ds.get("Modality", "")).upper() in (*_IMAGE_MODALITIES, ""):
            if "PixelData" not in ds:
                raise DicomError("image file has no pixel data (or is truncated)", where=path,
                                 fix="export the series again with its pixel data (not headers only)")
            if not str(ds.get("Modality", "")).strip():
                raise DicomError("image file has no Modality", where=path, fix="repair or remove the file")
            series[str(ds.get("SeriesInstanceUID", ""))].append((path, ds))
        else:
            ignored_series.add(str(ds.get("SeriesInstanceUID", "")))
    if not series:
        raise LayoutError("holds no CT or MR image series", where=root,
                          fix="point at the folder that holds the DICOM image series and their RTSTRUCT/SEG files")
    found = {uid: Modality(str(files[0][1].Modality).upper()) for uid, files in series.items()}
    kinds = sorted({m.value for m in found.values()})
    if len(kinds) > 1:
        odd = min(kinds, key=lambda m: (sum(1 for v in found.values() if v.value == m), m == wanted.value))
        first = min(files[0][0] for uid, files in series.items() if found[uid].value == odd)
        others = " and ".join(k for k in kinds if k != odd)
        raise LayoutError(f"belongs to an image series of modality {odd}, while the other image series are {others}",
                          where=first, fix="ingest CT and MR cohorts from separate source folders")
    if found[next(iter(found))] is not wanted:
        got = found[next(iter(found))]
        raise LayoutError(f"belongs to a {got.value} image series, but modality {_CLI_NAME[wanted]} was asked for",
                          where=min(f[0][0] for f in series.values()),
                          fix=f"pass --modality {_CLI_NAME[got]} or point at a {wanted.value} source")
    instance_to_series = {str(ds.SOPInstanceUID): uid for uid, files in series.items() for _, ds in files
                          if "SOPInstanceUID" in ds}
    assigned: dict[str, list[tuple[Path, str]]] = defaultdict(list)
    for path, ds, kind in labels:
        refs = referenced_series_uids(ds) if kind == "rtstruct" else referenced_series_uids_seg(ds)
        if not refs:  # fall back on referenced instances
            refs = {instance_to_series[str(v.value)] for v in ds.iterall()
                    if v.keyword == "ReferencedSOPInstanceUID" and str(v.value) in instance_to_series}
        present = sorted(refs & series.keys())
        if not present:
            if refs and refs <= ignored_series:
                log.info("%s: labels a series of another modality; ignored", path.name)
                continue
            raise DicomError(f"{'structure set' if kind == 'rtstruct' else 'segmentation'} references an image "
                             "series that is not in the source", where=path,
                             fix="put the matching image series beside it, or remove the file")
        for uid in present:
            assigned[uid].append((path, kind))
    sources: list[DicomCaseSource] = []
    for uid, members in series.items():
        files = tuple(sorted(p for p, _ in members))
        try:  # the grid from the headers in hand (as series_header would read them); a bad grid is reported on load
            grid = _grid_of([ds for _, ds in sorted(members, key=lambda m: m[0])])
        except DicomError:
            grid = None
        if not assigned[uid]:
            raise LayoutError("image series has no RTSTRUCT or SEG", where=files[0],
                              fix="add its structure set or segmentation, or remove the series from the source")
        if len(assigned[uid]) > 1:
            (a, _), (b, _) = sorted(assigned[uid])[:2]
            raise LayoutError(f"is a second structure set or segmentation for the series that {a.name} labels",
                              where=b, fix="keep exactly one RTSTRUCT or SEG per image series")
        label_file, kind = assigned[uid][0]
        rel = files[0].parent.relative_to(root).as_posix()
        sources.append(DicomCaseSource(
            files=files, label_file=label_file, label_kind="rtstruct" if kind == "rtstruct" else "seg",
            patient_key=str(members[0][1].get("PatientID", "") or uid), source_name=root.name if rel == "." else rel,
            modality=wanted, roi_map=tuple(roi_map or ()), grid=grid))
    return sorted(sources, key=lambda s: (s.source_name, s.files[0]))


def series_header(files: Sequence[Path]) -> tuple[tuple[int, int, int], Geometry]:
    """Grid shape ``(Z, Y, X)`` and geometry of an image series from its headers alone (no pixel data read)."""
    return _grid_of([dcmread(p, stop_before_pixels=True) for p in files])


def _grid_of(headers: Sequence[Dataset]) -> tuple[tuple[int, int, int], Geometry]:
    slices = sort_slices(headers)
    geometry = geometry_of_slices(slices)
    return (len(slices), int(slices[0].Rows), int(slices[0].Columns)), geometry
