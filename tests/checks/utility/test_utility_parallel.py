"""``utility.segmentation`` with the arms in spawned processes (the MONAI engine on CPU): the same metrics, per-case
Dice and model bytes as one arm after another in the audit's process, whatever that process's thread count; progress
arrives in the parent; a worker's error reaches the parent as the same exception with its message and stops the other
arms. Tiny CT phantoms (16^3) and a handful of steps."""

from __future__ import annotations

import multiprocessing
import os
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from synthrelease.checks import AuditContext, AuditSettings, CheckResult, Status
from synthrelease.checks.utility.segmentation import (
    ARM_THREADS,
    SegmentationUtilityCheck,
    _ArmTask,
    _check_alive,
    _run_parallel,
    _workers,
)
from synthrelease.data.cohort import Cohort
from synthrelease.data.nnunet import write_nnunet
from synthrelease.errors import InputError
from synthrelease.segmentation import SegmentationConfig

STEPS = 6
SETTINGS = AuditSettings(n_boot=50, utility_engine="monai", utility_steps=STEPS)


@pytest.fixture(scope="module")
def cohorts(train: Cohort, holdout: Cohort, others: Cohort) -> tuple[Cohort, Cohort, Cohort]:
    return (Cohort.from_cases(list(train)[:8], name="train"), Cohort.from_cases(list(holdout)[:5], name="holdout"),
            Cohort.from_cases(list(others)[:6], name="synthetic"))


def _run(cohorts: tuple[Cohort, Cohort, Cohort], tmp: Path, cache: Path, settings: AuditSettings,
         progress: Any = None) -> CheckResult:
    ctx = AuditContext(*cohorts, out_dir=tmp, cache_dir=cache, seed=3, settings=settings, progress=progress)
    return SegmentationUtilityCheck().run(ctx)


@pytest.fixture(scope="module")
def runs(cohorts: tuple[Cohort, Cohort, Cohort], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out: dict[str, Any] = {"calls": []}
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the caller's thread count does not reach the arms
    try:
        seq_cache = tmp_path_factory.mktemp("seq-cache")
        out["sequential"] = _run(cohorts, tmp_path_factory.mktemp("seq"), seq_cache,
                                 replace(SETTINGS, utility_workers=1))
    finally:
        torch.set_num_threads(threads)

    def progress(task: str, done: int, total: int) -> None:
        out["calls"].append((task, done, total, os.getpid(), threading.get_ident()))

    par_cache = tmp_path_factory.mktemp("par-cache")
    out["parallel"] = _run(cohorts, tmp_path_factory.mktemp("par"), par_cache, replace(SETTINGS, utility_workers=3),
                           progress)
    out["again"] = _run(cohorts, tmp_path_factory.mktemp("again"), par_cache,
                        replace(SETTINGS, utility_workers=2, utility_arms=("real", "synthetic")))
    out["models"] = {name: sorted((cache / "utility" / "models").glob("monai-real-*/model.pt"))
                     for name, cache in (("sequential", seq_cache), ("parallel", par_cache))}
    return out


def _numbers(result: CheckResult) -> dict[str, tuple[float, float | None, float | None]]:
    return {k: (m.value, m.ci_low, m.ci_high) for k, m in result.metrics.items()}


def test_parallel_arms_give_the_results_of_sequential_ones(runs: dict[str, Any]) -> None:
    seq, par = runs["sequential"], runs["parallel"]
    assert seq.status is Status.OK, seq.reason
    assert par.status is Status.OK, par.reason
    assert _numbers(par) == _numbers(seq)  # every digit, intervals included
    for key in ("per_case", "pooled_dice", "arms", "seed", "precision"):
        assert par.evidence[key] == seq.evidence[key], key
    rows = par.evidence["per_case"]
    assert any(v > 0 for r in rows["real"] for v in r["dice"].values())  # the models found something to compare
    assert rows["real"] != rows["synthetic"]  # and differ between arms
    assert list(par.evidence["seconds_per_arm"]) == ["real", "synthetic", "real+synthetic"]
    assert (seq.evidence["workers"], par.evidence["workers"]) == (1, 3)
    assert seq.evidence["threads_per_arm"] == par.evidence["threads_per_arm"] == ARM_THREADS == 1
    (seq_model,), (par_model,) = runs["models"]["sequential"], runs["models"]["parallel"]
    assert seq_model.read_bytes() == par_model.read_bytes()  # the real arm's model, stored by a worker
    assert '"cpu_threads": 1' in (par_model.parent / "model.json").read_text()


def test_a_worker_stores_and_reuses_the_real_model(runs: dict[str, Any]) -> None:
    first, again = runs["parallel"], runs["again"]
    assert first.evidence["real_model_reused"] is False
    assert again.status is Status.OK, again.reason
    assert again.evidence["real_model_reused"] is True and again.evidence["workers"] == 2
    for key in ("dice_real", "dice_synthetic", "dice_ratio"):
        assert again.metrics[key].value == first.metrics[key].value, key
    assert again.evidence["per_case"]["real"] == first.evidence["per_case"]["real"]


def test_progress_of_parallel_arms_arrives_in_the_parent(runs: dict[str, Any]) -> None:
    calls = runs["calls"]
    assert {(pid, ident) for *_, pid, ident in calls} == {(os.getpid(), threading.main_thread().ident)}
    last = {task: (done, total) for task, done, total, *_ in calls}
    for arm in ("real", "synthetic", "real+synthetic"):
        assert last[f"utility {arm}: train segmentation"] == (STEPS, STEPS), arm
        assert last[f"utility {arm}: predict segmentation"] == (5, 5), arm
    assert last["utility: write holdout"] == (5, 5)


def _tasks(root: Path, cohort: Path, **first: Any) -> list[_ArmTask]:
    """Two arms on ``cohort``: ``synthetic`` with ``first``'s changes, and a long ``real+synthetic``."""
    slow = _ArmTask("real+synthetic", "monai", (cohort,), root / "m2", cohort, root / "p2",
                    SegmentationConfig(steps=5000, seed=0), 1)
    fast = replace(_ArmTask("synthetic", "monai", (cohort,), root / "m1", cohort, root / "p1",
                            SegmentationConfig(steps=2, seed=0), 1), **first)
    return [fast, slow]


@pytest.fixture(scope="module")
def raw(cohorts: tuple[Cohort, Cohort, Cohort], tmp_path_factory: pytest.TempPathFactory) -> Path:
    train = cohorts[0]
    return write_nnunet(list(train)[:4], tmp_path_factory.mktemp("raw") / "train", name="train", schema=train.schema,
                        modality=train.modality, channel_names=train.channel_names)


@pytest.mark.parametrize(("change", "error", "message"), [
    ({"engine": "nope"}, InputError, "unknown segmentation engine 'nope'"),
    # five levels on a 16^3 patch: a 1-voxel bottleneck, which instance norm refuses (torch's ValueError)
    ({"config": SegmentationConfig(steps=2, features=(4, 4, 4, 4, 4))}, ValueError, "more than 1 spatial element"),
])
def test_a_worker_error_is_raised_in_the_parent_and_stops_the_other_arms(
        raw: Path, tmp_path: Path, change: dict[str, Any], error: type[Exception], message: str) -> None:
    calls: list[tuple[str, str, int, int]] = []
    with pytest.raises(error, match=message) as info:
        _run_parallel(_tasks(tmp_path, raw, **change), 2, lambda *a: calls.append(a),
                      lambda arm, result: pytest.fail(f"arm {arm} finished"))
    assert type(info.value) is error
    assert "in a utility worker" in "".join(getattr(info.value, "__notes__", []))  # the worker's traceback
    assert not multiprocessing.active_children()  # the long arm was stopped, not waited for
    assert all(total == 5000 for arm, task, done, total in calls if arm == "real+synthetic")


def test_an_error_in_a_worker_reaches_the_report_as_one_line(cohorts: tuple[Cohort, Cohort, Cohort],
                                                             tmp_path: Path) -> None:
    (tmp_path / "cache" / "utility").mkdir(parents=True)
    (tmp_path / "cache" / "utility" / "models").write_text("not a folder")  # the real arm's worker cannot store
    result = _run(cohorts, tmp_path / "audit", tmp_path / "cache",
                  replace(SETTINGS, utility_steps=500, utility_arms=("real", "synthetic"), utility_workers=2))
    assert result.status is Status.ERROR
    assert (result.reason or "").startswith("NotADirectoryError: ") and "\n" not in (result.reason or "")
    assert not multiprocessing.active_children()
    assert not [p for p in (tmp_path / "cache" / "utility").iterdir() if p.name.startswith("run-")]


def test_workers_setting(cohorts: tuple[Cohort, Cohort, Cohort], tmp_path: Path,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    assert _workers(1, 3, 500) == 1 and _workers(5, 3, 500) == 3 and _workers(2, 3, 5) == 2
    for cores, expected in ((1, 1), (2, 2), (8, 3)):  # auto: one arm per usable core, at most one per arm
        monkeypatch.setattr("synthrelease.checks.utility.segmentation.usable_cores", lambda c=cores: c)
        assert _workers(None, 3, 500) == expected
        assert _workers(None, 3, 5) == 1  # a short budget: not worth a process
    monkeypatch.undo()
    result = _run(cohorts, tmp_path, tmp_path, replace(SETTINGS, utility_workers=0))
    assert result.status is Status.ERROR and "utility_workers 0" in (result.reason or "")


class _Ended:
    def __init__(self, exitcode: int | None) -> None:
        self.exitcode = exitcode


def test_a_worker_that_dies_without_a_word_is_an_error() -> None:
    silent: dict[str, int] = {}
    running: dict[str, Any] = {"real": _Ended(None), "synthetic": _Ended(-9)}
    _check_alive(running, {"synthetic"}, silent)  # its last words may still be on their way: one more poll
    with pytest.raises(RuntimeError, match=r"'synthetic' ended with exit code -9 .*out of memory"):
        _check_alive(running, {"synthetic"}, silent)
    with pytest.raises(RuntimeError, match="__main__"):  # never heard from: it did not start
        _check_alive({"real": _Ended(1)}, set(), {"real": 1})
