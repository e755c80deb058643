"""Per-case work across processes: results in task order, identical to running in process.

``WorkerPool(n).map(fn, tasks)`` yields ``fn(*task)`` for every task, in task order. With ``n == 1`` it simply calls
``fn`` here, one task at a time, as a loop would. With ``n > 1`` the tasks run in ``n`` worker processes that are
never forks of the caller (which may hold torch or BLAS threads): they come from a "forkserver" (a fresh,
single-threaded interpreter started once per session that imports the ``preload`` modules once, so that later
pools start in milliseconds), or are "spawn"ed where there is no forkserver. The parent still sees everything in
task order:

- results come back in task order (callers keep their progress callbacks, file names and dict order);
- the first task (in task order) that fails raises its own exception here, as the same type with the same message
  (``InputError`` naming the file stays one clear line: no remote traceback is chained to it); pending tasks are
  cancelled and running ones finish before it is raised, so nothing writes into a folder being cleaned up;
- ``synthrelease`` log records and warnings of a task are replayed here, in task order, before its result.

``fn`` and the tasks must pickle (module-level functions, ``functools.partial`` of them, plain data).
``resolve_workers`` turns a ``workers`` argument (``None``/``0``: auto) into a process count.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import os
import pickle
import sys
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any, TypeVar

from synthrelease.errors import InputError, SynthReleaseError

__all__ = ["AUTO_MAX_WORKERS", "WORKERS_ENV", "WorkerPool", "resolve_workers"]

R = TypeVar("R")
AUTO_MAX_WORKERS = 4
MIN_TASKS_PER_WORKER = 16  # auto: with fewer tasks per process, starting processes costs more than it saves
WORKERS_ENV = "SYNTHRELEASE_WORKERS"  # overrides the auto choice (e.g. 1 to stay in process)
_LOGGER = "synthrelease"
# what the data layer's workers import: preloaded by the forkserver at its start, so that the pool of a later call
# (the ingest after writing a phantom cohort, say) starts without importing anything
_DATA_MODULES = ("synthrelease.data.ingest", "synthrelease.data.phantoms.cohort", "synthrelease.data.dicom")


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _spawn_safe() -> bool:
    """Whether spawned processes can start here: they import the parent's main script, which must not redo its
    work on import (``if __name__ == "__main__":``); an interactive session, ``-c`` or ``-m pkg`` is fine."""
    if multiprocessing.parent_process() is not None:
        return False  # already a worker: no nested pools
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    spec_name = getattr(getattr(main, "__spec__", None), "name", None) or ""
    if path is None or spec_name.endswith("__main__"):
        return True
    try:
        return "__main__" in Path(path).read_text(errors="replace")
    except OSError:
        return False


def resolve_workers(workers: int | None, n_tasks: int) -> int:
    """The number of processes for ``n_tasks`` tasks: ``workers`` as given (at most one per task), or, for ``None``
    or ``0`` (auto), ``$SYNTHRELEASE_WORKERS`` if set, else one per ``MIN_TASKS_PER_WORKER`` tasks up to
    ``min(usable CPUs, AUTO_MAX_WORKERS)``; auto stays in process inside a worker or under an unguarded script."""
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
        raise InputError(f"--workers {workers!r} is not a whole number >= 0",
                         fix="use 1 (in process), 2, ... or 0 (auto)")
    if workers:
        return max(1, min(workers, n_tasks))
    env = os.environ.get(WORKERS_ENV, "").strip()
    if env:
        if not env.isdigit():
            raise InputError(f"{WORKERS_ENV}={env!r} is not a whole number >= 0", fix="set it to 1, 2, ... or 0")
        if int(env):
            return max(1, min(int(env), n_tasks))
    if not _spawn_safe():
        return 1
    return max(1, min(_available_cpus(), AUTO_MAX_WORKERS, n_tasks // MIN_TASKS_PER_WORKER))


def picklable(*objects: Any) -> bool:
    """Whether ``objects`` can be sent to a worker process."""
    try:
        pickle.dumps(objects)
        return True
    except Exception:
        return False


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        record.msg, record.args = record.getMessage(), None  # arguments may not pickle
        if record.exc_info:
            record.exc_text = record.exc_text or logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        self.records.append(record)


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling (as the same type and message), else a RuntimeError that says what it was."""
    if not isinstance(exc, SynthReleaseError):  # ours are one-liners; anything else keeps its worker traceback
        exc.add_note("(raised in a worker process)\n" + "".join(traceback.format_tb(exc.__traceback__)).rstrip())
    try:
        back = pickle.loads(pickle.dumps(exc))
        if type(back) is type(exc) and str(back) == str(exc):
            return exc
    except Exception:
        pass
    return RuntimeError(f"{type(exc).__name__}: {exc}")


def _context(preload: Sequence[str]) -> BaseContext:
    """The forkserver context (its server, if not yet started, will import ``preload``), else spawn."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    from multiprocessing import forkserver

    current = list(getattr(getattr(forkserver, "_forkserver", None), "_preload_modules", None) or ["__main__"])
    ctx.set_forkserver_preload(current + [m for m in preload if m not in current])  # no effect once it runs
    return ctx


def _run_task(fn: Callable[..., Any], args: tuple[Any, ...], level: int) -> tuple[Any, Any, list[Any], list[Any]]:
    """In a worker: ``fn(*args)`` with its synthrelease logs and its warnings captured for the parent."""
    logger = logging.getLogger(_LOGGER)
    handler = _Collect()
    saved = logger.level, logger.propagate
    logger.setLevel(level)
    logger.propagate = False
    logger.addHandler(handler)
    value = error = None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                value = fn(*args)
            except Exception as exc:
                error = _portable(exc)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
    warned = [(str(w.message), w.category, w.filename, w.lineno) for w in caught]
    return value, error, handler.records, warned


def _replay(records: list[logging.LogRecord], warned: list[Any]) -> None:
    for record in records:
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)
    for message, category, filename, lineno in warned:
        warnings.warn_explicit(message, category, filename, lineno)


class WorkerPool:
    """``map`` tasks in process (``workers == 1``) or over ``workers`` spawned processes, started on first use and
    kept for later ``map`` calls until ``close`` (or the end of a ``with`` block)."""

    def __init__(self, workers: int, *, preload: Sequence[str] = ()) -> None:
        self.workers = max(1, int(workers))
        self.preload = (*_DATA_MODULES, *preload)  # modules the tasks need: imported once, in the forkserver
        self._executor: cf.ProcessPoolExecutor | None = None

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Cancel pending tasks and wait for running ones (so none writes after this returns)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def map(self, fn: Callable[..., R], tasks: Iterable[tuple[Any, ...]]) -> Iterator[R]:
        """``fn(*task)`` for each task, in task order (lazily: in process, each task runs when its result is asked
        for)."""
        if self.workers == 1:
            for task in tasks:
                yield fn(*task)
            return
        if self._executor is None:
            self._executor = cf.ProcessPoolExecutor(self.workers, mp_context=_context(self.preload))
        level = logging.getLogger(_LOGGER).getEffectiveLevel()
        futures = [self._executor.submit(_run_task, fn, tuple(task), level) for task in tasks]
        done = False
        try:
            for future in futures:
                value, error, records, warned = future.result()
                _replay(records, warned)
                if error is not None:
                    self.close()
                    raise error from None
                yield value
            done = True
        finally:
            if not done:  # an error, or the caller stopped early: stop the rest before anything is cleaned up
                self.close()
