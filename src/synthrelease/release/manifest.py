"""``MANIFEST.sha256``: the sha256 of every file of a package, the one thing the signature covers.

Format: ``<sha256 hex>  <relative path>`` lines sorted by path (the ``sha256sum`` format, so ``sha256sum -c
MANIFEST.sha256`` checks a package without synthrelease). Every regular file is listed except the manifest and
its signature; a package holds nothing else (no links, no empty folders that matter).
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from synthrelease.runtime.fs import sha256_file

__all__ = ["MANIFEST", "SIGNATURE", "Listing", "build_manifest", "list_package", "parse_manifest", "sha256_file"]

MANIFEST = "MANIFEST.sha256"
SIGNATURE = "MANIFEST.sig"
_LINE = re.compile(r"^([0-9a-f]{64})  (\S(?:.*\S)?)$")


@dataclass(frozen=True)
class Listing:
    """What a package folder holds: regular files (relative POSIX paths, sorted) and anything else (links,
    devices, fifos), which a package must never contain."""

    files: tuple[str, ...]
    others: tuple[str, ...]


def list_package(root: Path) -> Listing:
    """Every entry under ``root`` without following links."""
    files, others = [], []
    for folder, dirs, names in os.walk(root, followlinks=False):
        base = Path(folder)
        for name in [*dirs, *names]:
            path = base / name
            rel = path.relative_to(root).as_posix()
            mode = path.lstat().st_mode
            if stat.S_ISREG(mode):
                files.append(rel)
            elif not stat.S_ISDIR(mode):
                others.append(rel)
    return Listing(tuple(sorted(files)), tuple(sorted(others)))


def build_manifest(root: Path) -> bytes:
    """The manifest of the files now under ``root`` (except the manifest and signature themselves)."""
    listing = list_package(root)
    if listing.others:
        raise ValueError(f"a package may hold regular files only, not {listing.others[0]}")
    lines = [f"{sha256_file(Path(root) / rel)}  {rel}\n" for rel in listing.files if rel not in (MANIFEST, SIGNATURE)]
    return "".join(lines).encode()


def _safe_relative(rel: str) -> bool:
    p = PurePosixPath(rel)
    return not p.is_absolute() and ".." not in p.parts and "\\" not in rel and p.as_posix() == rel


def parse_manifest(data: bytes) -> tuple[dict[str, str], list[str]]:
    """The entries (path -> sha256) and the problems of a manifest (malformed or unsafe lines, duplicates, order)."""
    entries: dict[str, str] = {}
    problems: list[str] = []
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return {}, [f"{MANIFEST}: not UTF-8 text"]
    order = []
    for i, line in enumerate(text.splitlines(), start=1):
        match = _LINE.match(line)
        if not match:
            problems.append(f"{MANIFEST}: line {i} is not '<sha256>  <path>'")
            continue
        digest, rel = match.groups()
        if not _safe_relative(rel) or rel in (MANIFEST, SIGNATURE):
            problems.append(f"{MANIFEST}: line {i} lists a path that may not be in a package: {rel!r}")
        elif rel in entries:
            problems.append(f"{MANIFEST}: line {i} lists {rel} twice")
        else:
            entries[rel] = digest
            order.append(rel)
    if order != sorted(order):
        problems.append(f"{MANIFEST}: lines are not sorted by path")
    return entries, problems
