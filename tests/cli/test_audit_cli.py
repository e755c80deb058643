"""``synthrelease audit`` through the CLI: workspace and workspace-free forms, --only, --json, bad input (exit 2)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from synthrelease.data.ingest import IngestOptions, ingest
from synthrelease.data.phantoms.cohort import write_phantom_cohort
from synthrelease_cli.main import cli


def run(*args: object):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("audit")
    src = write_phantom_cohort(root / "src", modality="ct", cases=10, shape=16, seed=0, fmt="nnunet")
    ws = ingest(src, root / "ws", modality="ct", options=IngestOptions(seed=0, holdout=0.4)).root
    assert run("train", ws, "--generator", "copycat", "--name", "cc").exit_code == 0
    assert run("sample", ws, "--model", "cc", "--n", 12, "--seed", 1, "--name", "copies").exit_code == 0
    return ws


def test_a_log_of_the_audit_names_each_check(ws: Path) -> None:
    """stderr that is not a terminal (CliRunner, a log, CI) gets a plain progress line per check, not bar frames."""
    res = run("audit", ws, "--synthetic", "copies", "--only", "privacy.metadata", "--only", "integrity.cohort",
              "--policy", "none")
    assert res.exit_code == 0, res.output
    lines = [line for line in res.stderr.splitlines() if re.match(r"^\[ *\d+\.\d s\] ", line)]
    names = [line.split("] ", 1)[1] for line in lines]
    checks = sorted(n for n in names if n.startswith("check "))
    assert [n.rsplit(" ", 1)[0] for n in checks] == ["check integrity.cohort", "check privacy.metadata"], res.stderr
    assert sorted(n.rsplit(" ", 1)[1] for n in checks) == ["0/2", "1/2"] and names[-1] == "checks 2/2"
    assert "\x1b" not in res.stderr


def test_audit_workspace_set_writes_report(ws: Path) -> None:
    res = run("--quiet", "audit", ws, "--synthetic", "copies", "--only", "privacy.memorization",
              "--only", "privacy.metadata", "--embedding-steps", 5, "--policy", "none")
    assert res.exit_code == 0, res.output
    path = ws / "audits" / "copies" / "report.json"
    assert res.stdout.strip() == str(path)
    report = json.loads(path.read_text())
    assert set(report["checks"]) == {"privacy.memorization", "privacy.metadata"}
    assert report["synthetic_set"]["negative_control"] is True and report["synthetic_set"]["generator"] == "copycat"
    assert report["metrics"]["privacy.memorization.flagged_fraction"] >= 0.9
    assert report["metrics"]["privacy.metadata.n_findings"] == 0
    figures = list((ws / "audits" / "copies" / "figures").glob("*.png"))
    assert figures  # evidence, inside the workspace
    assert list((ws / "cache" / "embedding").glob("*.pt"))


def test_audit_json_and_workspace_free_form(ws: Path, tmp_path: Path) -> None:
    # the workspace's real cohort split by hand into two folders, audited without the workspace
    from synthrelease.data.nnunet import write_nnunet
    from synthrelease.data.workspace import Workspace

    w = Workspace(ws)
    for name, cohort in (("train", w.train()), ("holdout", w.holdout())):
        write_nnunet(list(cohort), tmp_path / name, name=name, schema=w.schema, modality=w.modality,
                     channel_names=w.channel_names)
    res = run("--quiet", "audit", "--train", tmp_path / "train", "--holdout", tmp_path / "holdout",
              "--synthetic", ws / "synthetic" / "copies", "--out", tmp_path / "out", "--only", "privacy.dcr",
              "--json", "--embedding-steps", 5, "--policy", "none")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    # copies of training patients sit closer to train; with 6 training patients and subsamples of 4, a copy whose
    # source is left out compares two unrelated patients, so p is near 1 only when the sources are drawn
    assert report["metrics"]["privacy.dcr.overfitting_p"] > 0.75
    assert report["metrics"]["privacy.dcr.overfitting_p_ci_high"] > 0.9
    assert "privacy.dcr.overfitting_p_ci_high" in report["metrics"] and set(report["checks"]) == {"privacy.dcr"}
    assert (tmp_path / "out" / "report.json").is_file()


@pytest.mark.parametrize("args, message", [
    (["--synthetic", "nothing-here"], "neither a set of this workspace nor a folder"),
    (["--synthetic", "copies", "--only", "privacy.nope"], "names no check"),
])
def test_bad_input_exits_2_with_one_line(ws: Path, args: list[str], message: str) -> None:
    res = run("audit", ws, *args)
    assert res.exit_code == 2 and message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_audit_needs_a_workspace_or_three_folders(tmp_path: Path) -> None:
    res = run("audit", "--synthetic", tmp_path)
    assert res.exit_code == 2 and "--train, --holdout and --out" in res.stderr
    res = run("audit", tmp_path / "nows", "--synthetic", "x")
    assert res.exit_code == 2 and "workspace" in res.stderr


def test_audit_as_a_subprocess(ws: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "synthrelease_cli", "--quiet", "audit", str(ws), "--synthetic",
                           "copies", "--only", "privacy.mask_memorization", "--embedding-steps", "5"],
                          capture_output=True, text=True, timeout=300)
    # a partial audit of copies under the default policy: the gate fails, which CI reads from the exit code
    assert proc.returncode == 1, proc.stderr
    report = json.loads(Path(proc.stdout.strip()).read_text())
    assert report["metrics"]["privacy.mask_memorization.flagged_fraction"] >= 0.9
    assert report["verdict"] == "fail"


def test_audit_fidelity_compares_a_hu_set_with_the_workspace_on_one_scale(ws: Path) -> None:
    # sampled sets are written in HU, real cases in the model range: copies of training patients must still score as
    # real on intensity (a scale mix-up would put every region's Wasserstein distance near 1)
    res = run("--quiet", "audit", ws, "--synthetic", "copies", "--only", "fidelity.intensity",
              "--only", "fidelity.labels", "--only", "fidelity.paired_mae", "--policy", "none")
    assert res.exit_code == 0, res.output
    report = json.loads((ws / "audits" / "copies" / "report.json").read_text())
    metrics = report["metrics"]
    assert metrics["fidelity.intensity.w1_tissue"] < 0.05 and metrics["fidelity.intensity.w1_bone"] < 0.1
    # copycat keeps each training mask (moved by a few voxels): the shift keeps most pairs above the Dice bar or not,
    # but the check must run or skip with its reason, never error
    assert report["checks"]["fidelity.paired_mae"]["status"] in ("ok", "skipped")
    assert "fidelity.labels.ks_tumour_volume" in metrics


def test_audit_gate_fails_a_copycat_set_on_thin_evidence_and_memorization(ws: Path) -> None:
    # every family but utility (whose default training budget is minutes): its rule must fail as missing
    res = run("audit", ws, "--synthetic", "copies", "--embedding-steps", 5, "--only", "integrity", "--only", "privacy",
              "--only", "fidelity")
    assert res.exit_code == 1, res.output  # the gate failed: exit 1, not an error
    folder = ws / "audits" / "copies"
    report = json.loads((folder / "report.json").read_text())
    assert report["verdict"] == "fail" and report["policy"]["name"] == "default"
    failed = set(report["gate"]["failed"])
    assert {"integrity.cohort.n_holdout", "privacy.memorization.flagged_p_value"} <= failed
    assert "utility.segmentation.dice_ratio" in failed  # no utility check ran: missing is not a pass
    rule = next(r for r in report["rules"] if r["metric"] == "integrity.cohort.n_holdout")
    assert rule["value"] == 4 and rule["reason"] == "4 is not >= 20"
    for name in ("report.html", "junit.xml", "summary.md", "policy.toml"):
        assert (folder / name).is_file(), name
    assert (folder / "policy.toml").read_text().startswith("# The default release policy")
    assert "verdict: FAIL" in res.stderr


def test_policies_lists_and_shows_and_rejects(tmp_path: Path) -> None:
    res = run("--quiet", "policies")
    assert res.exit_code == 0 and res.stdout.split() == ["default", "strict", "study"]
    res = run("policies", "study")
    assert res.exit_code == 0 and "release = false" in res.stdout and "NOT a release policy" in res.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "b"\n[[rule]]\nmetric = "a.b.c"\nop = "=>"\nthreshold = 1\nwhy = "w"\n')
    res = run("policies", bad)
    assert res.exit_code == 2 and f"{bad}:4" in res.stderr and "op '=>'" in res.stderr
    res = run("audit", tmp_path / "nows", "--synthetic", "x", "--policy", bad)
    assert res.exit_code == 2


def test_audit_fail_fast_stops_after_privacy_on_copies(ws: Path, tmp_path: Path) -> None:
    res = run("audit", ws, "--synthetic", "copies", "--embedding-steps", 5, "--fail-fast", "--out", tmp_path / "a")
    assert res.exit_code == 2  # --out is for the workspace-free form only: bad input, not a verdict
    before = sorted((p.parent.name, p.stat().st_mtime_ns) for p in (ws / "audits").glob("*/report.json"))
    res = run("audit", ws, "--synthetic", "copies", "--fail-fast", "--policy", "none")
    assert res.exit_code == 2 and "--policy none gives no verdict" in " ".join(res.output.split())  # bad usage
    assert sorted((p.parent.name, p.stat().st_mtime_ns) for p in (ws / "audits").glob("*/report.json")) == before
    res = run("audit", ws, "--synthetic", "copies", "--embedding-steps", 5, "--fail-fast")
    assert res.exit_code == 1, res.output  # the same verdict as the full audit: fail
    report = json.loads((ws / "audits" / "copies" / "report.json").read_text())
    checks = report["checks"]
    assert checks["privacy.memorization"]["status"] == "ok"
    assert report["metrics"]["privacy.memorization.flagged_fraction"] >= 0.9
    for name in ("utility.segmentation", "fidelity.radiomics", "integrity.cohort"):
        assert checks[name]["status"] == "skipped" and "--fail-fast" in checks[name]["reason"], name
    assert "privacy.memorization.flagged_p_value" in report["gate"]["failed"]
    # the rules of checks that were not run are reported apart from the failures
    assert "utility.segmentation.dice_ratio" in report["gate"]["not_judged"]
    assert "utility.segmentation.dice_ratio" not in report["gate"]["failed"]
    assert "not judged (their checks were not run: --fail-fast)" in " ".join(res.output.split())
