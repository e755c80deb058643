"""nnU-Net raw layout: write -> read round trip, lazy cohort, layout errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from synthrelease.data.nifti import write_nifti
from synthrelease.data.nnunet import read_nnunet, write_nnunet
from synthrelease.errors import DataError, GeometryError, LabelError, LayoutError


def _write(tmp_path, cases):
    first = cases[0]
    return write_nnunet(cases, tmp_path / "ds", name="ds", schema=first.schema, modality=first.modality,
                        channel_names=first.channel_names)


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_round_trip_keeps_voxels_geometry_and_schema(tmp_path, make_case, modality):
    cases = [make_case(f"case{i}", modality=modality, seed=i) for i in range(3)]
    root = _write(tmp_path, cases)
    data = json.loads((root / "dataset.json").read_text())
    assert data["numTraining"] == 3 and data["file_ending"] == ".nii.gz"
    assert data["channel_names"] == {str(i): c for i, c in enumerate(cases[0].channel_names)}
    cohort = read_nnunet(root)
    assert cohort.case_ids == ["case0", "case1", "case2"]
    assert cohort.modality.value == modality and cohort.schema == cases[0].schema
    for orig, back in zip(cases, cohort, strict=True):
        assert np.array_equal(orig.image, back.image) and np.array_equal(orig.labels, back.labels)
        assert back.geometry.matches(orig.geometry, tol=1e-5)
    files = sorted(p.name for p in (root / "imagesTr").iterdir())
    assert files[0] == "case0_0000.nii.gz"


def test_mismatched_image_and_label_grids(tmp_path, make_case):
    root = _write(tmp_path, [make_case("a")])
    img = np.zeros((16, 18, 21), np.float32)
    write_nifti(img, make_case("a").geometry, root / "imagesTr" / "a_0000.nii.gz")
    with pytest.raises(GeometryError, match="differs from label map") as info:
        read_nnunet(root)[0]
    assert "a_0000.nii.gz" in str(info.value)


def test_mismatched_spacing_is_caught(tmp_path, make_case):
    case = make_case("a")
    root = _write(tmp_path, [case])
    write_nifti(case.image[0], case.geometry.__class__(spacing=(1.0, 1.0, 1.0), origin=case.geometry.origin),
                root / "imagesTr" / "a_0000.nii.gz")
    with pytest.raises(GeometryError):
        read_nnunet(root)[0]


def test_nan_voxels_and_unknown_labels_name_the_file(tmp_path, make_case):
    case = make_case("a")
    root = _write(tmp_path, [case])
    img = case.image[0].copy()
    img[3, 3, 3] = np.nan
    write_nifti(img, case.geometry, root / "imagesTr" / "a_0000.nii.gz")
    with pytest.raises(DataError, match="NaN") as info:
        read_nnunet(root)[0]
    assert "a_0000.nii.gz" in str(info.value)
    root2 = _write(tmp_path / "two", [case])
    lab = case.labels.copy()
    lab[0, 0, 0] = 9
    write_nifti(lab, case.geometry, root2 / "labelsTr" / "a.nii.gz")
    with pytest.raises(LabelError, match=r"\[9\]") as info2:
        read_nnunet(root2)[0]
    assert "labelsTr/a.nii.gz" in str(info2.value)


def test_layout_errors(tmp_path, make_case):
    with pytest.raises(LayoutError, match=r"dataset\.json"):
        read_nnunet(tmp_path)
    root = _write(tmp_path, [make_case("a"), make_case("b")])
    (root / "imagesTr" / "b_0000.nii.gz").unlink()
    with pytest.raises(LayoutError, match="without its image"):
        read_nnunet(root)
    (root / "labelsTr" / "b.nii.gz").unlink()
    (root / "imagesTr" / "orphan_0000.nii.gz").write_bytes(b"")
    with pytest.raises(LayoutError, match="without a label map"):
        read_nnunet(root)
    (root / "dataset.json").write_text("{broken")
    with pytest.raises(LayoutError, match="not valid JSON"):
        read_nnunet(root)
