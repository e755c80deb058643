"""``synthrelease demo`` through click's CliRunner with ``run_demo`` replaced by a stand-in: the exit code follows
the demo's outcome (``demo_outcome``), the reason is the last line, progress reaches a log, and fp32 is the default."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from synthrelease import demo as demo_module
from synthrelease_cli.main import cli


def _summary(tmp: str, *, verdict: str = "pass", verified: bool = True, control: str = "fail",
             leaks: int = 0) -> dict[str, Any]:
    audit = {"verdict": verdict, "report_html": f"{tmp}/D/workspace/audits/demo/report.html", "not_run": [],
             "failed_rules": [] if verdict == "pass" else [{"metric": "utility.segmentation.dice_ratio",
                                                            "value": 0.669, "reason": "0.669 is not >= 0.7"}],
             "warnings": [], "metrics": {}, "utility_precision": {"real": "fp32"}}
    summary: dict[str, Any] = {
        "workspace": f"{tmp}/D/workspace", "modality": "CT", "channels": ["CT"],
        "labels": {"background": 0, "tumour": 1}, "regions": {},
        "grid": {"shape_zyx": [16, 16, 16], "spacing_xyz_mm": [15.0, 15.0, 15.0]},
        "intensity_reference": {"low": [-200.0], "high": [200.0]},
        "splits": {"train": {"n_cases": 4, "labels": {"tumour": {"cases_with_label": 4, "mean_ml": 1.0}}}},
        "deidentification": {"planted_strings": 70, "found_in_workspace": leaks},
        "precision": {"text": "fp32", "generator": "fp32", "utility": "fp32"},
        "training": {"generator": "wgan", "steps": 500, "seconds": 1.0, "precision": "fp32", "final_losses": {}},
        "synthetic": {"path": f"{tmp}/D/workspace/synthetic/demo", "n_cases": 4, "cases_with_label": {"tumour": 4},
                      "provenance": {}},
        "audit": {"demo": audit, "copycat-control": {**audit, "verdict": control, "failed_rules": []}},
        "demo_folder": f"{tmp}/D"}
    if verdict == "pass":
        summary["release"] = {"package": f"{tmp}/D/package/p", "tarball": f"{tmp}/D/package/p.tar.gz",
                              "public_key": f"{tmp}/D/k.pub", "n_files": 9, "verified": verified,
                              "problems": [] if verified else ["manifest.json: bad signature"]}
    return summary


@pytest.fixture
def fake_demo(monkeypatch: pytest.MonkeyPatch, tmp_path):  # type: ignore[no-untyped-def]
    """Replace run_demo; the returned dict holds the next summary's options and the last call's arguments."""
    state: dict[str, Any] = {"options": {}}

    def run_demo(out: Any, **kw: Any) -> dict[str, Any]:
        state["kwargs"] = kw
        kw["info"]("[ 0:00] 1/8 writing phantoms")
        for step in range(1, 501):  # a 500-step task
            kw["progress"]("train wgan", step, 500)
        return _summary(str(tmp_path), **state["options"])

    monkeypatch.setattr(demo_module, "run_demo", run_demo)
    return state


def _invoke(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, ["demo", "--out", "D", *args])


@pytest.mark.parametrize("options, needle", [
    ({"verdict": "fail"}, "the gate failed the demo set (utility.segmentation.dice_ratio)"),
    ({"verified": False}, "the exported package failed verification (manifest.json: bad signature)"),
    ({"control": "pass"}, "the gate let the copycat control through (verdict pass)"),
    ({"leaks": 2}, "2 planted identifier(s) reached the workspace"),
])
def test_the_demo_exits_1_with_the_reason_last_when_it_did_not_hold(fake_demo, options, needle) -> None:
    fake_demo["options"] = options
    for args in ((), ("--json",)):
        res = _invoke(*args)
        assert res.exit_code == 1, res.output
        last = res.output.strip().splitlines()[-1]
        assert last.startswith("demo failed: ") and needle in last, res.output
        assert res.stderr.strip().splitlines()[-1] == last  # on stderr
        if args:  # --json: the summary alone on stdout
            assert json.loads(res.stdout)["deidentification"]["planted_strings"] == 70


def test_the_demo_exits_0_only_when_everything_held(fake_demo) -> None:
    res = _invoke()
    assert res.exit_code == 0, res.output
    assert res.output.strip().splitlines()[-1].startswith("demo passed: the demo set passed the gate")
    assert "precision: fp32" in res.stdout and "(fp32)" in res.stdout  # the precision that ran
    assert fake_demo["kwargs"]["cpu_bf16"] is False  # fp32 unless --cpu-bf16
    assert _invoke("--cpu-bf16").exit_code == 0 and fake_demo["kwargs"]["cpu_bf16"] is True
    res = CliRunner().invoke(cli, ["--quiet", "demo", "--out", "D", "--json"])
    assert res.exit_code == 0 and res.stderr == ""


def test_a_log_of_the_demo_carries_progress_lines(fake_demo) -> None:
    res = _invoke()  # CliRunner's stderr is not a terminal
    lines = [line for line in res.stderr.splitlines() if "train wgan" in line]
    assert lines[0] == "[   0.0 s] train wgan 1/500" and lines[-1].endswith("] train wgan 500/500")
    assert len(lines) <= 12  # not a line per step
    assert "[ 0:00] 1/8 writing phantoms" in res.stderr.splitlines()


def test_the_cli_defaults_are_the_demo_modules() -> None:
    """The CLI keeps its own copy of the demo's cohort and sample counts (it starts without importing torch): the two
    must not drift apart."""
    from synthrelease import demo as demo_module
    from synthrelease_cli import cmd_demo

    assert (cmd_demo.DEMO_CASES, cmd_demo.DEMO_SAMPLES) == (demo_module.DEMO_CASES, demo_module.DEMO_SAMPLES)
    defaults = {p.name: p.default for p in cmd_demo.demo.params}
    assert defaults["n_cases"] == demo_module.DEMO_CASES and defaults["n_samples"] == demo_module.DEMO_SAMPLES
    assert demo_module.demo_holdout(demo_module.DEMO_CASES) == demo_module.DEMO_HOLDOUT
