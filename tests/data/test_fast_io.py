"""Fast paths of the DICOM layer and per-case worker processes: the same bytes and values as the slow paths.

- ``fast.format_ds``: valid DS strings (PS3.5 6.2: at most 16 characters) that read back as the numbers;
- ``fast.contour_sequence_element``: byte for byte what pydicom writes for the same contour items;
- ``fast.read_contours`` / the pixel fast path: the values pydicom reads; other encodings fall back on pydicom;
- ``write_phantom_cohort`` and ``ingest`` with ``workers=2``: byte-identical to ``workers=1``, same progress calls,
  and a worker's ``DicomError`` surfaces as the same one-line error naming the file, leaving nothing behind.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from pydicom import config, dcmread
from pydicom.charset import default_encoding
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RTStructureSetStorage
from pydicom.valuerep import validate_value

from synthrelease.data.dicom import read_rtstruct, scan_dicom_source
from synthrelease.data.dicom.fast import (
    DS_MAX_LENGTH,
    ContourItem,
    contour_sequence_element,
    format_ds,
    new_item,
    read_contours,
)
from synthrelease.data.dicom.rtstruct import default_roi_map
from synthrelease.data.dicom.series import _pixel_array
from synthrelease.data.ingest import IngestOptions, ingest
from synthrelease.data.parallel import WORKERS_ENV, WorkerPool, resolve_workers
from synthrelease.data.phantoms.cohort import write_phantom_cohort
from synthrelease.errors import DicomError, InputError

# PS3.5 Table 6.2-1, DS: optional sign, digits with an optional point, optional exponent; blanks around; <= 16 bytes
_DS = re.compile(r"^ *[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)? *$")


def _hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# -- decimal strings -------------------------------------------------------------------------------------------------
def test_format_ds_gives_valid_decimal_strings_that_read_back() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0, 300, 2000), rng.uniform(-1e9, 1e9, 200), 10.0 ** rng.uniform(-12, 20, 200),
                             -(10.0 ** rng.uniform(-12, 20, 200)), [0.0, -0.0, 1e-5, -5e-5, 99999999999.99995,
                                                                    -1234567890123.5, 1.5e300, -2.5e-300]])
    strings = format_ds(values)
    assert len(strings) == len(values)
    for v, s in zip(values.tolist(), strings, strict=True):
        assert len(s) <= DS_MAX_LENGTH and _DS.match(s), s
        validate_value("DS", s, config.RAISE)  # pydicom's own DS rules agree
        if abs(v) < 1e9:  # four decimals
            assert s == f"{v:.4f}" and abs(float(s) - v) <= 5e-5
        else:  # too long for four decimals: pydicom's format_number_as_ds (significant digits kept)
            assert np.isclose(float(s), v, rtol=1e-9, atol=0)
    with pytest.raises(ValueError, match="decimal string"):
        format_ds([1.0, float("nan")])
    with pytest.raises(ValueError, match="decimal string"):
        format_ds([float("inf")])


# -- contour sequences: the same bytes as pydicom -----------------------------------------------------------------
def _encoded(rcd: Dataset) -> bytes:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = RTStructureSetStorage
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = RTStructureSetStorage, "1.2.3.4", "RTSTRUCT"
    ds.ROIContourSequence = DicomSequence([rcd])
    ds.set_original_encoding(False, True, default_encoding)  # as write_rtstruct does: raw elements written as they are
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _items(n_points: tuple[int, ...]) -> list[ContourItem]:
    rng = np.random.default_rng(sum(n_points))
    items = []
    for i, n in enumerate(n_points):
        pts = rng.normal(0, 80, (n, 3))
        pts[:, 2] = -40.0 + 2.5 * i
        ref = () if i % 3 == 2 else ("1.2.840.10008.5.1.4.1.1.2", f"1.2.826.0.1.{i}{'9' * (i % 2)}")  # odd, even
        items.append(ContourItem(pts, *ref))
    return items


def _pydicom_rcd(items: list[ContourItem]) -> Dataset:
    contours = []
    for item in items:
        c = Dataset()
        if item.image_class_uid is not None:
            img = Dataset()
            img.ReferencedSOPClassUID, img.ReferencedSOPInstanceUID = item.image_class_uid, item.image_instance_uid
            c.ContourImageSequence = DicomSequence([img])
        c.ContourGeometricType, c.NumberOfContourPoints = item.geometric_type, len(item.points_mm)
        c.ContourData = [f"{v:.4f}" for v in np.asarray(item.points_mm).ravel()]
        contours.append(c)
    rcd = Dataset()
    rcd.ReferencedROINumber, rcd.ContourSequence = 1, DicomSequence(contours)
    return rcd


@pytest.mark.parametrize("n_points", [(), (4,), (5, 12, 7, 30)], ids=["empty", "one", "several"])
def test_contour_sequence_bytes_equal_pydicoms(n_points: tuple[int, ...]) -> None:
    items = _items(n_points)
    fast = new_item()
    fast.ReferencedROINumber = 1
    fast[0x30060040] = contour_sequence_element(items)
    assert _encoded(fast) == _encoded(_pydicom_rcd(items))
    assert isinstance(fast.get_item(0x30060040), RawDataElement)  # our bytes were written, not pydicom's re-encoding


def test_contour_over_64_kib_is_stored_as_pydicom_stores_it() -> None:
    items = _items((3000,))  # ~27 characters a point: over the 64 KiB a DS element can hold
    fast = new_item()
    fast.ReferencedROINumber = 1
    with pytest.warns(UserWarning, match="64 KiB"):
        fast[0x30060040] = contour_sequence_element(items)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns too (VR changed to UN)
        assert _encoded(fast) == _encoded(_pydicom_rcd(items))


# -- reading: fast paths agree with pydicom, and other encodings still read ------------------------------------------
@pytest.fixture(scope="module")
def small_ct(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_phantom_cohort(tmp_path_factory.mktemp("fast") / "src", modality="ct", cases=4, shape=16, seed=3,
                                fmt="dicom", workers=1)


def test_read_contours_matches_pydicom(small_ct: Path) -> None:
    rtstruct = dcmread(next(small_ct.rglob("RTSTRUCT.dcm")))
    n = 0
    for rc in rtstruct.ROIContourSequence:
        fast = read_contours(rc)
        assert fast is not None  # written by us: explicit VR little endian, defined lengths
        slow = [(str(c.ContourGeometricType), np.array([float(v) for v in c.ContourData])) for c in rc.ContourSequence]
        assert len(fast) == len(slow) > 0
        for (gf, vf), (gs, vs) in zip(fast, slow, strict=True):
            assert gf == gs == "CLOSED_PLANAR" and vf is not None and vf.dtype == np.float64
            assert np.array_equal(vf, vs)  # the same floats, bit for bit
            n += 1
    assert n > 4


def test_implicit_vr_files_read_through_pydicom_give_the_same_case(small_ct: Path, tmp_path: Path) -> None:
    """Real exports are often implicit VR: the fast paths step aside and the result is the same."""
    source = scan_dicom_source(small_ct, "ct")[0]
    shape, geometry = source.header()
    roi_map = default_roi_map("ct")
    explicit = read_rtstruct(source.label_file, geometry, shape, None, roi_map)
    ds = dcmread(source.label_file)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    implicit_path = tmp_path / "implicit.dcm"
    ds.save_as(implicit_path, enforce_file_format=True)
    rc = dcmread(implicit_path).ROIContourSequence[0]
    assert read_contours(rc) is None  # not the fast path...
    assert np.array_equal(read_rtstruct(implicit_path, geometry, shape, None, roi_map), explicit)  # ...same labels
    assert explicit.any()

    for path in source.files[:3]:
        ds = dcmread(path)
        fast = _pixel_array(ds)
        assert fast.dtype == ds.pixel_array.dtype == np.int16 and np.array_equal(fast, ds.pixel_array)
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        ds.save_as(tmp_path / "slice.dcm", enforce_file_format=True)
        again = dcmread(tmp_path / "slice.dcm")
        assert np.array_equal(_pixel_array(again), fast)


# -- worker processes ----------------------------------------------------------------------------------------------
def test_resolve_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WORKERS_ENV, raising=False)
    assert resolve_workers(1, 100) == 1
    assert resolve_workers(3, 2) == 2  # never more processes than tasks
    assert resolve_workers(None, 5) == 1  # auto: small jobs stay in process
    monkeypatch.setattr("synthrelease.data.parallel._spawn_safe", lambda: True)
    for cpus, expected in ((1, 1), (2, 2), (16, 4)):  # auto: one per usable CPU, at most AUTO_MAX_WORKERS
        monkeypatch.setattr("synthrelease.data.parallel._available_cpus", lambda c=cpus: c)
        assert resolve_workers(0, 1000) == expected
    assert resolve_workers(0, 32) == 2  # and one per MIN_TASKS_PER_WORKER tasks
    monkeypatch.setenv(WORKERS_ENV, "1")
    assert resolve_workers(None, 1000) == 1
    assert resolve_workers(2, 1000) == 2  # an explicit count wins
    for bad in (-1, 1.5, True):
        with pytest.raises(InputError, match="--workers"):
            resolve_workers(bad, 10)  # type: ignore[arg-type]
    monkeypatch.setenv(WORKERS_ENV, "many")
    with pytest.raises(InputError, match=WORKERS_ENV):
        resolve_workers(None, 10)


def test_worker_count_changes_no_byte(small_ct: Path, tmp_path: Path) -> None:
    two = write_phantom_cohort(tmp_path / "src2", modality="ct", cases=4, shape=16, seed=3, fmt="dicom", workers=2)
    assert _hashes(two) == _hashes(small_ct)  # every file, PLANTED_PHI.json included

    calls: dict[int, list[tuple[str, int, int]]] = {1: [], 2: []}
    for w in (1, 2):
        ingest(small_ct, tmp_path / f"ws{w}", modality="ct", options=IngestOptions(seed=0, holdout=0.5), workers=w,
               progress=lambda *a, w=w: calls[w].append(a))
    assert _hashes(tmp_path / "ws1") == _hashes(tmp_path / "ws2")  # arrays, headers, splits, pseudonyms
    assert calls[1] == calls[2] == [("ingest", i, 4) for i in range(5)]


@pytest.mark.parametrize(("modality", "fmt"), [("ct", "nnunet"), ("mri", "brats")])
def test_worker_count_changes_no_byte_for_nifti_sources(modality: str, fmt: str, tmp_path: Path) -> None:
    for w in (1, 2):
        src = write_phantom_cohort(tmp_path / f"src{w}", modality=modality, cases=3, shape=16, seed=4, fmt=fmt,
                                   workers=w)
        ingest(src, tmp_path / f"ws{w}", modality=modality, options=IngestOptions(seed=1, holdout=0.4), workers=w)
    assert _hashes(tmp_path / "src1") == _hashes(tmp_path / "src2")
    assert _hashes(tmp_path / "ws1") == _hashes(tmp_path / "ws2")


def test_a_worker_error_is_the_same_one_line_error(small_ct: Path, tmp_path: Path) -> None:
    bad_src = tmp_path / "bad"
    bad_src.mkdir()
    for p in small_ct.rglob("*"):
        if p.is_file():
            (bad_src / p.relative_to(small_ct)).parent.mkdir(parents=True, exist_ok=True)
            (bad_src / p.relative_to(small_ct)).write_bytes(p.read_bytes())
    victim = sorted(bad_src.glob("*/CT_0005.dcm"))[2]  # the third patient: read in a worker
    ds = dcmread(victim)
    ds.PixelData = ds.PixelData[:100]  # truncated pixel data: the scan passes, reading the slice fails
    ds.save_as(victim)
    errors = {}
    for w in (1, 2):
        with pytest.raises(DicomError) as info:
            ingest(bad_src, tmp_path / f"ws{w}", modality="ct", options=IngestOptions(seed=0, holdout=0.5), workers=w)
        errors[w] = info.value
        assert sorted(p.name for p in tmp_path.iterdir()) == ["bad"]  # nothing half-written is left
    assert type(errors[1]) is type(errors[2])
    assert str(errors[1]) == str(errors[2]) and str(victim) in str(errors[2]) and "\n" not in str(errors[2])
    assert (errors[2].where, errors[2].problem, errors[2].fix) == (errors[1].where, errors[1].problem, errors[1].fix)
    assert errors[2].__cause__ is None and errors[2].__suppress_context__  # no remote traceback chained to it


def test_pool_keeps_order_and_replays_errors_logs_and_warnings(small_ct: Path, tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    from synthrelease.data.nifti import read_nifti

    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a nifti file")
    with pytest.raises(InputError) as here:
        read_nifti(bad)
    source = scan_dicom_source(small_ct, "ct")[0]
    shape, geometry = source.header()
    caplog.set_level(logging.INFO, logger="synthrelease")
    with WorkerPool(2) as pool:
        assert list(pool.map(int, [("3",), ("1",), ("2",)])) == [3, 1, 2]
        with pytest.raises(InputError) as there:
            list(pool.map(read_nifti, [(bad,)]))
        assert type(there.value) is type(here.value) and str(there.value) == str(here.value)
        caplog.clear()
        (labels,) = pool.map(read_rtstruct, [(source.label_file, geometry, shape, None, [(1, "GTV*")])])
        assert labels.any()
        assert [r.getMessage() for r in caplog.records] == ["RTSTRUCT.dcm: 1 ROI(s) match no ROI-map pattern and "
                                                            "were ignored"]  # logged in the worker, shown here
        with pytest.warns(UserWarning, match="64 KiB"):
            list(pool.map(contour_sequence_element, [(_items((3000,)),)]))
