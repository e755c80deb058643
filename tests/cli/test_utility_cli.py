"""``synthrelease utility`` (the segmentation utility check alone) and ``audit --engine``: a report beside the set's
audit folder, the table, and one-line input errors (an engine that cannot run, unknown arms)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from synthrelease.data.ingest import IngestOptions, ingest
from synthrelease.data.phantoms.cohort import write_phantom_cohort
from synthrelease_cli.main import cli


def run(*args: object):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    """Set before the module's fixtures compute anything (``one_torch_thread``)."""


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("utility")
    src = write_phantom_cohort(root / "src", modality="mri", cases=12, shape=16, seed=0, fmt="nnunet")
    ws = ingest(src, root / "ws", modality="mri", options=IngestOptions(seed=0, holdout=0.34)).root
    assert run("train", ws, "--generator", "copycat", "--name", "cc").exit_code == 0
    assert run("sample", ws, "--model", "cc", "--n", 8, "--seed", 1, "--name", "copies").exit_code == 0
    return ws


def test_utility_runs_the_check_alone_beside_the_audit_folder(ws: Path) -> None:
    res = run("utility", ws, "--synthetic", "copies", "--engine", "monai", "--steps", 60, "--arms",
              "real,synthetic")
    assert res.exit_code == 0, res.output
    path = ws / "audits" / "copies+utility" / "report.json"
    assert res.stdout.strip() == str(path) and not (ws / "audits" / "copies").exists()
    assert "segmentation utility of copies" in res.stderr and "dice_ratio (synthetic / real)" in res.stderr
    report = json.loads(path.read_text())
    assert set(report["checks"]) == {"utility.segmentation"} and "verdict" not in report
    check = report["checks"]["utility.segmentation"]
    assert check["status"] == "ok", check.get("reason")
    assert check["evidence"]["config"]["steps"] == 60 and check["evidence"]["arms"] == ["real", "synthetic"]
    assert check["evidence"]["config"]["network"] == "dynunet"  # the default: nnU-Net's architecture
    metrics = report["metrics"]
    assert {"utility.segmentation.dice_real", "utility.segmentation.dice_WT_synthetic"} <= set(metrics)
    assert (ws / "audits" / "copies+utility" / "figures" / "utility_dice.png").is_file()
    assert not list((ws / "cache" / "utility").glob("run-*"))  # work files removed; the real model is cached
    assert len(list((ws / "cache" / "utility" / "models").glob("monai-real-*"))) == 1


def test_engine_that_cannot_run_or_unknown_arms_exit_2(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    res = run("utility", ws, "--synthetic", "copies", "--arms", "real,fake")
    assert res.exit_code == 2 and "utility arms" in res.stderr
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "nnunetv2" else real_find_spec(name, *a))
    for args in (["utility", ws, "--synthetic", "copies", "--engine", "nnunet"],
                 ["audit", ws, "--synthetic", "copies", "--only", "utility", "--engine", "nnunet"]):
        res = run(*args)
        assert res.exit_code == 2, res.output
        assert "nnunetv2 is not installed" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = run("utility", ws, "--synthetic", "copies", "--engine", "tensorflow")
    assert res.exit_code == 2 and "tensorflow" in res.stderr


def test_network_option_reaches_the_engine_and_the_real_model_cache_key(ws: Path) -> None:
    res = run("utility", ws, "--synthetic", "copies", "--engine", "monai", "--steps", 20, "--arms", "real",
              "--network", "unet")
    assert res.exit_code == 0, res.output
    check = json.loads((ws / "audits" / "copies+utility" / "report.json").read_text())["checks"]["utility.segmentation"]
    assert check["evidence"]["config"]["network"] == "unet" and check["evidence"]["real_model_reused"] is False
    res = run("audit", ws, "--synthetic", "copies", "--only", "utility", "--network", "vnet")
    assert res.exit_code == 2 and "vnet" in res.stderr


def test_cli_networks_are_the_engines_and_the_default_comes_first() -> None:
    from synthrelease.checks import AuditSettings
    from synthrelease.segmentation.base import NETWORKS, SegmentationConfig
    from synthrelease_cli.cmd_utility import NETWORKS as CLI_NETWORKS

    assert CLI_NETWORKS == NETWORKS
    assert NETWORKS[0] == SegmentationConfig().network == AuditSettings().utility_network
