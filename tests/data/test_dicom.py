"""DICOM layer: series geometry, RTSTRUCT/SEG round trips, Annex E de-identification, source scanning errors."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID_dictionary

from synthrelease.data.case import IDENTITY_DIRECTION, Case, Geometry
from synthrelease.data.dicom import (
    BASIC_PROFILE,
    Deidentifier,
    default_roi_map,
    header_summary,
    parse_roi_map,
    read_image_series,
    read_rtstruct,
    read_seg,
    scan_dicom_source,
    write_dicom_case,
    write_rtstruct,
    write_seg,
)
from synthrelease.data.phantoms.identity import FakeIdentity, make_identity
from synthrelease.data.schema import BRATS_SCHEMA, CT_HEAD_NECK_SCHEMA
from synthrelease.errors import DicomError, InputError, LayoutError

SPACING = (1.5, 1.25, 2.5)
ORIGIN = (-20.0, 30.5, -100.0)
_C, _S = np.cos(np.pi / 6), np.sin(np.pi / 6)
ROT30 = (_C, -_S, 0.0, _S, _C, 0.0, 0.0, 0.0, 1.0)  # in-plane rotation


def _oblique() -> tuple[float, ...]:
    a = np.deg2rad(15)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    return tuple((np.asarray(ROT30).reshape(3, 3) @ rx).ravel())


def _grid(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]]
    return z, y, x


def ct_case(direction: tuple[float, ...] = IDENTITY_DIRECTION, shape: tuple[int, int, int] = (16, 20, 24),
            case_id: str = "ct1") -> Case:
    """Body ellipsoid (HU 40 + a ramp) in air, a cube tumour (1) and a sphere of bone (2)."""
    z, y, x = _grid(shape)
    zc, yc, xc = [(s - 1) / 2 for s in shape]
    body = ((z - zc) / (zc + 0.5)) ** 2 + ((y - yc) / (yc + 0.5)) ** 2 + ((x - xc) / (xc + 0.5)) ** 2 < 1
    image = np.where(body, 40.0 + 3 * x, -1000.0).astype(np.float32)
    labels = np.zeros(shape, np.uint8)
    labels[((z - 10) ** 2 + (y - 12) ** 2 + (x - 15) ** 2) <= 16] = 2
    labels[3:8, 4:10, 3:9] = 1
    return Case(case_id, image[None], labels, Geometry(SPACING, ORIGIN, direction), "CT", ("CT",),
                CT_HEAD_NECK_SCHEMA)


def mr_case(shape: tuple[int, int, int] = (16, 18, 20)) -> Case:
    """Non-integer MR intensities; nested BraTS labels: SNFH (2) around NCR (1) and an ET (3) blob."""
    z, y, x = _grid(shape)
    image = (100.0 + 0.37 * x + 0.25 * y + 0.123 * z).astype(np.float32)
    labels = np.zeros(shape, np.uint8)
    labels[((z - 8) ** 2 + (y - 9) ** 2 + (x - 10) ** 2) <= 25] = 2
    labels[6:10, 7:11, 8:12] = 1
    labels[3:5, 4:7, 3:6] = 3
    return Case("mr1", image[None], labels, Geometry(SPACING, ORIGIN, ROT30), "MR", ("MR",), BRATS_SCHEMA)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1))


@pytest.fixture(scope="module")
def identity() -> FakeIdentity:
    return make_identity(2, 5)


@pytest.fixture(scope="module")
def ct_written(tmp_path_factory: pytest.TempPathFactory, identity: FakeIdentity) -> tuple[Case, list[Path]]:
    case = ct_case(ROT30)
    return case, write_dicom_case(case, tmp_path_factory.mktemp("ct") / "case", identity, uid_seed=1)


@pytest.fixture(scope="module")
def ct_other(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A second CT patient (another series)."""
    return write_dicom_case(ct_case(case_id="ct2"), tmp_path_factory.mktemp("ct2") / "case", make_identity(3, 5),
                            labels="seg", uid_seed=2)


@pytest.fixture(scope="module")
def mr_written(tmp_path_factory: pytest.TempPathFactory, identity: FakeIdentity) -> tuple[Case, list[Path]]:
    case = mr_case()
    return case, write_dicom_case(case, tmp_path_factory.mktemp("mr") / "case", identity, labels="seg", uid_seed=1)


# -- image series ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("direction", [IDENTITY_DIRECTION, ROT30, _oblique()], ids=["identity", "rot30", "oblique"])
def test_series_round_trip_matches_input_and_simpleitk(tmp_path: Path, identity: FakeIdentity,
                                                       direction: tuple[float, ...]) -> None:
    case = ct_case(direction)
    paths = write_dicom_case(case, tmp_path, identity, uid_seed=4)
    images = [p for p in paths if p.name.startswith("CT_")]
    volume, geometry, modality = read_image_series(images[::-1])  # order of the list must not matter
    assert modality.value == "CT" and volume.dtype == np.float32
    np.testing.assert_allclose(volume, case.image[0], atol=0.5)
    assert geometry.matches(case.geometry, tol=1e-6)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path), str(dcmread(images[0]).SeriesInstanceUID)))
    ref = reader.Execute()
    np.testing.assert_allclose(volume, sitk.GetArrayFromImage(ref), atol=1e-3)
    np.testing.assert_allclose(geometry.spacing, ref.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(geometry.origin, ref.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(geometry.direction, ref.GetDirection(), atol=1e-6)


def test_left_handed_grid_reads_back_as_the_same_physical_volume(tmp_path: Path, identity: FakeIdentity) -> None:
    case = ct_case((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0))
    paths = write_dicom_case(case, tmp_path, identity, uid_seed=5)
    volume, geometry, _ = read_image_series(paths[:-1])
    np.testing.assert_allclose(volume, case.image[0][::-1], atol=0.5)
    last = np.asarray(ORIGIN) + np.array([0, 0, -SPACING[2] * (case.shape[0] - 1)])
    np.testing.assert_allclose(geometry.origin, last, atol=1e-6)
    np.testing.assert_allclose(geometry.direction, IDENTITY_DIRECTION, atol=1e-9)
    series_uid = str(dcmread(paths[0]).SeriesInstanceUID)
    labels = read_rtstruct(paths[-1], geometry, volume.shape, series_uid, default_roi_map("ct"))
    for value in (1, 2):
        assert dice(labels == value, case.labels[::-1] == value) >= 0.9


def test_mr_series_keeps_non_integer_intensities(mr_written: tuple[Case, list[Path]]) -> None:
    case, paths = mr_written
    volume, geometry, modality = read_image_series([p for p in paths if p.name.startswith("MR_")])
    first = dcmread(paths[0])
    assert modality.value == "MR" and first.PixelRepresentation == 0 and first.BitsAllocated == 16
    span = float(case.image.max() - case.image.min())
    np.testing.assert_allclose(volume, case.image[0], atol=span / 65535)
    assert geometry.matches(case.geometry, tol=1e-6)


def test_slices_are_sorted_by_position_not_instance_number(ct_written: tuple[Case, list[Path]],
                                                           tmp_path: Path) -> None:
    case, paths = ct_written
    images = [p for p in paths if p.name.startswith("CT_")]
    shuffled = []
    for k, path in enumerate(images):
        ds = dcmread(path)
        ds.InstanceNumber = len(images) - k
        shuffled.append(tmp_path / f"IMG_{(7 * k) % len(images):02d}.dcm")
        ds.save_as(shuffled[-1])
    volume, geometry, _ = read_image_series(sorted(shuffled))
    np.testing.assert_allclose(volume, case.image[0], atol=0.5)
    assert geometry.matches(case.geometry, tol=1e-6)


def test_uneven_slice_spacing_and_missing_pixels_raise(ct_written: tuple[Case, list[Path]], tmp_path: Path) -> None:
    _, paths = ct_written
    images = [p for p in paths if p.name.startswith("CT_")]
    with pytest.raises(DicomError, match=r"uneven slice spacing.*fix:"):
        read_image_series(images[:5] + images[6:])
    ds = dcmread(images[3])
    del ds.PixelData
    headless = tmp_path / "CT_headless.dcm"
    ds.save_as(headless)
    with pytest.raises(DicomError, match=r"CT_headless.dcm: image file has no pixel data.*fix:"):
        read_image_series([*images[:3], headless])


# -- RTSTRUCT -------------------------------------------------------------------------------------------------------
def test_rtstruct_round_trip(ct_written: tuple[Case, list[Path]]) -> None:
    case, paths = ct_written
    rt = dcmread(paths[-1])
    assert rt.Modality == "RTSTRUCT" and [r.ROIName for r in rt.StructureSetROISequence] == ["GTV_primary",
                                                                                            "Bone_Mandible"]
    series_uid = str(dcmread(paths[0]).SeriesInstanceUID)
    report: dict[str, int] = {}
    labels = read_rtstruct(paths[-1], case.geometry, case.shape, series_uid, default_roi_map("CT"), report=report)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == {0, 1, 2}
    for value in (1, 2):
        assert dice(labels == value, case.labels == value) >= 0.9
    assert report == {"matched": 2, "unmatched": 0, "off_grid": 0}
    ignored: dict[str, int] = {}
    none = read_rtstruct(paths[-1], case.geometry, case.shape, series_uid, [(1, "PTV*")], report=ignored)
    assert not none.any() and ignored["unmatched"] == 2


def test_rtstruct_ring_keeps_its_hole(tmp_path: Path, identity: FakeIdentity) -> None:
    case = ct_case()
    ring = np.zeros(case.shape, np.uint8)
    ring[2:12, 4:16, 5:19] = 2
    ring[2:12, 8:12, 9:15] = 0  # the hole
    paths = write_dicom_case(case.with_(labels=ring), tmp_path, identity, uid_seed=6)
    rt = dcmread(paths[-1])
    bone = next(rc for rc in rt.ROIContourSequence if rc.ReferencedROINumber == 2)
    z_of = [round(float(c.ContourData[2]), 3) for c in bone.ContourSequence]
    assert max(z_of.count(z) for z in set(z_of)) == 2  # outer and inner contour on one slice
    labels = read_rtstruct(paths[-1], case.geometry, case.shape, None, default_roi_map("CT"))
    assert not labels[2:12, 8:12, 9:15].any()
    assert dice(labels == 2, ring == 2) >= 0.9


def test_rtstruct_paints_in_roi_map_order(ct_written: tuple[Case, list[Path]], tmp_path: Path) -> None:
    case, paths = ct_written
    images = [dcmread(p) for p in paths if p.name.startswith("CT_")]
    outer = np.zeros(case.shape, np.uint8)
    outer[2:12, 3:15, 3:17] = 2
    inner = np.zeros(case.shape, np.uint8)
    inner[5:9, 6:11, 6:12] = 1
    a = write_rtstruct(outer, case.geometry, images, {2: "Bone_Mandible"}, tmp_path / "a.dcm")
    b = write_rtstruct(inner, case.geometry, images, {1: "GTV_primary"}, tmp_path / "b.dcm")
    merged, extra = dcmread(a), dcmread(b)
    extra.StructureSetROISequence[0].ROINumber = extra.ROIContourSequence[0].ReferencedROINumber = 2
    merged.StructureSetROISequence.append(extra.StructureSetROISequence[0])
    merged.ROIContourSequence.append(extra.ROIContourSequence[0])
    merged.save_as(tmp_path / "merged.dcm")
    tumour_last = read_rtstruct(tmp_path / "merged.dcm", case.geometry, case.shape, None, default_roi_map("CT"))
    assert (tumour_last[inner == 1] == 1).all() and (tumour_last[(outer == 2) & (inner == 0)] == 2).all()
    bone_last = read_rtstruct(tmp_path / "merged.dcm", case.geometry, case.shape, None, [(1, "GTV*"), (2, "Bone*")])
    assert (bone_last[outer == 2] == 2).all()


def test_rtstruct_of_another_series_is_refused(ct_written: tuple[Case, list[Path]]) -> None:
    case, paths = ct_written
    with pytest.raises(DicomError) as err:
        read_rtstruct(paths[-1], case.geometry, case.shape, "1.2.3.4", default_roi_map("CT"))
    text = str(err.value)
    assert str(paths[-1]) in text and "references another series" in text and "fix: put the matching" in text
    assert str(dcmread(paths[0]).SeriesInstanceUID) not in text


def test_parse_roi_map() -> None:
    assert parse_roi_map("1=GTV*;2=Mandible|Bone*") == [(1, "GTV*"), (2, "Mandible|Bone*")]
    assert parse_roi_map(" 3 = ET|Enhanc* ; 1=NCR ;") == [(3, "ET|Enhanc*"), (1, "NCR")]
    for bad in ("", ";", "GTV*", "x=GTV", "1=", "0=GTV", "256=A", "1=A||B"):
        with pytest.raises(InputError, match="fix:"):
            parse_roi_map(bad)


# -- SEG ------------------------------------------------------------------------------------------------------------
def test_seg_round_trip_is_exact(mr_written: tuple[Case, list[Path]], tmp_path: Path) -> None:
    case, paths = mr_written
    headers = [dcmread(p, stop_before_pixels=True) for p in paths if p.name.startswith("MR_")]
    seg = dcmread(paths[-1])
    assert seg.Modality == "SEG" and [s.SegmentLabel for s in seg.SegmentSequence] == ["NCR", "SNFH", "ET"]
    labels = read_seg(paths[-1], headers[::-1], case.shape, default_roi_map("MR"))
    np.testing.assert_array_equal(labels, case.labels)
    by_position = read_seg(paths[-1], str(headers[0].SeriesInstanceUID), case.shape, default_roi_map("MR"),
                           geometry=case.geometry)
    np.testing.assert_array_equal(by_position, case.labels)
    ct = ct_case(ROT30, shape=(16, 18, 20))  # CT on the MR grid: other series
    ct_headers = [dcmread(p, stop_before_pixels=True) for p in write_dicom_case(ct, tmp_path, make_identity(1, 1),
                                                                                uid_seed=9)[:-1]]
    with pytest.raises(DicomError, match="references another series"):
        read_seg(paths[-1], ct_headers, case.shape, default_roi_map("MR"))
    out = write_seg(ct.labels, ct_headers, {1: "GTV_primary", 2: "Bone_Mandible"}, tmp_path / "ct_seg.dcm")
    np.testing.assert_array_equal(read_seg(out, ct_headers, ct.shape, default_roi_map("CT")), ct.labels)


def test_writing_is_deterministic(tmp_path: Path, identity: FakeIdentity) -> None:
    case = ct_case(shape=(16, 16, 16))
    for kind in ("rtstruct", "seg"):
        a = write_dicom_case(case, tmp_path / f"a_{kind}", identity, labels=kind, uid_seed=7)
        b = write_dicom_case(case, tmp_path / f"b_{kind}", identity, labels=kind, uid_seed=7)
        assert [p.name for p in a] == [p.name for p in b] and a[-1].name in ("RTSTRUCT.dcm", "SEG.dcm")
        assert all(pa.read_bytes() == pb.read_bytes() for pa, pb in zip(a, b, strict=True))
    c = write_dicom_case(case, tmp_path / "c", identity, uid_seed=8)
    assert dcmread(c[0]).SOPInstanceUID != dcmread(tmp_path / "a_rtstruct" / "CT_0001.dcm").SOPInstanceUID


# -- de-identification ----------------------------------------------------------------------------------------------
def _instance_uids(ds: Dataset) -> set[str]:
    return {str(e.value) for e in ds.iterall() if e.VR == "UI" and e.value and str(e.value) not in UID_dictionary}


def _raw(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def test_written_files_carry_the_planted_phi(ct_written: tuple[Case, list[Path]], identity: FakeIdentity) -> None:
    _, paths = ct_written
    for path in (paths[0], paths[-1]):
        raw = path.read_bytes()
        assert all(s.encode() in raw for s in (identity.patient_name, identity.patient_id, identity.private_note))
        assert dcmread(path)[0x0011, 0x1001].value == identity.private_note


def test_deidentify_removes_identity_uids_private_tags_and_overlays(ct_written: tuple[Case, list[Path]],
                                                                     identity: FakeIdentity) -> None:
    _, paths = ct_written
    ds = dcmread(paths[0])
    item = Dataset()
    item.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    item.PersonName = identity.referring_physician  # nested PN (table: dummy)
    item.EvaluatorName, item.ExpiryDate = identity.patient_name, identity.birth_date  # not in the table: safety net
    item.add_new(0x00091010, "LO", identity.patient_id)  # private inside a sequence
    ds.ReferencedImageSequence = Sequence([item])
    ds.OtherPatientNames, ds.PatientAddress = identity.patient_name, "1 MAIN ST"
    ds.SOPInstanceUIDOfConcatenationSource = ds.SOPInstanceUID  # a UID attribute the table does not list
    ds.add_new(0x60003000, "OW", b"\x01\x00" * 8)
    ds.add_new(0x60000022, "LO", identity.patient_name)  # overlay description
    originals = _instance_uids(ds)
    out = Deidentifier(b"salt").deidentify(ds)
    assert ds.PatientName == identity.patient_name  # input untouched
    text, raw = str(out), _raw(out)
    for planted in [*identity.planted_strings(), "1 MAIN ST"]:
        assert planted not in text and planted.encode() not in raw, planted
    for uid in originals:
        assert uid not in text and uid.encode() not in raw
    elements = list(out.iterall())
    assert not any(e.tag.is_private or e.tag.group & 0xFF00 in (0x5000, 0x6000) for e in elements)
    assert not any(e.VR in ("DA", "DT", "TM") and not e.is_empty for e in elements)
    assert {str(e.value or "") for e in elements if e.VR == "PN"} <= {"", "ANONYMIZED"}
    assert out.PatientIdentityRemoved == "YES"
    code = out.DeidentificationMethodCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator) == ("113100", "DCM")
    assert out.ReferencedImageSequence[0].ReferencedSOPInstanceUID == out.SOPInstanceUID
    assert out.SOPInstanceUIDOfConcatenationSource == out.SOPInstanceUID
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert out.Modality == "CT" and out.SOPClassUID == ds.SOPClassUID and out.KVP == ds.KVP


def test_uid_mapping_is_consistent(ct_written: tuple[Case, list[Path]]) -> None:
    _, paths = ct_written
    a, b, rt = dcmread(paths[0]), dcmread(paths[1]), dcmread(paths[-1])
    deid = Deidentifier(b"salt")
    da, db, drt = deid.deidentify(a), deid.deidentify(b), deid.deidentify(rt)
    for kw in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        assert da[kw].value == db[kw].value != a[kw].value
    assert da.SOPInstanceUID != db.SOPInstanceUID
    ref = drt.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == da.SeriesInstanceUID  # the structure set still points at its series
    assert ref.ContourImageSequence[0].ReferencedSOPInstanceUID == da.SOPInstanceUID
    assert Deidentifier(b"salt").deidentify(a).SOPInstanceUID == da.SOPInstanceUID
    assert Deidentifier(b"other").deidentify(a).SOPInstanceUID != da.SOPInstanceUID


def test_header_summary_holds_no_identifiers(ct_written: tuple[Case, list[Path]], identity: FakeIdentity) -> None:
    _, paths = ct_written
    ds = dcmread(paths[0])
    summary = header_summary(Deidentifier(b"salt").deidentify(ds))
    text = json.dumps(summary)
    assert not any(s in text for s in identity.planted_strings())
    assert not any(uid in text for uid in _instance_uids(ds))
    assert summary["Modality"] == "CT" and summary["PixelSpacing"] == [1.25, 1.5] and summary["KVP"] == 120.0
    with pytest.raises(ValueError, match="de-identified"):
        header_summary(ds)


def test_basic_profile_table() -> None:
    rules = {r.keyword: r for r in BASIC_PROFILE}
    assert len(BASIC_PROFILE) >= 100 and len({r.tag for r in BASIC_PROFILE}) == len(BASIC_PROFILE)
    expected = {
        "PatientName": "Z", "PatientID": "Z", "PatientBirthDate": "Z", "PatientSex": "Z", "AccessionNumber": "Z",
        "StudyDate": "Z", "StudyTime": "Z", "ContentDate": "Z", "StudyID": "Z", "ReferringPhysicianName": "Z",
        "InstitutionName": "Z", "StationName": "Z", "OperatorsName": "Z", "DeviceSerialNumber": "Z",
        "InstitutionAddress": "X", "InstitutionalDepartmentName": "X", "PatientAddress": "X", "OtherPatientIDs": "X",
        "SeriesDate": "X", "StudyDescription": "X", "SeriesDescription": "X", "ImageComments": "X",
        "RequestAttributesSequence": "X", "PerformingPhysicianName": "X", "PatientAge": "X",
        "StudyInstanceUID": "U", "SeriesInstanceUID": "U", "SOPInstanceUID": "U", "FrameOfReferenceUID": "U",
        "ReferencedSOPInstanceUID": "U", "ReferencedImageSequence": "U", "ContentSequence": "D",
    }
    assert {k: rules[k].action for k in expected} == expected
    assert rules["InstitutionName"].standard == "X/Z/D"


# -- scanning a source ----------------------------------------------------------------------------------------------
def _copy(paths: list[Path], dst: Path, keep: Callable[[Path], bool] = lambda p: True) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for p in paths:
        if keep(p):
            shutil.copy(p, dst / p.name)
    return dst


def test_scan_and_load(ct_written: tuple[Case, list[Path]], ct_other: list[Path],
                       mr_written: tuple[Case, list[Path]], identity: FakeIdentity, tmp_path: Path) -> None:
    case, paths = ct_written
    _copy(paths, tmp_path / "ct" / "patient_a")
    _copy(ct_other, tmp_path / "ct" / "patient_b")
    (tmp_path / "ct" / "README.txt").write_text("notes")
    (tmp_path / "ct" / "patient_a" / "DICOMDIR").write_bytes(b"not parsed")
    sources = scan_dicom_source(tmp_path / "ct", "ct")
    assert [(s.source_name, s.label_kind, len(s.files)) for s in sources] == [("patient_a", "rtstruct", 16),
                                                                            ("patient_b", "seg", 16)]
    assert sources[0].patient_key == identity.patient_id and identity.patient_id not in repr(sources[0])
    loaded, summary = sources[0].load(Deidentifier(b"salt"), CT_HEAD_NECK_SCHEMA, "case_0001")
    assert loaded.meta == {} and loaded.channel_names == ("CT",) and loaded.geometry.matches(case.geometry)
    np.testing.assert_allclose(loaded.image[0], case.image[0], atol=0.5)
    assert all(dice(loaded.labels == v, case.labels == v) >= 0.9 for v in (1, 2))
    assert summary["label_rois"] == {"matched": 2, "unmatched": 0, "off_grid": 0}
    assert not any(s in json.dumps(summary) for s in identity.planted_strings())
    mr, mr_paths = mr_written
    (mr_source,) = scan_dicom_source(_copy(mr_paths, tmp_path / "mr"), "mri")
    mr_loaded, _ = mr_source.load(Deidentifier(b"salt"), BRATS_SCHEMA, "case_0002")
    assert mr_loaded.channel_names == ("MR",) and mr_loaded.modality.value == "MR"
    np.testing.assert_array_equal(mr_loaded.labels, mr.labels)


def _no_pixels(paths: list[Path], root: Path) -> str:
    ds = dcmread(_copy(paths, root) / "CT_0005.dcm")
    del ds.PixelData
    ds.save_as(root / "CT_0005.dcm")
    return "CT_0005.dcm"


def _junk(paths: list[Path], root: Path) -> str:
    _copy(paths, root)
    (root / "junk.dcm").write_bytes(np.random.default_rng(0).bytes(700))
    return "junk.dcm"


def _truncated(paths: list[Path], root: Path) -> str:
    _copy(paths, root)
    (root / "cut.dcm").write_bytes(paths[2].read_bytes()[:600])
    return "cut.dcm"


def _foreign_rtstruct(paths: list[Path], root: Path, other: list[Path]) -> str:
    _copy(paths, root, lambda p: p.name.startswith("CT_"))
    case = ct_case()
    images = [dcmread(p, stop_before_pixels=True) for p in other if p.name.startswith("CT_")]
    write_rtstruct(case.labels, case.geometry, images, {1: "GTV_primary"}, root / "RTSTRUCT.dcm")
    return "RTSTRUCT.dcm"


def _two_structure_sets(paths: list[Path], root: Path) -> str:
    shutil.copy(paths[-1], _copy(paths, root) / "RTSTRUCT_2.dcm")
    return "RTSTRUCT_2.dcm"


ERROR_CASES: dict[str, tuple[Callable[..., str], str, type[Exception], str]] = {
    "no_pixel_data": (_no_pixels, "ct", DicomError, "no pixel data"),
    "corrupt_file": (_junk, "ct", DicomError, "is not a readable DICOM file"),
    "truncated_file": (_truncated, "ct", DicomError, "pixel data"),
    "foreign_labels": (_foreign_rtstruct, "ct", DicomError, "series that is not in the source"),
    "two_structure_sets": (_two_structure_sets, "ct", LayoutError, "second structure set"),
    "no_structure_set": (lambda p, r: (_copy(p, r, lambda q: q.name != "RTSTRUCT.dcm"), "CT_0001.dcm")[1], "ct",
                         LayoutError, "has no RTSTRUCT or SEG"),
    "wrong_modality": (lambda p, r: (_copy(p, r), "CT_0001.dcm")[1], "mri", LayoutError, "--modality ct"),
}


@pytest.mark.parametrize("name", sorted(ERROR_CASES))
def test_scan_errors_name_the_file(name: str, ct_written: tuple[Case, list[Path]], ct_other: list[Path],
                                   identity: FakeIdentity, tmp_path: Path) -> None:
    build, modality, error, phrase = ERROR_CASES[name]
    root = tmp_path / "src"
    _, paths = ct_written
    culprit = build(paths, root, ct_other) if name == "foreign_labels" else build(paths, root)
    with pytest.raises(error) as err:
        scan_dicom_source(root, modality)
    text = str(err.value)
    assert f"{culprit}:" in text and phrase in text and "fix:" in text and "\n" not in text
    assert identity.patient_id not in text and "2.25." not in text


def test_scan_errors_for_empty_and_mixed_sources(ct_written: tuple[Case, list[Path]],
                                                 mr_written: tuple[Case, list[Path]], tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.md").write_text("nothing here")
    with pytest.raises(LayoutError, match=r"empty: holds no CT or MR image series; fix:"):
        scan_dicom_source(tmp_path / "empty", "ct")
    _copy(ct_written[1], tmp_path / "mixed" / "a")
    _copy(mr_written[1], tmp_path / "mixed" / "b")
    with pytest.raises(LayoutError, match=r"MR_0001.dcm: belongs to an image series of modality MR.*CT.*fix:"):
        scan_dicom_source(tmp_path / "mixed", "ct")
