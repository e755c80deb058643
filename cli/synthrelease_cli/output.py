"""Console output: progress and messages on stderr (rich), results on stdout."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import click

LOG_EVERY_FRACTION = 0.1  # a progress line in a log: at most one per tenth of a task ...
LOG_EVERY_S = 30.0  # ... and at most one per 30 s of it (the first line and the last always)


@dataclass
class _Task:
    start: float
    last_line: float
    last_step: int  # the tenth of the total the last line showed
    done: int


class LogProgress:
    """``progress(task, done, total)`` as plain lines for a log (stderr not a terminal): one line when a task starts,
    then one when it has gone at least a tenth of its total further *and* at least ``every_s`` seconds since its last
    line (whichever is rarer), and one when it completes; each with the seconds since the task started, e.g.
    ``[  12.3 s] utility synthetic: train segmentation 250/500``. A report that does not advance a task (``done`` not
    above its last) starts it anew: the audit reports each check once, and a second audit reuses the names."""

    def __init__(self, write: Callable[[str], None], *, every_fraction: float = LOG_EVERY_FRACTION,
                 every_s: float = LOG_EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._write, self._fraction, self._every_s, self._clock = write, every_fraction, every_s, clock
        self._tasks: dict[str, _Task] = {}

    def __call__(self, task: str, done: int, total: int) -> None:
        now = self._clock()
        state = self._tasks.get(task)
        step = int(done / (total * self._fraction)) if total > 0 else 0
        if state is None or done <= state.done:
            state = self._tasks[task] = _Task(start=now, last_line=now, last_step=step, done=done)
            self._line(task, done, total, 0.0)
        else:
            finished = total > 0 and done >= total
            due = step > state.last_step and now - state.last_line >= self._every_s
            state.done = done
            if finished or due:
                state.last_line, state.last_step = now, step
                self._line(task, done, total, now - state.start)
        if total > 0 and done >= total:
            self._tasks.pop(task, None)  # complete: the same name later is a new task

    def _line(self, task: str, done: int, total: int, seconds: float) -> None:
        self._write(f"[{seconds:6.1f} s] {task} {done}/{total}")


@dataclass
class Output:
    quiet: bool = False
    debug: bool = False
    _console: Any = field(default=None, repr=False)

    @property
    def console(self) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=True, quiet=self.quiet)
        return self._console

    def info(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message)

    def line(self, message: str) -> None:
        """``message`` on stderr as it is (no markup, no wrapping), unless quiet."""
        if not self.quiet:
            self.console.print(message, markup=False, highlight=False, soft_wrap=True)

    def result_json(self, data: Any) -> None:
        click.echo(json.dumps(data, indent=2, default=str))

    @contextmanager
    def progress(self) -> Iterator[Callable[[str, int, int], None]]:
        """A ``progress(task, done, total)`` callback: rich bars on stderr when it is a terminal; plain lines
        otherwise (``LogProgress``: logs and CI get where the time went, not bar frames). Silent when quiet."""
        if self.quiet:
            yield lambda task, done, total: None
            return
        if not self.console.is_terminal:
            yield LogProgress(self.line)
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        bars: dict[str, Any] = {}
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=self.console, transient=False) as prog:

            def update(task: str, done: int, total: int) -> None:
                if task not in bars:
                    bars[task] = prog.add_task(task, total=total)
                prog.update(bars[task], completed=done, total=total)

            yield update
