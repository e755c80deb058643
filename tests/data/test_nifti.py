"""NIfTI I/O: round trips keep voxels and geometry; corrupt files are caught; headers are written fresh."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from synthrelease.data.case import Geometry
from synthrelease.data.nifti import read_nifti, read_nifti_geometry, write_nifti
from synthrelease.errors import DataError, GeometryError

GEOM = Geometry(spacing=(0.8, 1.2, 2.5), origin=(-12.5, 30.0, 7.25),
                direction=(0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))


@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.uint8])
def test_round_trip_keeps_voxels_and_geometry(tmp_path, dtype):
    arr = (np.random.default_rng(1).normal(size=(7, 9, 11)) * 50).astype(dtype)
    path = write_nifti(arr, GEOM, tmp_path / "a.nii.gz")
    back, geom = read_nifti(path)
    assert back.dtype == dtype and np.array_equal(back, arr)
    assert geom.matches(GEOM, tol=1e-5)
    shape, hgeom = read_nifti_geometry(path)
    assert shape == (7, 9, 11) and hgeom.matches(GEOM, tol=1e-5)


def test_writer_is_deterministic(tmp_path):
    arr = np.arange(6 * 7 * 8, dtype=np.float32).reshape(6, 7, 8)
    a = write_nifti(arr, GEOM, tmp_path / "a.nii.gz").read_bytes()
    b = write_nifti(arr, GEOM, tmp_path / "b.nii.gz").read_bytes()
    assert a == b


def test_writer_clears_free_text_header_fields(tmp_path):
    arr = np.zeros((4, 5, 6), np.float32)
    src = nib.Nifti1Image(arr, np.eye(4))
    src.header["descrip"] = b"DOE^JANE MRN123"
    nib.save(src, str(tmp_path / "src.nii.gz"))
    data, geom = read_nifti(tmp_path / "src.nii.gz")
    out = write_nifti(data, geom, tmp_path / "out.nii.gz")
    header = nib.load(str(out)).header
    for key in ("descrip", "aux_file", "intent_name", "db_name"):
        assert header[key].item() in (b"", ""), key
    assert b"DOE" not in gzip.decompress(out.read_bytes())


@pytest.mark.parametrize("keep", [0.05, 0.5, 0.99])
def test_truncated_gzip_is_rejected(tmp_path, keep):
    arr = np.random.default_rng(0).normal(size=(8, 8, 8)).astype(np.float32)
    good = write_nifti(arr, GEOM, tmp_path / "good.nii.gz").read_bytes()
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(good[: int(len(good) * keep)])
    with pytest.raises(DataError, match="corrupt or truncated") as info:
        read_nifti(bad)
    assert "bad.nii.gz" in str(info.value)


def test_uncompressed_truncated_and_garbage_files_are_rejected(tmp_path):
    arr = np.ones((8, 8, 8), np.float32)
    raw = gzip.decompress(write_nifti(arr, GEOM, tmp_path / "a.nii.gz").read_bytes())
    (tmp_path / "ok.nii").write_bytes(raw)
    assert read_nifti(tmp_path / "ok.nii")[0].shape == (8, 8, 8)
    (tmp_path / "short.nii").write_bytes(raw[:-4])
    with pytest.raises(DataError):
        read_nifti(tmp_path / "short.nii")
    (tmp_path / "junk.nii.gz").write_bytes(b"not a nifti at all" * 40)
    with pytest.raises(DataError):
        read_nifti(tmp_path / "junk.nii.gz")


def test_missing_file_and_4d_volume(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_nifti(tmp_path / "nope.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.float32), np.eye(4)), str(tmp_path / "four.nii.gz"))
    with pytest.raises(GeometryError, match="4-D"):
        read_nifti(tmp_path / "four.nii.gz")
