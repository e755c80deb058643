"""Progress on stderr: rich bars on a terminal, plain lines a person can follow in a log, nothing when quiet."""

from __future__ import annotations

import io
import itertools
import re

from rich.console import Console

from synthrelease_cli.output import LogProgress, Output

LINE = re.compile(r"^\[ *(\d+\.\d) s\] (.+) (\d+)/(\d+)$")


def _log_output(quiet: bool = False) -> tuple[Output, io.StringIO]:
    buffer = io.StringIO()  # not a terminal, as in a log or CI
    return Output(quiet=quiet, _console=Console(file=buffer, force_terminal=False, width=60)), buffer


def test_output_progress_prints_plain_lines_when_stderr_is_not_a_terminal() -> None:
    out, buffer = _log_output()
    with out.progress() as progress:
        for step in range(1, 501):
            progress("utility synthetic: train segmentation", step, 500)
    lines = buffer.getvalue().splitlines()
    parsed = [LINE.match(line) for line in lines]
    assert lines and all(parsed), lines  # one plain line each, not wrapped although the task name is long
    assert all(m.group(2) == "utility synthetic: train segmentation" for m in parsed if m)
    assert lines[0].endswith(" 1/500") and lines[-1].endswith(" 500/500")  # its start and its end
    assert len(lines) <= 12  # not a line per step: at most one per tenth of the task
    assert "\x1b" not in buffer.getvalue() and "━" not in buffer.getvalue()  # no bar frames, no escape codes


def test_quiet_stays_quiet() -> None:
    out, buffer = _log_output(quiet=True)
    with out.progress() as progress:
        for step in range(1, 11):
            progress("ingest", step, 10)
    assert buffer.getvalue() == ""


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_log_progress_a_line_per_tenth_and_at_most_every_30_s() -> None:
    lines: list[str] = []
    clock = _Clock()
    log = LogProgress(lines.append, clock=clock)
    for step in range(1, 501):  # 0.5 s a step: a tenth of the task is 25 s, so the 30 s spacing decides
        clock.now += 0.5
        log("train wgan", step, 500)
    assert lines[0] == "[   0.0 s] train wgan 1/500" and lines[-1] == "[ 249.5 s] train wgan 500/500"
    seconds = [float(LINE.match(line).group(1)) for line in lines]  # type: ignore[union-attr]
    assert all(b - a >= 30 for a, b in itertools.pairwise(seconds[1:-1]))
    assert 6 <= len(lines) <= 10, lines
    done = [int(LINE.match(line).group(3)) for line in lines]  # type: ignore[union-attr]
    assert done == sorted(done) and done[1] >= 60  # the first line after the start: at least 30 s in

    lines.clear()  # slow steps (30 s each): the tenths decide, each line with the seconds since the task started
    for step in range(1, 21):
        clock.now += 30.0
        log("utility real: train segmentation", step, 20)
    assert [line.split("] ")[1] for line in lines] == [f"utility real: train segmentation {n}/20"
                                                     for n in (1, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20)]
    assert lines[-1].startswith("[ 570.0 s]")


def test_log_progress_starts_a_task_anew_when_its_count_does_not_advance() -> None:
    """The audit reports each check once ('check NAME', i, n), and the demo's second audit reuses the names."""
    lines: list[str] = []
    clock = _Clock()
    log = LogProgress(lines.append, clock=clock)
    for _audit in range(2):
        for i, name in enumerate(("integrity.cohort", "privacy.dcr", "utility.segmentation")):
            clock.now += 40.0
            log(f"check {name}", i, 3)
        log("checks", 3, 3)
    assert lines == ["[   0.0 s] check integrity.cohort 0/3", "[   0.0 s] check privacy.dcr 1/3",
                     "[   0.0 s] check utility.segmentation 2/3", "[   0.0 s] checks 3/3"] * 2
