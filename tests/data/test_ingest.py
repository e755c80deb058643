"""Ingest: de-identified, pseudonymized, preprocessed, split, atomic and reproducible workspaces."""

from __future__ import annotations

import json
import tomllib

import numpy as np
import pytest

from synthrelease.data.ingest import IngestOptions, ingest
from synthrelease.data.leakscan import find_strings
from synthrelease.data.nifti import write_nifti
from synthrelease.data.nnunet import write_nnunet
from synthrelease.data.phantoms.cohort import PLANTED_PHI_FILE, write_phantom_cohort
from synthrelease.data.workspace import Workspace
from synthrelease.errors import DataError, LabelError


def _planted(src):
    planted = json.loads((src / PLANTED_PHI_FILE).read_text())
    return sorted({s for entry in planted.values() for s in entry["strings"]})


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def ct_dicom(tmp_path_factory):
    return write_phantom_cohort(tmp_path_factory.mktemp("src") / "ct", modality="ct", cases=6, shape=24, seed=5,
                                fmt="dicom")


@pytest.fixture(scope="module")
def mri_brats(tmp_path_factory):
    return write_phantom_cohort(tmp_path_factory.mktemp("src") / "mri", modality="mri", cases=5, shape=24, seed=2,
                                fmt="brats")


def test_dicom_ingest_leaves_no_planted_identifier(ct_dicom, tmp_path):
    needles = _planted(ct_dicom)
    assert len(find_strings(ct_dicom, needles)) >= len(needles)  # positive control: the source holds them all
    ws = ingest(ct_dicom, tmp_path / "ws", modality="ct", options=IngestOptions(seed=1))
    assert find_strings(ws.root, needles) == []
    assert len(ws.splits.train) + len(ws.splits.holdout) == 6
    headers = sorted((ws.root / "real" / "headers").glob("*.json"))
    assert len(headers) == 6  # de-identified technical headers were kept...
    assert json.loads(headers[0].read_text())["Modality"] == "CT"  # ...and hold acquisition facts


def test_brats_ingest_pseudonymizes_and_normalizes(mri_brats, tmp_path):
    ws = ingest(mri_brats, tmp_path / "ws", modality="mri", options=IngestOptions(seed=1, holdout=0.4))
    assert find_strings(ws.root, _planted(mri_brats)) == []
    assert ws.channel_names == ("t1c", "t1n", "t2w", "t2f")
    assert len(ws.splits.holdout) == 2 and len(ws.splits.train) == 3
    ids = ws.splits.train + ws.splits.holdout
    assert all(i.startswith("sr-") for i in ids)
    for case in ws.real():
        assert case.image.min() >= -1.0 and case.image.max() <= 1.0
        assert set(np.unique(case.labels)) == {0, 1, 2, 3}
        assert case.shape == tuple(ws.config["preprocessing"]["target_shape"])
    assert not (ws.root / "id_map.json").exists()


def test_workspace_toml_records_preprocessing_and_inverse(mri_brats, tmp_path):
    ws = ingest(mri_brats, tmp_path / "ws", modality="mri", options=IngestOptions(seed=0, shape=(24, 24, 24)))
    config = tomllib.loads((ws.root / "workspace.toml").read_text())
    pre = config["preprocessing"]
    assert pre["target_shape"] == [24, 24, 24] and len(pre["target_spacing"]) == 3
    assert pre["mri_percentiles"] == [0.1, 99.9]
    low, high = ws.intensity_reference
    assert len(low) == 4 and all(lo < hi for lo, hi in zip(low, high, strict=True))
    assert config["data"]["labels"] == {"background": 0, "NCR": 1, "SNFH": 2, "ET": 3}
    assert config["split"]["unit"] == "patient"


def test_same_seed_same_bytes_and_id_map_only_on_request(ct_dicom, tmp_path):
    a = ingest(ct_dicom, tmp_path / "a", modality="ct", options=IngestOptions(seed=3))
    b = ingest(ct_dicom, tmp_path / "b", modality="ct", options=IngestOptions(seed=3, keep_id_map=True))
    fa, fb = _files(a.root), _files(b.root)
    id_map = json.loads(fb.pop("id_map.json"))
    fa.pop("workspace.toml"), fb.pop("workspace.toml")  # records whether the id map was written
    assert fa == fb
    assert sorted(id_map) == sorted(a.splits.train + a.splits.holdout)
    assert {v["source"] for v in id_map.values()} == {p.name for p in ct_dicom.iterdir() if p.is_dir()}
    c = ingest(ct_dicom, tmp_path / "c", modality="ct", options=IngestOptions(seed=4))
    assert set(c.splits.train) != set(a.splits.train)


def test_nnunet_source_names_and_headers_are_replaced(tmp_path):
    src = write_phantom_cohort(tmp_path / "src", modality="ct", cases=4, shape=16, seed=0, fmt="nnunet")
    needles = _planted(src)
    assert any(f.needle.startswith("MRN") for f in find_strings(src, needles))
    ws = ingest(src, tmp_path / "ws", modality="ct", options=IngestOptions(seed=0))
    assert find_strings(ws.root, needles) == []
    assert Workspace(ws.root).train()[0].modality.value == "CT"


def test_failure_midway_leaves_nothing(tmp_path, make_case):
    cases = [make_case(f"c{i}", seed=i) for i in range(4)]
    src = write_nnunet(cases, tmp_path / "src", name="src", schema=cases[0].schema, modality="CT",
                       channel_names=("CT",))
    bad = cases[3].labels.copy()
    bad[0, 0, 0] = 7
    write_nifti(bad, cases[3].geometry, src / "labelsTr" / "c3.nii.gz")
    with pytest.raises(LabelError):
        ingest(src, tmp_path / "ws", modality="ct")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_empty_label_maps_need_consent(tmp_path, make_case):
    cases = [make_case(f"c{i}", seed=i) for i in range(3)]
    cases[1] = cases[1].with_(labels=np.zeros_like(cases[1].labels))
    src = write_nnunet(cases, tmp_path / "src", name="src", schema=cases[0].schema, modality="CT",
                       channel_names=("CT",))
    with pytest.raises(DataError, match="empty"):
        ingest(src, tmp_path / "ws", modality="ct")
    ws = ingest(src, tmp_path / "ws", modality="ct", options=IngestOptions(allow_empty_labels=True))
    assert len(ws.real()) == 3


def test_no_source_dicom_identifier_or_uid_reaches_the_workspace(ct_dicom, tmp_path):
    """Beyond the planted list: every UID, name, date and free-text value of every source file stays out."""
    import pydicom

    from synthrelease.data.dicom.deid import _SUMMARY_KEYWORDS

    # standard class UIDs and the technical attributes the header summary keeps on purpose are not identifiers
    kept = {"ReferencedSOPClassUID", "MediaStorageSOPClassUID", "TransferSyntaxUID", "ImplementationClassUID",
            "CodingSchemeUID", *_SUMMARY_KEYWORDS}
    values: set[str] = set()
    allowed: set[str] = set()
    uids: set[str] = set()
    for path in ct_dicom.rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        for elem in ds.iterall():
            if elem.VR in {"UI", "PN", "DA", "DT", "TM", "LO", "SH", "LT", "ST", "AE"} and elem.value:
                text = str(elem.value)
                if elem.keyword in kept:
                    allowed.add(text)
                elif len(text) >= 6:
                    values.add(text)
                    if elem.VR == "UI":
                        uids.add(text)
    assert len(uids) >= 6 * 3  # study, series, frame of reference and SOP instance UIDs per patient at least
    values -= allowed  # e.g. the structure set label repeats the manufacturer's name
    ws = ingest(ct_dicom, tmp_path / "ws", modality="ct", options=IngestOptions(seed=0))
    leaks = {f.needle for f in find_strings(ws.root, values)}
    assert leaks == set()
