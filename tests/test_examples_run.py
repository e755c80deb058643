"""The examples run as a user runs them: scripts in subprocesses on tiny phantom cohorts (16^3), real exit codes.

A phantom cohort this small fails the ``default`` gate (too few unseen patients): the scripts must handle that
exit 1. The export path is exercised under a permissive release policy written here (never shipped).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from synthrelease.data.dicom.rtstruct import match_roi, parse_roi_map
from synthrelease.data.phantoms.cohort import write_phantom_cohort
from synthrelease.data.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
BIN = Path(sys.executable).parent  # the environment's synthrelease command lives beside its python

# an ldm small enough to train for a few steps in seconds (the shipped configs are for 32^3 and up)
TINY_LDM = """generator = "ldm"
steps = 4
ae_steps = 2
batch_size = 2
ae_channels = [8, 8]
norm_groups = 4
latent_channels = 2
unet_channels = [8, 16]
unet_attention = [false, false]
head_channels = 8
"""
# a release policy that any audit with a holdout passes: for testing the export path only
PERMISSIVE = """name = "examples-test-permissive"
description = "tests only: passes any audit with an unseen patient, so that the export path runs on phantoms"
release = true

[[rule]]
metric = "integrity.cohort.n_holdout"
op = ">="
threshold = 1
severity = "fail"
why = "at least one unseen patient"
"""
# the utility check trains three segmentation models: left out of these runs (its own tests cover it)
NO_UTILITY = ("--only", "integrity", "--only", "privacy", "--only", "fidelity")
TINY_RUN = {"CASES": "8", "SHAPE": "16", "HOLDOUT": "0.25", "N_SAMPLES": "4", "SAMPLE_STEPS": "3",
            "EMBEDDING_STEPS": "1", "AUDIT_ARGS": " ".join(NO_UTILITY)}


Quickstart = tuple[subprocess.CompletedProcess[str], Path]


def env(**extra: str) -> dict[str, str]:
    assert (BIN / "synthrelease").is_file(), f"synthrelease is not installed beside {sys.executable}"
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **extra}


def run(args: list[str], *, cwd: Path = ROOT, timeout: int = 600, env_vars: Mapping[str, str] | None = None,
        **extra: str) -> subprocess.CompletedProcess[str]:
    """Run a command in its own process group, so that a timeout stops the whole script, not only bash."""
    variables = {**(env_vars or {}), **extra}
    with subprocess.Popen(args, cwd=cwd, env=env(**variables), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, start_new_session=True) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
    return subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)


def tiny_files(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny-ldm.toml").write_text(TINY_LDM)
    (folder / "permissive.toml").write_text(PERMISSIVE)
    return folder / "tiny-ldm.toml", folder / "permissive.toml"


# -- quickstart.sh ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> Quickstart:
    """One tiny quickstart run (about a minute on 2 busy cores), shared by the tests that read its outcome."""
    tmp = tmp_path_factory.mktemp("quickstart")
    config, _ = tiny_files(tmp)
    res = run(["bash", str(EXAMPLES / "quickstart.sh"), str(tmp / "out")], CONFIG=str(config), env_vars=TINY_RUN)
    return res, tmp / "out"


def test_scripts_are_executable_bash_with_strict_mode() -> None:
    for name in ("quickstart.sh", "audit_external_set.sh"):
        path = EXAMPLES / name
        text = path.read_text()
        assert os.access(path, os.X_OK), name
        assert text.startswith("#!/usr/bin/env bash\n") and "\nset -euo pipefail\n" in text, name
        assert subprocess.run(["bash", "-n", str(path)]).returncode == 0, name
    assert not (EXAMPLES / "phantom_quickstart.sh").exists()  # replaced by quickstart.sh


def test_quickstart_runs_to_the_gate_and_stops_when_it_fails(quickstart: Quickstart) -> None:
    res, out = quickstart
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    for stage in ("1/8 phantoms", "2/8 ingest", "3/8 train", "4/8 sample", "5/8 audit"):
        assert f"== {stage}" in res.stdout
    # 8 patients leave 2 unseen: the default gate fails (audit exit 1), the script goes on and reports it
    assert "audit exit code 1: the gate says FAIL" in res.stdout
    assert "## synthrelease audit: **FAIL**" in res.stdout  # summary.md, read for the user
    assert res.stdout.rstrip().splitlines()[-1].startswith("verdict: FAIL (policy default")
    audit = out / "WS" / "audits" / "ldm-s1"
    report = json.loads((audit / "report.json").read_text())
    assert report["verdict"] == "fail" and report["policy"]["name"] == "default"
    assert "integrity.cohort.n_holdout" in report["gate"]["failed"]
    assert report["synthetic_set"]["generator"] == "ldm"
    for name in ("report.html", "junit.xml", "summary.md"):
        assert (audit / name).is_file(), name
    assert len(list((out / "WS" / "synthetic" / "ldm-s1" / "labelsTr").glob("*.nii.gz"))) == 4
    # keygen, export and verify were not attempted
    assert "6-8/8 keygen, export, verify: skipped" in res.stdout and "== 6/8" not in res.stdout
    assert not (out / "release").exists() and not (out / "keys").exists()


def test_export_refuses_the_quickstart_set_that_failed_its_gate(quickstart: Quickstart) -> None:
    _, out = quickstart
    res = run(["synthrelease", "export", str(out / "WS"), "--synthetic", "ldm-s1", "--out", str(out / "pkg")])
    assert res.returncode == 1, res.stderr
    assert res.stderr.startswith("refused: ") and "did not pass its audit under policy 'default'" in res.stderr
    assert not (out / "pkg").exists()


def test_quickstart_refuses_an_existing_folder(tmp_path: Path) -> None:
    res = run(["bash", str(EXAMPLES / "quickstart.sh"), str(tmp_path)])
    assert res.returncode == 2 and "already exists" in res.stderr
    res = run(["bash", str(EXAMPLES / "quickstart.sh"), str(tmp_path / "new")], MODALITY="pet")
    assert res.returncode == 2 and "MODALITY must be ct or mri" in res.stderr


@pytest.mark.slow
def test_quickstart_exports_and_verifies_when_the_gate_passes(tmp_path: Path) -> None:
    config, permissive = tiny_files(tmp_path)
    out = tmp_path / "out"
    res = run(["bash", str(EXAMPLES / "quickstart.sh"), str(out)], CONFIG=str(config), POLICY=str(permissive),
              env_vars=TINY_RUN)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "audit exit code 0: the gate says PASS" in res.stdout
    for stage in ("6/8 keygen", "7/8 export", "8/8 verify"):
        assert f"== {stage}" in res.stdout
    assert res.stdout.splitlines().count("valid") == 2  # the tarball and the folder
    package = out / "release" / "synth-ct-1.0"
    assert (package / "MANIFEST.sig").is_file() and (out / "release" / "synth-ct-1.0.tar.gz").is_file()
    assert (out / "keys" / "publisher.key.pub").is_file()


# -- python_api.py ------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_python_api_exports_verifies_and_loads_when_the_gate_passes(tmp_path: Path) -> None:
    config, permissive = tiny_files(tmp_path)
    out = tmp_path / "out"
    res = run([sys.executable, str(EXAMPLES / "python_api.py"), "--out", str(out), "--cases", "8", "--shape", "16",
               "--holdout", "0.25", "--config", str(config), "--samples", "4", "--sample-steps", "3",
               "--embedding-steps", "1", "--policy", str(permissive), *NO_UTILITY])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    for stage in ("1/7 phantoms", "2/7 ingest", "3/7 train", "4/7 sample", "5/7 audit", "6/7 keygen + export",
                  "7/7 verify + load"):
        assert f"== {stage}" in res.stdout, stage
    assert "6 training and 2 unseen patients" in res.stdout
    assert "verdict PASS" in res.stdout and "\nvalid\n" in res.stdout and "load(): 4 cases" in res.stdout
    assert res.stdout.rstrip().splitlines()[-1] == f"verdict: PASS (policy {permissive})"
    package = out / "release" / "synth-ct-1.0"
    assert (package / "MANIFEST.sig").is_file() and package.with_name("synth-ct-1.0.tar.gz").is_file()
    report = json.loads((package / "audit" / "report.json").read_text())
    assert report["verdict"] == "pass" and report["policy"]["name"] == "examples-test-permissive"


# -- audit_external_set.sh ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def external_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three nnU-Net raw folders of CT phantoms in HU, as another tool would leave them."""
    tmp = tmp_path_factory.mktemp("external")
    return {name: write_phantom_cohort(tmp / name, modality="ct", cases=n, shape=16, seed=seed, fmt="nnunet")
            for name, n, seed in (("train", 6, 0), ("holdout", 3, 1), ("synthetic", 3, 2))}


def audit_external(folders: dict[str, Path], out: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return run(["bash", str(EXAMPLES / "audit_external_set.sh"), str(folders["train"]), str(folders["holdout"]),
                str(folders["synthetic"]), str(out), *options])


def test_audit_external_set_prints_the_summary_and_passes_the_exit_code_on(external_folders: dict[str, Path],
                                                                          tmp_path: Path) -> None:
    # a partial audit never passes the default gate: exit 1, with the reports written and the summary shown
    out = tmp_path / "audit-fail"
    res = audit_external(external_folders, out, "--only", "integrity", "--only", "privacy.metadata")
    assert res.returncode == 1, res.stderr
    assert "## synthrelease audit: **FAIL**" in res.stdout and "gate FAILED (exit 1)" in res.stdout
    assert json.loads((out / "report.json").read_text())["verdict"] == "fail"
    assert "<failure" in (out / "junit.xml").read_text() and (out / "report.html").is_file()
    # a policy whose rules all ran and hold: exit 0
    _, permissive = tiny_files(tmp_path)
    out = tmp_path / "audit-pass"
    res = audit_external(external_folders, out, "--only", "integrity", "--policy", str(permissive))
    assert res.returncode == 0, res.stderr
    assert "## synthrelease audit: **PASS**" in res.stdout and "gate passed (exit 0)" in res.stdout


def test_audit_external_set_reports_bad_input_as_exit_2(external_folders: dict[str, Path], tmp_path: Path) -> None:
    res = run(["bash", str(EXAMPLES / "audit_external_set.sh"), "a", "b"])
    assert res.returncode == 2 and "usage:" in res.stderr
    res = audit_external({**external_folders, "holdout": tmp_path / "nowhere"}, tmp_path / "audit")
    assert res.returncode == 2 and "the audit could not run (exit 2)" in res.stderr
    assert "synthrelease audit:" not in res.stdout and not (tmp_path / "audit").exists()


# -- CI jobs -------------------------------------------------------------------------------------------------------

def gitlab_job() -> dict[str, Any]:
    return dict(yaml.safe_load((EXAMPLES / "ci-release-audit.yml").read_text())["release-audit"])


def test_gitlab_job_audits_verifies_and_publishes_junit_even_on_failure() -> None:
    job = gitlab_job()
    script = "\n".join(job["script"])
    assert job["script"][0].startswith("python3.11 -m venv .venv && .venv/bin/pip install -q -c ")
    assert re.search(r"synthrelease (--quiet )?audit ", script) and "synthrelease verify " in script
    assert "|| gate=$?" in script and 'exit "$gate"' in script  # exit 1 fails the job, after the reports are kept
    artifacts = job["artifacts"]
    assert artifacts["when"] == "always"
    assert artifacts["reports"]["junit"] == "release-audit/junit.xml"
    assert "release-audit/" in artifacts["paths"] and "report.html" in script
    assert job.get("allow_failure", False) is False and "when" not in job  # a manual job would not fail a pipeline


def test_github_workflow_audits_verifies_and_publishes_junit_even_on_failure() -> None:
    wf = yaml.safe_load((EXAMPLES / "ci-release-audit.github.yml").read_text())
    assert "workflow_dispatch" in (wf.get("on") or wf.get(True))  # PyYAML reads the key `on` as True
    steps = wf["jobs"]["release-audit"]["steps"]
    runs = [s.get("run", "") for s in steps]
    assert any(r.startswith("python3.11 -m venv .venv && .venv/bin/pip install -q -c constraints.txt") for r in runs)
    audit = next(s for s in steps if "synthrelease --quiet audit " in s.get("run", ""))
    assert 'exit "$gate"' in audit["run"] and "if" not in audit
    verify = next(s for s in steps if "synthrelease verify " in s.get("run", ""))
    assert "if" not in verify  # runs only after a passed gate
    always = [s for s in steps if s.get("if") == "always()"]
    assert any(s["uses"].startswith("actions/upload-artifact") and s["with"]["path"] == "release-audit/"
               for s in always)
    assert any("junit" in s["uses"] and s["with"]["report_paths"] == "release-audit/junit.xml" for s in always)
    assert steps.index(audit) < min(steps.index(s) for s in always)


def test_gitlab_job_script_gates_exports_and_verifies(quickstart: Quickstart, tmp_path: Path) -> None:
    """The job's script lines as GitLab runs them (bash -eo pipefail), on the quickstart's workspace."""
    _, out = quickstart
    ws = tmp_path / "WS"
    shutil.copytree(out / "WS", ws)  # leave the quickstart's audit as it was
    _, permissive = tiny_files(tmp_path)
    keys = tmp_path / "keys"
    keys.mkdir()
    assert run(["synthrelease", "keygen", str(keys / "publisher.key")]).returncode == 0
    (tmp_path / "releases").mkdir()
    job = gitlab_job()
    script = "\n".join(line for line in job["script"] if "pip install" not in line)
    variables: dict[str, str] = {**job["variables"], "SYNTHRELEASE_WS": str(ws), "SYNTHRELEASE_POLICY": str(permissive),
                 "SYNTHRELEASE_AUDIT_OPTIONS": "--only integrity",
                 "RELEASE_DIR": str(tmp_path / "releases"), "PUBLISHER_KEY": str(keys / "publisher.key"),
                 "PUBLISHER_PUB": str(keys / "publisher.key.pub")}
    project = tmp_path / "project"
    project.mkdir()
    res = run(["bash", "-eo", "pipefail", "-c", script.replace(".venv/bin/synthrelease", "synthrelease")],
              cwd=project, env_vars=variables)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "## synthrelease audit: **PASS**" in res.stdout and res.stdout.rstrip().endswith("valid")
    for name in ("report.html", "junit.xml", "summary.md"):
        assert (project / "release-audit" / name).is_file(), name
    assert (tmp_path / "releases" / "synth-ct-1.0.0.tar.gz").is_file()


# -- hnscc_ct/ and brats_mri/ ---------------------------------------------------------------------------------------

def readme_block(readme: Path) -> str:
    """The bash block that follows the README's 'tests/test_examples_run.py runs the next block' comment."""
    after = readme.read_text().split("<!-- tests/test_examples_run.py runs the next block", 1)[1]
    return after.split("```bash\n", 1)[1].split("\n```", 1)[0]


def run_block(block: str, **values: Path) -> subprocess.CompletedProcess[str]:
    """Run a README block with its variable assignments replaced by ``values`` (each one must be replaced)."""
    lines = block.splitlines()
    assigned = [m.group(1) for ln in lines if (m := re.match(r"([A-Z_]+)=", ln))]
    assert sorted(assigned) == sorted(values), assigned
    body = [ln for ln in lines if not re.match(r"[A-Z_]+=", ln)]
    head = [f"{k}={shlex.quote(str(v))}" for k, v in values.items()]
    return run(["bash", "-euo", "pipefail", "-c", "\n".join(head + body)])


ROI_EXPECTED = {
    1: ["GTV", "GTVp", "GTV-P", "GTV_primary", "GTV_Primary", "GTVn", "GTV-N1", "GTV_LN", "GTV 70", "gtvp", "Tumor"],
    2: ["Mandible", "Mandibule", "Bone_Mandible", "Mandible_Bone", *(f"C{i}" for i in range(1, 8)), "C2_vertebra",
        "Vertebrae", "Skull_Base", "SkullBase", "Base_of_Skull", "Clivus", "Hyoid", "Bone"],
    0: ["CTV_70", "PTV_70", "PTV70", "Parotid_L", "SpinalCord", "Brainstem", "Mandible_PRV5", "Cord_PRV", "C8",
        "Couch", "External", "BODY", "Larynx", "Esophagus"],
}


def test_hnscc_roi_map_labels_tcia_names() -> None:
    one_line = run(["bash", "-c", "grep -v '^#' examples/hnscc_ct/roi_map.txt | tr -d '\\n'"]).stdout
    roi_map = parse_roi_map(one_line)
    for label, names in ROI_EXPECTED.items():
        for name in names:
            hits = match_roi(name, roi_map)
            assert (roi_map[hits[-1]][0] if hits else 0) == label, name  # painted in order: the last match wins
    assert f"\n{one_line}\n" in (EXAMPLES / "hnscc_ct" / "README.md").read_text()  # the README's string is current


def add_series_without_contours(source: Path) -> None:
    """A diagnostic CT beside one patient's planning CT, as TCIA downloads have: same patient, no RTSTRUCT."""
    import pydicom
    from pydicom.uid import generate_uid

    patient = sorted(p for p in source.iterdir() if p.is_dir())[0]
    (patient / "diagnostic").mkdir()
    series_uid = generate_uid()
    for path in sorted(patient.glob("CT_*.dcm")):
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID, ds.SOPInstanceUID = series_uid, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(patient / "diagnostic" / path.name)


def test_hnscc_readme_prepares_and_ingests_a_tcia_style_download(tmp_path: Path) -> None:
    source = write_phantom_cohort(tmp_path / "download", modality="ct", cases=4, shape=16, seed=3, fmt="dicom")
    add_series_without_contours(source)
    res = run(["synthrelease", "ingest", str(source), "--modality", "ct", "--out", str(tmp_path / "raw")])
    assert res.returncode == 2 and "image series has no RTSTRUCT or SEG" in res.stderr  # why the selection exists
    block = readme_block(EXAMPLES / "hnscc_ct" / "README.md")
    res = run_block(block, HNSCC=source, SEL=tmp_path / "selected", WS=tmp_path / "WS",
                    ROI_MAP=EXAMPLES / "hnscc_ct" / "roi_map.txt")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "5 CT series, 4 structure sets; 4 CT series have one (1 without are left out)" in res.stderr
    assert sorted(p.name for p in (tmp_path / "selected").iterdir()) == [f"case-000{i}" for i in range(1, 5)]
    ws = Workspace(tmp_path / "WS")
    assert len(ws.splits.train) + len(ws.splits.holdout) == 4
    for case in ws.real():
        assert case.image.shape == (1, 96, 96, 96)
        assert set(case.label_volumes_ml()) == {"tumour", "bone"} and min(case.label_volumes_ml().values()) > 0


def test_brats_readme_ingests_the_brats_2023_layout(tmp_path: Path) -> None:
    source = write_phantom_cohort(tmp_path / "ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData", modality="mri",
                                  cases=4, shape=16, seed=4, fmt="brats")
    assert all(p.name.startswith("BraTS-GLI-") for p in source.iterdir() if p.is_dir())
    res = run_block(readme_block(EXAMPLES / "brats_mri" / "README.md"), BRATS=source, WS=tmp_path / "WS")
    assert res.returncode == 0, res.stderr[-3000:]
    ws = Workspace(tmp_path / "WS")
    assert ws.config["preprocessing"]["target_shape"] == [96, 96, 96]
    case = next(iter(ws.real()))
    assert case.channel_names == ("t1c", "t1n", "t2w", "t2f") and case.image.shape == (4, 96, 96, 96)
    assert set(case.label_volumes_ml()) == {"NCR", "SNFH", "ET"}
