"""Phantom cohorts on disk: every format, same seed -> same bytes, planted PHI where real data carries it."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest

from synthrelease.data.leakscan import find_strings
from synthrelease.data.phantoms.cohort import PLANTED_PHI_FILE, write_phantom_cohort
from synthrelease.data.sources import Layout, detect_layout, open_source
from synthrelease.errors import InputError


def _bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(("modality", "fmt", "layout"), [
    ("ct", "nifti", Layout.NNUNET), ("ct", "dicom", Layout.DICOM), ("mri", "nifti", Layout.BRATS),
    ("mri", "brats2021", Layout.BRATS), ("mri", "nnunet", Layout.NNUNET), ("mri", "dicom", Layout.DICOM),
])
def test_formats_are_deterministic_detectable_and_carry_planted_phi(tmp_path, modality, fmt, layout):
    a = write_phantom_cohort(tmp_path / "a", modality=modality, cases=2, shape=16, seed=9, fmt=fmt)
    b = write_phantom_cohort(tmp_path / "b", modality=modality, cases=2, shape=16, seed=9, fmt=fmt)
    assert _bytes(a) == _bytes(b)
    c = write_phantom_cohort(tmp_path / "c", modality=modality, cases=2, shape=16, seed=10, fmt=fmt)
    assert _bytes(a) != _bytes(c)
    assert detect_layout(a) is layout
    planted = json.loads((a / PLANTED_PHI_FILE).read_text())
    assert len(planted) == 2
    found = {f.needle for f in find_strings(a, [s for e in planted.values() for s in e["strings"]])
             if f.path.name != PLANTED_PHI_FILE}
    for entry in planted.values():
        assert entry["identity"]["patient_id"] in found  # the record number is really in the files
    source = open_source(a, modality=modality)
    case, _ = source.cases[0].load("sr-test")
    assert case.modality.value == ("CT" if modality == "ct" else "MR")


def test_dicom_files_hold_the_fake_identity_and_a_private_tag(tmp_path):
    root = write_phantom_cohort(tmp_path / "p", modality="ct", cases=1, shape=16, seed=0, fmt="dicom")
    ident = next(iter(json.loads((root / PLANTED_PHI_FILE).read_text()).values()))["identity"]
    ds = pydicom.dcmread(sorted(root.glob("*/CT_*.dcm"))[0])
    assert str(ds.PatientName) == ident["patient_name"] and ds.PatientID == ident["patient_id"]
    assert ds.PatientBirthDate == ident["birth_date"] and ds.InstitutionName == ident["institution"]
    assert any(elem.tag.is_private for elem in ds)


def test_brats2021_writes_label_4_and_reads_back_as_3(tmp_path):
    root = write_phantom_cohort(tmp_path / "p", modality="mri", cases=1, shape=16, seed=0, fmt="brats2021")
    seg = next(root.glob("*/*_seg.nii.gz"))
    from synthrelease.data.nifti import read_nifti

    assert 4 in np.unique(read_nifti(seg)[0])
    case, _ = open_source(root, modality="mri").cases[0].load("sr-x")
    assert set(np.unique(case.labels)) == {0, 1, 2, 3}


def test_bad_requests(tmp_path):
    with pytest.raises(InputError, match="BraTS"):
        write_phantom_cohort(tmp_path / "x", modality="ct", cases=1, fmt="brats")
    with pytest.raises(InputError):
        write_phantom_cohort(tmp_path / "y", modality="ct", cases=0)
    assert not any(tmp_path.iterdir())
