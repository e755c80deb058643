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


class _Needles:
    """Byte strings to find, indexed for a scan whose cost does not grow with their number: a table of every
    string's first two bytes, then its first four, picks the candidate positions of a haystack (a few in a
    megabyte of image data); only those are compared with the strings. Strings under four bytes are searched one
    by one."""

    SHORT_HAY = 4096  # below this many bytes, a plain search per string is as fast

    def __init__(self, variants: dict[bytes, str]) -> None:
        import numpy as np

        self.variants = variants
        self.short = {b: n for b, n in variants.items() if len(b) < 4}
        self.by_prefix: dict[int, list[bytes]] = {}
        for b in variants:
            if len(b) >= 4:
                self.by_prefix.setdefault(int.from_bytes(b[:4], "little"), []).append(b)
        self.first_two = np.zeros(65536, dtype=bool)
        self.first_two[[p & 0xFFFF for p in self.by_prefix]] = True
        self.prefixes = np.array(sorted(self.by_prefix), dtype=np.uint32)

    def found_in(self, hay: bytes) -> set[str]:
        import numpy as np

        if len(hay) < self.SHORT_HAY:
            return {n for b, n in self.variants.items() if b in hay}
        found = {n for b, n in self.short.items() if b in hay}
        if not self.by_prefix or len(hay) < 4:
            return found
        a = np.frombuffer(hay, dtype=np.uint8)
        a16 = a.astype(np.uint16)
        pos = np.flatnonzero(self.first_two[a16[:-1] | (a16[1:] << 8)])
        pos = pos[pos < len(a) - 3]
        a32 = a.astype(np.uint32)
        grams = a32[pos] | (a32[pos + 1] << 8) | (a32[pos + 2] << 16) | (a32[pos + 3] << 24)
        hit = np.isin(grams, self.prefixes)
        for p, g in zip(pos[hit].tolist(), grams[hit].tolist(), strict=True):
            found.update(self.variants[b] for b in self.by_prefix[g] if hay.startswith(b, p))
        return found


def find_strings(root: Path, needles: Iterable[str], *, case_sensitive: bool = False) -> list[Finding]:
    """Every (file, string) pair where a string occurs in a file under ``root`` (raw or decompressed bytes).

    Strings are searched as UTF-8 and, for DICOM-style names, also with ``^`` replaced by a space. The cost is one
    pass over each file's bytes, whatever the number of strings (``_Needles``).
    """
    variants: dict[bytes, str] = {}
    for needle in needles:
        if not needle:
            continue
        for form in {needle, needle.replace("^", " ")}:
            b = form.encode()
            variants[b if case_sensitive else b.lower()] = needle
    index = _Needles(variants)
    findings: list[Finding] = []
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        names = path.relative_to(root).as_posix().encode()
        for data, gz in [(names, False), *_contents(path)]:
            hay = data if case_sensitive else data.lower()
            findings.extend(Finding(path, needle, gz) for needle in index.found_in(hay))
    return sorted(set(findings), key=lambda f: (str(f.path), f.needle))
