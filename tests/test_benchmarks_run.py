"""``benchmarks/run.py``: machine info on top, one table with every figure, failures reported with their log."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "benchmarks" / "run.py"
DATA_FIGURES = ("ct_phantom_32", "mri_phantom_32", "write_niigz_32", "read_niigz_32", "preprocess_ct_32",
                "dicom_ingest_per_case_32")


def _run(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(RUN), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_quick_data_benchmark_table(tmp_path):
    res = _run("--quick", "--only", "data", "--out", str(tmp_path), timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    for item in ("date", "CPU", "cores", "RAM", "Python", "numpy", "torch", "MONAI", "CUDA"):
        assert f"\n- {item}: " in out, item
    lines = out.splitlines()
    assert "benchmark | figure | value | unit | command" in lines
    rows = {cells[1]: cells for cells in ([c.strip() for c in line.split("|")] for line in lines)
            if cells[0] == "data"}
    for name in (*DATA_FIGURES, "script_wall_time"):
        assert name in rows, name
        assert rows[name][3] == "s"
        assert float(rows[name][2]) >= 0
    assert rows[DATA_FIGURES[0]][4] == "`python benchmarks/bench_data.py --sizes 32 --cases 2`"
    assert "FAILED" not in out
    figures = json.loads((tmp_path / "data.json").read_text())
    assert set(figures) == {f"{n}_s" for n in DATA_FIGURES}
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["benchmarks"]["data"]["error"] == ""
    assert results["machine"]["Python"] == f"{sys.version_info.major}.{sys.version_info.minor}." \
                                           f"{sys.version_info.micro}"
    assert "data | ct_phantom_32 |" in (tmp_path / "table.md").read_text()
    assert (tmp_path / "data.log").is_file()


def test_failed_benchmark_is_reported_with_its_log(tmp_path):
    res = _run("--quick", "--only", "data", "--timeout", "0.01", "--out", str(tmp_path), timeout=60)
    assert res.returncode == 1, res.stdout + res.stderr
    row = next(line for line in res.stdout.splitlines() if line.startswith("data | **FAILED**"))
    assert "timed out after 0.01 s" in row and "data.log" in row
    assert json.loads((tmp_path / "results.json").read_text())["benchmarks"]["data"]["error"]


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("benchmarks_run", RUN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_demo_figures_against_the_targets():
    run = _module()
    summary = {"training": {"generator": "wgan", "seconds": 12.5}, "deidentification": {"found_in_workspace": 0},
               "audit": {"demo": {"verdict": "pass"}, "copycat-control": {"verdict": "fail"}},
               "release": {"verified": True}}
    key = "meets target (<= 10 min wall, <= 4 GiB peak, 2 cores)"
    ok = run.demo_figures(summary, run.Measured(0, 300.0, 3 * run.GIB, 2 * run.GIB), quick=False)
    assert ok["train_wgan_s"] == 12.5
    assert ok["wall_time_s"] == 300.0 and ok["peak_rss_tree_gib"] == 3.0 and ok["peak_rss_largest_process_gib"] == 2.0
    assert ok["verdict_demo"] == "pass" and ok["verdict_copycat-control"] == "fail" and ok["package_verified"] == "yes"
    assert ok[key].startswith("yes")
    slow = run.demo_figures(summary, run.Measured(0, 700.0, 5 * run.GIB, 2 * run.GIB), quick=True)
    assert slow[key].startswith("NO: wall 11.7 min > 10 min; peak 5.00 GiB > 4 GiB")
    assert "quick sizes" in slow[key]
    assert run.split_unit("extraction_2_workers_cases_per_min") == ("extraction_2_workers", "cases/min")
    assert run.split_unit("speedup_f32_x") == ("speedup_f32", "x")
    assert run.split_unit("pairs") == ("pairs", "")


@pytest.mark.slow
def test_quick_run_of_every_default_benchmark(tmp_path):
    res = _run("--quick", "--out", str(tmp_path), timeout=3600)
    assert res.returncode == 0, res.stdout + res.stderr
    names = {line.split(" | ")[0] for line in res.stdout.splitlines() if " | " in line}
    assert {"data", "generators", "privacy", "msssim", "radiomics", "demo"} <= names
    assert "demo | meets target" in res.stdout


def test_quality_benchmark_reports_segmentation_utility(tmp_path):
    """``quality_phantoms.py --utility-steps``: both arms' Dice per class on the holdout, and their ratio."""
    out = tmp_path / "quality.json"
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "quality_phantoms.py"), "--patients", "6",
                          "--holdout", "2", "--samples", "2", "--threads", "1", "--window", "soft",
                          "--utility-steps", "2", "--set", "steps = 4", "ae_steps = 2", "--json", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    figures = json.loads(out.read_text())
    dice = {k: v for k, v in figures.items() if k.startswith("dice_") and k != "dice_ratio"}
    assert set(dice) == {f"dice_{arm}_{name}" for arm in ("real", "synthetic") for name in ("tumour", "bone")}
    assert all(0.0 <= v <= 1.0 for v in dice.values() if v == v)  # NaN: a class absent from prediction and truth
    real = (dice["dice_real_tumour"] + dice["dice_real_bone"]) / 2
    if figures["dice_ratio"] is not None:
        synthetic = (dice["dice_synthetic_tumour"] + dice["dice_synthetic_bone"]) / 2
        assert figures["dice_ratio"] == pytest.approx(synthetic / real, abs=2e-3)
    assert "utility (DynUNet, 2 steps per arm" in res.stdout and figures["window"] == "soft"
