"""The CLI through click's CliRunner: conventions, exit codes, and every bad input of the foundation issue."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner

from synthrelease import __version__
from synthrelease.data.nifti import write_nifti
from synthrelease.data.nnunet import write_nnunet
from synthrelease_cli.main import cli


def run(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


PROGRESS_LINE = re.compile(r"^\[ *\d+\.\d s\] .+ \d+/\d+$")  # what a log gets of the work done before the error


def assert_bad_input(result, *needles: str) -> None:
    """Exit 2, exactly one line on stderr starting 'error:' (the last, after any progress lines), no traceback,
    naming what it should."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.stderr)
    lines = [line for line in result.stderr.strip().splitlines() if not PROGRESS_LINE.match(line)]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert result.stderr.strip().splitlines()[-1] == lines[0]
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_version_and_help():
    res = run("--version")
    assert res.exit_code == 0 and __version__ in res.output
    res = run("--help")
    assert res.exit_code == 0
    for verb in ("demo", "phantoms", "ingest", "info"):
        assert verb in res.output


def test_help_does_not_import_heavy_modules():
    import subprocess
    import sys

    code = ("import sys; from synthrelease_cli.main import cli; "
            "heavy = [m for m in ('torch', 'SimpleITK', 'pydicom', 'monai', 'scipy') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.fixture(scope="module")
def dicom_src(tmp_path_factory):
    root = tmp_path_factory.mktemp("dcm") / "src"
    res = run("phantoms", root, "--modality", "ct", "--cases", 3, "--shape", 16, "--format", "dicom", "--seed", 1)
    assert res.exit_code == 0, res.output
    return root


@pytest.fixture
def nnunet_src(tmp_path, make_case):
    cases = [make_case(f"c{i}", seed=i) for i in range(3)]
    return write_nnunet(cases, tmp_path / "src", name="src", schema=cases[0].schema, modality="CT",
                        channel_names=("CT",)), cases


def test_phantoms_ingest_info_happy_path(tmp_path, dicom_src):
    ws = tmp_path / "ws"
    res = run("ingest", dicom_src, "--modality", "ct", "--out", ws, "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["splits"]["train"]["n_cases"] + summary["splits"]["holdout"]["n_cases"] == 3
    res = run("info", ws, "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["modality"] == "CT"
    res = run("--quiet", "info", ws)
    assert res.exit_code == 0 and "train" in res.stdout and res.stderr == ""


def test_missing_path(tmp_path):
    assert_bad_input(run("ingest", tmp_path / "nope", "--modality", "ct", "--out", tmp_path / "ws"),
                     "nope", "does not exist")
    assert not (tmp_path / "ws").exists()


def test_empty_source(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_bad_input(run("ingest", tmp_path / "empty", "--modality", "ct", "--out", tmp_path / "ws"), "empty")
    assert not (tmp_path / "ws").exists()


def test_truncated_nifti(tmp_path, nnunet_src):
    src, _ = nnunet_src
    path = src / "imagesTr" / "c1_0000.nii.gz"
    path.write_bytes(path.read_bytes()[:300])
    assert_bad_input(run("ingest", src, "--modality", "ct", "--out", tmp_path / "ws"), "c1_0000.nii.gz",
                     "corrupt or truncated")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


@pytest.mark.parametrize("what", ["shape", "spacing"])
def test_image_and_mask_on_different_grids(tmp_path, nnunet_src, what):
    src, cases = nnunet_src
    case = cases[2]
    if what == "shape":
        write_nifti(case.labels[:, :, :-2], case.geometry, src / "labelsTr" / "c2.nii.gz")
    else:
        geom = case.geometry.__class__(spacing=(2.0, 2.0, 2.0), origin=case.geometry.origin)
        write_nifti(case.labels, geom, src / "labelsTr" / "c2.nii.gz")
    assert_bad_input(run("ingest", src, "--modality", "ct", "--out", tmp_path / "ws"), "c2_0000.nii.gz", "differs")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_voxels(tmp_path, nnunet_src, value):
    src, cases = nnunet_src
    img = cases[0].image[0].copy()
    img[4, 4, 4] = value
    write_nifti(img, cases[0].geometry, src / "imagesTr" / "c0_0000.nii.gz")
    assert_bad_input(run("ingest", src, "--modality", "ct", "--out", tmp_path / "ws"), "c0_0000.nii.gz", "NaN")


def test_label_not_in_schema(tmp_path, nnunet_src):
    src, cases = nnunet_src
    lab = cases[1].labels.copy()
    lab[2, 2, 2] = 5
    write_nifti(lab, cases[1].geometry, src / "labelsTr" / "c1.nii.gz")
    assert_bad_input(run("ingest", src, "--modality", "ct", "--out", tmp_path / "ws"), "labelsTr/c1.nii.gz", "[5]")


def _copy(src, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst


def test_dicom_without_pixel_data(tmp_path, dicom_src):
    src = _copy(dicom_src, tmp_path)
    victim = sorted(src.glob("*/CT_*.dcm"))[3]
    ds = pydicom.dcmread(victim)
    del ds.PixelData
    ds.save_as(victim)
    assert_bad_input(run("ingest", src, "--modality", "ct", "--out", tmp_path / "ws"), victim.name, "pixel data")
    assert not (tmp_path / "ws").exists()


def test_rtstruct_referencing_another_series(tmp_path, dicom_src):
    src = _copy(dicom_src, tmp_path)
    rt_path = sorted(src.glob("*/RTSTRUCT*.dcm"))[0]
    ds = pydicom.dcmread(rt_path)
    series = ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    series.SeriesInstanceUID = pydicom.uid.generate_uid(entropy_srcs=["another series"])
    ds.save_as(rt_path)
    assert_bad_input(run("ingest", src, "--modality", "ct", "--out", tmp_path / "ws"), rt_path.name,
                     "not in the source")


def test_mixed_modalities(tmp_path, dicom_src):
    src = _copy(dicom_src, tmp_path)
    res = run("phantoms", tmp_path / "mr", "--modality", "mri", "--cases", 1, "--shape", 16, "--format", "dicom")
    assert res.exit_code == 0, res.output
    mr_case = next(p for p in (tmp_path / "mr").iterdir() if p.is_dir())
    shutil.copytree(mr_case, src / mr_case.name)
    assert_bad_input(run("ingest", src, "--modality", "ct", "--out", tmp_path / "ws"), "mixed")


def test_usage_errors_exit_2(tmp_path):
    res = run("ingest", tmp_path, "--modality", "pet", "--out", tmp_path / "ws")
    assert res.exit_code == 2
    res = run("ingest", tmp_path, "--modality", "ct", "--out", tmp_path / "ws", "--spacing", "1,x,2")
    assert res.exit_code == 2
    res = run("ingest", tmp_path, "--modality", "ct", "--out", tmp_path / "ws", "--holdout", "1.5")
    assert_bad_input(res, "holdout")


def test_existing_output_is_not_overwritten(tmp_path, nnunet_src):
    src, _ = nnunet_src
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "keep.txt").write_text("mine")
    assert_bad_input(run("ingest", src, "--modality", "ct", "--out", tmp_path / "ws"), "already exists")
    assert (tmp_path / "ws" / "keep.txt").read_text() == "mine"


def test_internal_errors_exit_3_and_debug_shows_traceback(monkeypatch, tmp_path, nnunet_src):
    import synthrelease.data.ingest as ingest_mod

    def boom(*a, **k):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(ingest_mod, "ingest", boom)
    src, _ = nnunet_src
    res = run("ingest", src, "--modality", "ct", "--out", tmp_path / "ws")
    assert res.exit_code == 3 and "internal error" in res.stderr and "Traceback" not in res.stderr
    res = run("--debug", "ingest", src, "--modality", "ct", "--out", tmp_path / "ws")
    assert res.exit_code == 3 and "Traceback" in res.stderr
