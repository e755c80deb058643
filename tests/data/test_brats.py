"""BraTS layout: 2023 and 2021 namings, ET relabelling, patient keys, errors."""

from __future__ import annotations

import numpy as np
import pytest

from synthrelease.data.brats import looks_like_brats, remap_brats_labels, scan_brats
from synthrelease.data.nifti import write_nifti
from synthrelease.data.sources import Layout, detect_layout, open_source
from synthrelease.errors import InputError, LabelError, LayoutError

SUFFIX = {2023: ["-t1c", "-t1n", "-t2w", "-t2f", "-seg"], 2021: ["_t1ce", "_t1", "_t2", "_flair", "_seg"]}


def _write_case(root, name, case, naming, *, skip=()):
    folder = root / name
    labels = case.labels.copy()
    if naming == 2021:
        labels[labels == 3] = 4
    for i, suffix in enumerate(SUFFIX[naming]):
        if suffix in skip:
            continue
        arr = labels if suffix.endswith("seg") else case.image[min(i, case.n_channels - 1)]
        write_nifti(arr, case.geometry, folder / f"{name}{suffix}.nii.gz")


@pytest.mark.parametrize(("naming", "names"), [(2023, ["BraTS-GLI-00001-000", "BraTS-GLI-00001-001",
                                                        "BraTS-GLI-00002-000"]),
                                                (2021, ["BraTS2021_00001", "BraTS2021_00002", "BraTS2021_00003"])])
def test_both_namings_load_with_2023_labels(tmp_path, make_case, naming, names):
    case = make_case("x", modality="MR")
    for name in names:
        _write_case(tmp_path, name, case, naming)
    assert looks_like_brats(tmp_path) and detect_layout(tmp_path) is Layout.BRATS
    source = open_source(tmp_path, modality="mri")
    assert source.channel_names == ("t1c", "t1n", "t2w", "t2f")
    loaded, _ = source.cases[0].load("sr-00000000")
    assert loaded.case_id == "sr-00000000"
    assert set(np.unique(loaded.labels)) == {0, 1, 2, 3}  # 2021's 4 became 3
    assert np.array_equal(loaded.labels, case.labels)
    keys = [c.patient_key for c in source.cases]
    if naming == 2023:
        assert keys == ["BraTS-GLI-00001", "BraTS-GLI-00001", "BraTS-GLI-00002"]


def test_channel_subset_and_order(tmp_path, make_case):
    case = make_case("x", modality="MR")
    _write_case(tmp_path, "BraTS-GLI-00001-000", case, 2023, skip=("-t1n", "-t2w"))
    source = open_source(tmp_path, modality="mri", channels=["t2f", "t1c"])
    loaded, _ = source.cases[0].load("sr-1")
    assert loaded.channel_names == ("t2f", "t1c")
    assert np.array_equal(loaded.image[1], case.image[0])
    with pytest.raises(LayoutError, match="-t1n"):
        open_source(tmp_path, modality="mri")
    with pytest.raises(InputError, match="unknown BraTS channels"):
        scan_brats(tmp_path, ["t9"])


def test_missing_seg_says_validation_sets_have_none(tmp_path, make_case):
    _write_case(tmp_path, "BraTS-GLI-00001-000", make_case("x", modality="MR"), 2023, skip=("-seg",))
    with pytest.raises(LayoutError, match="ship no labels"):
        open_source(tmp_path, layout="brats", modality="mri")


def test_brats_is_mri_only_and_unknown_labels_name_the_seg_file(tmp_path, make_case):
    case = make_case("x", modality="MR")
    _write_case(tmp_path, "BraTS-GLI-00001-000", case, 2023)
    with pytest.raises(LayoutError, match="MRI"):
        open_source(tmp_path, modality="ct")
    lab = case.labels.copy()
    lab[0, 0, 0] = 5
    write_nifti(lab, case.geometry, tmp_path / "BraTS-GLI-00001-000" / "BraTS-GLI-00001-000-seg.nii.gz")
    source = open_source(tmp_path, modality="mri")
    with pytest.raises(LabelError, match=r"-seg\.nii\.gz"):
        source.cases[0].load("sr-1")


def test_remap_only_for_2021():
    lab = np.array([0, 1, 2, 4], np.uint8)
    assert remap_brats_labels(lab, 2021).tolist() == [0, 1, 2, 3]
    assert remap_brats_labels(lab, 2023).tolist() == [0, 1, 2, 4]
