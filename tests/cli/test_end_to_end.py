"""The end-to-end path as a user runs it: separate processes, real exit codes."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from synthrelease.data.leakscan import find_strings
from synthrelease.data.phantoms.cohort import PLANTED_PHI_FILE


def synthrelease(*args, cwd):
    return subprocess.run([sys.executable, "-m", "synthrelease_cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def test_phantoms_then_ingest_as_a_user_would(tmp_path):
    res = synthrelease("phantoms", "P", "--modality", "ct", "--cases", 12, "--shape", 16, "--format", "dicom",
                       cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    res = synthrelease("ingest", "P", "--layout", "auto", "--modality", "ct", "--out", "WS", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    splits = json.loads((tmp_path / "WS" / "splits.json").read_text())
    assert len(splits["train"]) + len(splits["holdout"]) == 12 and len(splits["holdout"]) >= 2
    planted = json.loads((tmp_path / "P" / PLANTED_PHI_FILE).read_text())
    needles = {s for entry in planted.values() for s in entry["strings"]}
    assert find_strings(tmp_path / "WS", needles) == []
    res = synthrelease("ingest", "nowhere", "--modality", "ct", "--out", "WS2", cwd=tmp_path)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "Traceback" not in res.stderr


def test_demo_runs(tmp_path):
    res = synthrelease("demo", "--generator", "ldm", "--out", "D", "--cases", 8, "--samples", 8, "--shape", 16,
                       "--train-steps", 4, "--utility-steps", 5, "--json", cwd=tmp_path)
    # 1: the gate failed the demo set (4 unseen patients), so nothing was exported; the reason is the last line
    assert res.returncode == 1, res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("demo failed: the gate failed the demo set (integrity.cohort.n_holdout"), res.stderr
    assert "copycat" not in last  # the gate closed on the copycat control
    # a log (stderr is not a terminal) shows the precision, each stage's time and each check of the audits
    log = res.stderr.splitlines()
    assert "precision: fp32" in log  # the default
    assert any(re.match(r"\[ *\d+:\d\d\] 6/8 auditing the set .* \(5/8 took \d+:\d\d\)$", line) for line in log)
    assert any(re.match(r"\[ *\d+:\d\d\] finished in \d+:\d\d \(8/8 took \d+:\d\d\)$", line) for line in log)
    assert any(re.match(r"\[ *\d+\.\d s\] check privacy\.memorization \d+/\d+$", line) for line in log)
    summary = json.loads(res.stdout)
    assert summary["deidentification"]["found_in_workspace"] == 0
    assert summary["deidentification"]["planted_strings"] > 6 * 5
    assert summary["synthetic"]["n_cases"] == 8 and summary["synthetic"]["provenance"]["generator"] == "ldm"
    assert (tmp_path / "D" / "workspace" / "synthetic" / "demo" / "provenance.json").is_file()
    control, demo = summary["audit"]["copycat-control"], summary["audit"]["demo"]
    assert control["verdict"] == "fail"
    assert control["metrics"]["privacy.memorization.flagged_fraction"] >= 0.9  # the audit catches the copies
    # the control's audit stops once privacy has decided it: no segmentation arm is trained on copies
    assert "utility.segmentation" in control["not_run"] and demo["not_run"] == []
    assert all(not r["metric"].startswith("utility.") for r in control["failed_rules"])
    # 8 phantoms leave 4 unseen patients: the gate refuses the demo set on thin evidence, and nothing is exported
    assert demo["verdict"] == "fail" and demo["metrics"]["privacy.metadata.n_findings"] == 0
    assert any(r["metric"] == "integrity.cohort.n_holdout" for r in demo["failed_rules"])
    assert "release" not in summary and not (tmp_path / "D" / "package").exists()
    assert (tmp_path / "D" / "workspace" / "audits" / "demo" / "report.html").is_file()
    assert demo["report_html"] == str(tmp_path / "D" / "workspace" / "audits" / "demo" / "report.html")
    res = synthrelease("--quiet", "demo", "--out", "D", "--cases", 6, "--shape", 16, "--train-steps", 0,
                       cwd=tmp_path)
    assert res.returncode == 0, res.stderr  # a previous demo folder is replaced; nothing but the search claimed


def test_demo_with_the_wgan_on_shape_model_masks(tmp_path):
    res = synthrelease("--quiet", "demo", "--out", "D", "--cases", 10, "--holdout", 3, "--samples", 4,
                       "--shape", 16, "--train-steps", 2, "--utility-steps", 2, "--json", cwd=tmp_path)
    assert res.returncode == 1 and res.stderr.splitlines()[-1].startswith("demo failed: the gate failed the demo set")
    summary = json.loads(res.stdout)
    assert summary["training"]["generator"] == "wgan" and summary["training"]["steps"] == 2  # the default
    assert summary["audit"]["demo"]["metrics"]["integrity.cohort.n_holdout"] == 3  # --holdout
    provenance = summary["synthetic"]["provenance"]
    assert provenance["generator"] == "wgan" and "shape" in json.dumps(provenance)
    assert summary["audit"]["copycat-control"]["verdict"] == "fail"


def test_demo_on_mri_phantoms(tmp_path):
    """--modality mri: BraTS-layout phantoms through the same route (the WGAN on shape-model masks of BraTS labels)."""
    res = synthrelease("--quiet", "demo", "--modality", "mri", "--out", "D", "--cases", 10, "--holdout", 3,
                       "--samples", 4, "--shape", 16, "--train-steps", 3, "--utility-steps", 2, "--no-cpu-bf16",
                       "--json", cwd=tmp_path)
    assert res.returncode == 1 and res.stderr.splitlines()[-1].startswith("demo failed: the gate failed the demo set")
    summary = json.loads(res.stdout)
    assert summary["deidentification"]["found_in_workspace"] == 0
    assert set(summary["synthetic"]["cases_with_label"]) == {"NCR", "SNFH", "ET"}
    run = json.loads((tmp_path / "D" / "workspace" / "models" / "wgan-demo" / "run.json").read_text())
    assert run["precision"] == "fp32"  # --no-cpu-bf16
    assert summary["training"]["generator"] == "wgan"
    assert summary["audit"]["copycat-control"]["verdict"] == "fail"
    assert summary["audit"]["demo"]["metrics"]["integrity.cohort.n_holdout"] == 3
