"""Errors of the release layer.

Both mean "no" rather than "broken": the CLI turns them into exit code 1, like a failed gate, and prints the
reason. Bad paths and usage stay ``InputError`` (exit code 2).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from synthrelease.errors import SynthReleaseError

__all__ = ["ExportRefused", "InvalidPackage"]


class ExportRefused(SynthReleaseError):
    """The set is not cleared for release: no passing audit of exactly this set under a release policy, a negative
    control, or an identifier found in the package about to be written. Nothing was written."""


class InvalidPackage(SynthReleaseError):
    """A release package that failed verification; ``problems`` holds one line per problem."""

    def __init__(self, problems: Sequence[str], *, where: str | Path | None = None) -> None:
        self.problems = tuple(problems)
        shown = "; ".join(self.problems[:3]) + (f"; ... ({len(self.problems)} problems)" if len(self.problems) > 3
                                                else "")
        super().__init__(f"is not a valid release package: {shown}", where=where,
                         fix="obtain the package again from its source, then run 'synthrelease verify'")
