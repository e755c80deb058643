"""Console output: progress and messages on stderr (rich), results on stdout."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import click


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

    def result_json(self, data: Any) -> None:
        click.echo(json.dumps(data, indent=2, default=str))

    @contextmanager
    def progress(self) -> Iterator[Callable[[str, int, int], None]]:
        """A ``progress(task, done, total)`` callback drawing rich bars on stderr.

        Silent when quiet or when stderr is not a terminal (logs and CI get the one-line result, not bar frames).
        """
        if self.quiet or not self.console.is_terminal:
            yield lambda task, done, total: None
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
