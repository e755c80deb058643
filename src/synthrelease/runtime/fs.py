"""Atomic creation of output folders: an interrupted command leaves nothing half-written."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from synthrelease.errors import InputError

__all__ = ["atomic_directory", "sha256_file"]


@contextlib.contextmanager
def atomic_directory(target: Path, *, replace: bool = False) -> Iterator[Path]:
    """Yield a hidden temporary sibling of ``target``; rename it to ``target`` only if the block succeeds.

    ``target`` must not exist (unless ``replace``: then the old folder is swapped out only after success).
    On any error, or Ctrl-C, the temporary folder is removed and ``target`` is left as it was.
    """
    target = Path(target)
    if target.exists() and not (replace and target.is_dir()):
        raise InputError("already exists", where=target, fix="choose another output folder or remove it")
    if not target.parent.is_dir():
        raise InputError("parent folder does not exist", where=target.parent, fix="create it first")
    tmp = target.parent / f".{target.name}.partial-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        yield tmp
        if target.exists():
            old = target.parent / f".{target.name}.old-{secrets.token_hex(4)}"
            os.rename(target, old)
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_file(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
