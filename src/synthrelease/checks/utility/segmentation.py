"""``utility.segmentation``: can a segmentation model trained on the synthetic set replace one trained on real data?

The study's protocol: train one model per arm, ``real`` (the training split), ``synthetic`` (the set) and
``real+synthetic`` (both), and test every model on the real holdout, which no generator and no arm has seen. Every
arm gets the same budget (``utility_steps`` optimisation steps of the same batch and patch size), the same seed
(same initial weights and sampling stream) and the same engine (``utility_engine``: nnU-Net v2 with a CUDA GPU,
else the built-in MONAI U-Net). Before training, every case is brought to the model range ``[-1, 1]``
(``AuditContext.model_image``): real cases are stored there, sampled sets in HU / MR scale.

Headline: ``dice_ratio`` = Dice of the synthetic arm / Dice of the real arm (mean over foreground classes); 1 means
the set is as useful as the real patients, the default policy asks for at least 0.7. Beside it: Dice per arm, per
class and per region (BraTS WT/TC/ET), HD95 in mm, bootstrap intervals over holdout cases, per-case tables, pooled
Dice and a box plot (``segmentation.evaluate`` defines the conventions for empty structures).

Work files (model-range copies of the cohorts, predictions) go to a folder under the workspace's ``cache/utility``
and are deleted at the end. The real arm's model depends only on the training split, engine and budget: it is kept
in ``cache/utility/models`` and reused by the audit of the next set.

Threads and processes (the MONAI engine on CPU): every arm trains and predicts on exactly ``ARM_THREADS`` (1) torch
intra-op thread, and up to ``utility_workers`` arms run at once, each in its own process (None: one per usable core;
in sequence for budgets under ``MIN_PARALLEL_STEPS`` steps, where starting a process costs more than it saves). The
thread count is part of the result: fp32 kernels split their sums by thread, so a model trained on two threads has
other bytes, and other Dice, than one trained on one. A count fixed per arm, whatever the number of cores or of arms
running at once, gives the same models and Dice for a seed in parallel or in sequence and on any machine of the same
instruction set (AVX-512 and AVX2 kernels differ). It costs little: the small U-Nets of the check make poor use of a
second thread, and on cores that other work shares two threads run far slower than one. Workers are spawned, never
forked (the parent holds torch thread pools that a fork would copy mid-state; a script that runs an audit from its
top level therefore needs the ``if __name__ == "__main__":`` guard, as for any spawned process); each relays its
progress and then its result, or its error as the same exception with its message, through a queue that the parent
drains while it waits. An arm that fails stops the others. A worker stores the real arm's model in the cache as the
parent would (the thread count is part of its key). The nnU-Net engine and a GPU run the arms one after another in
the audit's process, on its thread count.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import pickle
import queue
import secrets
import shutil
import signal
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synthrelease import __version__
from synthrelease.checks.base import Check, Metric
from synthrelease.checks.context import AuditContext
from synthrelease.checks.registry import register
from synthrelease.checks.utility.summary import arm_key, summarize
from synthrelease.data.nifti import read_nifti
from synthrelease.data.nnunet import dataset_json, write_nnunet_case
from synthrelease.errors import InputError
from synthrelease.runtime.cores import torch_threads, usable_cores
from synthrelease.segmentation import (
    CaseScores,
    SegmentationConfig,
    SegmentationEngine,
    create_engine,
    resolve_device,
    score_case,
)
from synthrelease.segmentation.base import Progress, read_model_info

__all__ = ["ARMS", "SegmentationUtilityCheck", "check_arms"]

ARMS: dict[str, tuple[str, ...]] = {"real": ("train",), "synthetic": ("synthetic",),
                                    "real+synthetic": ("train", "synthetic")}
ARM_THREADS = 1  # torch intra-op threads of every arm of the MONAI engine on CPU, whatever the machine
POLL_SECONDS = 0.5  # how often the parent looks for a worker that died without a word
MIN_PARALLEL_STEPS = 100  # utility_workers None: shorter budgets run their arms in sequence


def check_arms(arms: Sequence[str]) -> tuple[str, ...]:
    """The arms, validated (unknown or repeated names are an input error)."""
    out = tuple(a.strip() for a in arms if a.strip())
    bad = [a for a in out if a not in ARMS]
    if bad or not out or len(set(out)) != len(out):
        raise InputError(f"utility arms {list(arms)} are not distinct names of {list(ARMS)}",
                         fix="choose among real, synthetic and real+synthetic")
    return out


def _workers(setting: int | None, n_arms: int, steps: int) -> int:
    """How many arms run at once: ``utility_workers``, at most one per arm; None: one per usable core, or 1 for a
    budget under ``MIN_PARALLEL_STEPS`` (a process takes seconds to start); 1 in a daemonic process, which may not
    start processes of its own. The results do not depend on it."""
    if setting is not None and (isinstance(setting, bool) or not isinstance(setting, int) or setting < 1):
        raise InputError(f"utility_workers {setting!r} is not a positive whole number",
                         fix="use None (one per usable core) or 1 or more")
    if multiprocessing.current_process().daemon or (setting is None and steps < MIN_PARALLEL_STEPS):
        return 1
    return max(1, min(n_arms, usable_cores() if setting is None else setting))


def _write_model_range(ctx: AuditContext, which: str, root: Path) -> str:
    """The cohort on the model range as an nnU-Net raw folder; returns a digest of what was written."""
    cohort = ctx.cohort(which)
    digest = hashlib.sha256()
    for i, case in enumerate(cohort):
        image = np.ascontiguousarray(ctx.model_image(case), dtype=np.float32)
        write_nnunet_case(case.with_(image=image), root)
        for part in (case.case_id.encode(), image.tobytes(), case.labels.tobytes(),
                     json.dumps(case.geometry.to_dict()).encode()):
            digest.update(part)
        ctx.progress(f"utility: write {which}", i + 1, len(cohort))
    data = dataset_json(name=which, schema=cohort.schema, modality=cohort.modality,
                        channel_names=cohort.channel_names, n_cases=len(cohort))
    (root / "dataset.json").write_text(json.dumps(data, indent=2) + "\n")
    return digest.hexdigest()


def _real_model(engine: SegmentationEngine, train_dir: Path, digest: str, config: SegmentationConfig,
                cache: Path, threads: int | None = None) -> tuple[Path, bool]:
    """The real arm's model from the cache, or trained and stored there (atomically); ``True`` when reused.
    ``threads``: the fixed torch thread count it is trained on (part of the key), None: the caller's."""
    fields: dict[str, Any] = {"engine": engine.name, "config": config.to_dict(), "data": digest,
                              "version": __version__}
    if threads is not None:
        fields["threads"] = threads
    key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:20]
    path = cache / f"{engine.name}-real-{key}"
    if (path / "model.json").is_file():
        return path, True
    tmp = cache / f".{path.name}.{secrets.token_hex(4)}.partial"
    try:
        engine.train([train_dir], tmp, config)
        os.replace(tmp, path)
    except OSError:
        if not (path / "model.json").is_file():  # not a concurrent audit that stored the same model first
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path, False


def _arm_progress(ctx: AuditContext, arm: str) -> Progress:
    def report(task: str, done: int, total: int) -> None:
        ctx.progress(f"utility {arm}: {task}", done, total)

    return report


@dataclass(frozen=True)
class _ArmTask:
    """One arm's training (or the real arm's cached model) and its predictions on the holdout: what a worker
    needs, all of it picklable."""

    arm: str
    engine: str  # a resolved engine name (``monai``, ``nnunet``)
    cohort_dirs: tuple[Path, ...]
    model_dir: Path  # where a model that is not the real arm's is trained
    holdout_dir: Path
    pred_dir: Path
    config: SegmentationConfig
    threads: int | None  # torch intra-op threads for the arm; None: the process's as they are
    real_digest: str = ""  # the real arm: the training split's digest and the model cache
    model_cache: Path | None = None


@dataclass(frozen=True)
class _ArmResult:
    pred_dir: Path
    precision: Any
    reused: bool
    seconds: float


def _run_arm(task: _ArmTask, progress: Progress) -> _ArmResult:
    """Train the arm (the real arm: from the cache when it is there) and predict the holdout."""
    start = time.perf_counter()
    with torch_threads(task.threads):
        engine = create_engine(task.engine, progress)
        reused = False
        if task.arm == "real":
            assert task.model_cache is not None
            model, reused = _real_model(engine, task.cohort_dirs[0], task.real_digest, task.config, task.model_cache,
                                        task.threads)
        else:
            model = engine.train(list(task.cohort_dirs), task.model_dir, task.config)
        precision = read_model_info(model).get("precision")  # as the engine ran it (runtime.precision)
        pred = engine.predict(model, task.holdout_dir, task.pred_dir)
    return _ArmResult(pred, precision, reused, time.perf_counter() - start)


def _portable(exc: Exception) -> Exception:
    """``exc`` when it survives pickling as itself, else a ``RuntimeError`` with its type and message; a worker's
    traceback rides along as a note (not part of the message, so the user still reads one line)."""
    try:
        back = pickle.loads(pickle.dumps(exc))
        if type(back) is not type(exc) or str(back) != str(exc):
            raise TypeError("changed in pickling")
    except Exception:  # anything that does not round-trip is sent as text
        back = RuntimeError(f"{type(exc).__name__}: {exc}")
    with contextlib.suppress(Exception):
        back.add_note("in a utility worker:\n" + "".join(traceback.format_exception(exc)).rstrip())
    return back


def _worker(task: _ArmTask, messages: Any) -> None:
    """A spawned process's entry: run one arm, relaying progress; end with ``("done", arm, result)`` or
    ``("error", arm, exception)``. Ctrl-C is the parent's to handle; SIGTERM (the parent stopping the arm) unwinds
    through the ``finally`` blocks, so a half-stored cache entry is removed."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(1)

    signal.signal(signal.SIGTERM, stop)

    def report(task_name: str, done: int, total: int) -> None:
        messages.put(("progress", task.arm, task_name, done, total))

    try:
        result = _run_arm(task, report)
    except Exception as exc:  # every error goes back to the parent
        messages.put(("error", task.arm, _portable(exc)))
    else:
        messages.put(("done", task.arm, result))


def _run_parallel(tasks: Sequence[_ArmTask], workers: int, progress: Callable[[str, str, int, int], None],
                  on_done: Callable[[str, _ArmResult], None]) -> None:
    """Run the tasks in up to ``workers`` spawned processes at once, in order of ``tasks``; ``progress(arm, task,
    done, total)`` and ``on_done(arm, result)`` are called in this process as the workers report. The first error
    stops the other arms and is raised here."""
    mp = multiprocessing.get_context("spawn")
    messages = mp.Queue()
    waiting = list(tasks)
    running: dict[str, Any] = {}
    heard: set[str] = set()
    silent: dict[str, int] = {}
    try:
        while waiting or running:
            while waiting and len(running) < workers:
                task = waiting.pop(0)
                # not daemonic: a script without a main guard then fails in the child at once, with a hint here
                proc = mp.Process(target=_worker, args=(task, messages), name=f"synthrelease-utility-{task.arm}")
                proc.start()
                running[task.arm] = proc
            try:
                kind, arm, *rest = messages.get(timeout=POLL_SECONDS)
            except queue.Empty:
                _check_alive(running, heard, silent)
                continue
            heard.add(arm)
            if kind == "progress":
                progress(arm, *rest)
            elif kind == "error":
                raise rest[0]
            elif kind == "done":
                running.pop(arm).join()
                on_done(arm, rest[0])
    finally:
        _stop(running.values(), messages)


def _check_alive(running: dict[str, Any], heard: set[str], silent: dict[str, int]) -> None:
    """Raise when a worker ended and then stayed silent for a whole poll: it died without a word."""
    for arm, proc in running.items():
        if proc.exitcode is None:
            continue
        silent[arm] = silent.get(arm, 0) + 1
        if silent[arm] > 1:
            why = ("killed, out of memory?" if arm in heard else "a script that starts an audit needs an "
                   "'if __name__ == \"__main__\":' guard: the arms run in spawned processes")
            raise RuntimeError(f"the process of the utility arm {arm!r} ended with exit code {proc.exitcode} before "
                               f"it finished ({why})")


def _stop(procs: Any, messages: Any) -> None:
    """Stop the workers still running (SIGTERM, then SIGKILL after a while), draining the queue meanwhile: a worker
    exits only once what it has put on the queue is read."""
    procs = list(procs)
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    deadline = time.monotonic() + 30
    for proc in procs:
        while proc.is_alive():
            with contextlib.suppress(queue.Empty, OSError, EOFError):
                while True:
                    messages.get_nowait()
            proc.join(0.1)
            if time.monotonic() > deadline:
                proc.kill()
        proc.join()
    messages.close()
    messages.cancel_join_thread()


def _score(pred_dir: Path, ctx: AuditContext) -> list[CaseScores]:
    rows = []
    for case in ctx.holdout:
        pred, _ = read_nifti(pred_dir / f"{case.case_id}.nii.gz")
        rows.append(score_case(case.case_id, pred, case.labels, case.schema, case.geometry.spacing[::-1]))
    return rows


@register
class SegmentationUtilityCheck(Check):
    name = "utility.segmentation"
    description = ("segmentation models trained on real, synthetic and both, tested on the real holdout: "
                   "Dice per class and region, HD95, synthetic / real Dice ratio")

    def compute(self, ctx: AuditContext) -> tuple[dict[str, Metric], dict[str, Any]]:
        settings = ctx.settings
        arms = check_arms(settings.utility_arms)
        seed = int(ctx.rng("utility/seed").integers(2**31))
        config = SegmentationConfig(steps=settings.utility_steps, seed=seed, network=settings.utility_network,
                                    cpu_bf16=settings.utility_cpu_bf16)
        engine = create_engine(settings.utility_engine).name  # an engine that cannot run fails before any work
        # the MONAI engine on CPU: a fixed thread count per arm (the same bytes on any machine), arms in processes
        fixed = engine == "monai" and resolve_device(config.device) == "cpu"
        workers = _workers(settings.utility_workers, len(arms), config.steps)
        workers = workers if fixed else 1
        cache = ctx.cache_dir / "utility"
        work = cache / f"run-{secrets.token_hex(4)}"
        scores: dict[str, list[CaseScores]] = {}
        timing: dict[str, float] = {}
        precision: dict[str, Any] = {}
        reused = False

        def finish(arm: str, result: _ArmResult) -> None:
            nonlocal reused
            start = time.perf_counter()
            precision[arm] = result.precision
            reused = reused or (arm == "real" and result.reused)
            scores[arm] = _score(result.pred_dir, ctx)
            timing[arm] = round(result.seconds + time.perf_counter() - start, 1)

        try:
            needed = ["holdout", *dict.fromkeys(w for a in arms for w in ARMS[a])]
            digests = {w: _write_model_range(ctx, w, work / w) for w in needed}
            tasks = [_ArmTask(arm, engine, tuple(work / w for w in ARMS[arm]), work / f"model-{arm_key(arm)}",
                              work / "holdout", work / f"pred-{arm_key(arm)}", config,
                              ARM_THREADS if fixed else None, digests.get("train", ""), cache / "models")
                     for arm in arms]
            if workers > 1:
                _run_parallel(tasks, workers, lambda arm, task, done, total: ctx.progress(
                    f"utility {arm}: {task}", done, total), finish)
            else:
                for task in tasks:
                    finish(task.arm, _run_arm(task, _arm_progress(ctx, task.arm)))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        scores = {arm: scores[arm] for arm in arms}  # in the order of the arms, however the workers finished
        timing = {arm: timing[arm] for arm in arms}
        precision = {arm: precision[arm] for arm in arms}
        metrics, evidence = summarize(scores, ctx.holdout.schema, seed=seed, n_boot=settings.n_boot)
        evidence = {"engine": engine, "arms": list(arms), "seed": seed, "config": config.to_dict(),
                    "n_cases": {"holdout": len(ctx.holdout),
                                **{a: sum(len(ctx.cohort(w)) for w in ARMS[a]) for a in arms}},
                    "seconds_per_arm": timing, "precision": precision, "real_model_reused": reused,
                    "threads_per_arm": ARM_THREADS if fixed else None, "workers": workers, **evidence,
                    "figures": [self._figure(ctx, scores, evidence["structures"])], "contains_real_data": True}
        return metrics, evidence

    @staticmethod
    def _figure(ctx: AuditContext, scores: dict[str, list[CaseScores]], names: list[str]) -> dict[str, Any]:
        from synthrelease.checks.utility.plots import dice_boxplot

        tables = {arm: np.array([[r.dice[s] for s in names] for r in rows], dtype=float)
                  for arm, rows in scores.items()}
        path = dice_boxplot(ctx.figure_dir() / "utility_dice.png", tables, names)
        return {"figure": f"figures/{path.name}", "contains_real_data": True}
