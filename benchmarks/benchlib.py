"""What the benchmark scripts share (they run as scripts: ``python benchmarks/NAME.py``, so this sits beside them)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["print_table"]


def print_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A markdown table on stdout, flushed (benchmarks print as they go)."""
    print(" | ".join(head))
    print(" | ".join("---" for _ in head))
    for r in rows:
        print(" | ".join(r))
    print(flush=True)
