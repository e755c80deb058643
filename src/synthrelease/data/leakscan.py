"""Byte search of a folder for identifying strings, looking inside gzip-compressed files too.

Used to prove de-identification (every planted fake identifier must be absent from a workspace) and, later, by
the metadata privacy check on released sets.
"""

from __future__ import annotations

import contextlib
import gzip
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Finding", "find_strings"]


@dataclass(frozen=True)
class Finding:
    path: Path
    needle: str
    inside_gzip: bool


def _contents(path: Path) -> Iterable[tuple[bytes, bool]]:
    raw = path.read_bytes()
    yield raw, False
    if raw[:2] == b"\x1f\x8b":
        with contextlib.suppress(OSError, EOFError, zlib.error):
            yield gzip.decompress(raw), True


def find_strings(root: Path, needles: Iterable[str], *, case_sensitive: bool = False) -> list[Finding]:
    """Every (file, string) pair where a string occurs in a file under ``root`` (raw or decompressed bytes).

    Strings are searched as UTF-8 and, for DICOM-style names, also with ``^`` replaced by a space.
    """
    variants: dict[bytes, str] = {}
    for needle in needles:
        if not needle:
            continue
        for form in {needle, needle.replace("^", " ")}:
            b = form.encode()
            variants[b if case_sensitive else b.lower()] = needle
    findings: list[Finding] = []
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        names = path.relative_to(root).as_posix().encode()
        for data, gz in [(names, False), *_contents(path)]:
            hay = data if case_sensitive else data.lower()
            findings.extend(Finding(path, needle, gz) for b, needle in variants.items() if b in hay)
    return sorted(set(findings), key=lambda f: (str(f.path), f.needle))
