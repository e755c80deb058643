"""Governance of the release gate: the gating seed and the workspace's append-only audit log.

A gate that may be re-run with another seed, or against a split chosen because it flatters, can be shopped until it
passes. So:

- the audit that may clear a set for release (the *gating* audit) takes its seed from the set's and the policy's
  sha256 (``gating_seed``): the same files under the same policy always get the same seed, so re-running the gate
  changes nothing; an audit with an explicit seed, or against the tuning split, is *exploratory* and clears nothing;
- every audit of a workspace, gating or exploratory, appends one line to ``WS/audits/log.jsonl``; lines are only
  ever appended (and fsynced), never rewritten, and the package states how many audits of its exact files the log
  records, how many were gating and how many failed.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from synthrelease.data.workspace import Workspace
from synthrelease.errors import InputError

__all__ = ["AUDIT_LOG", "HOLDOUT_SPLITS", "AuditHistory", "AuditRecord", "append_audit_log", "audit_log_path",
           "gating_seed", "logged_path", "now_utc",
           "read_audit_log"]

AUDIT_LOG = "log.jsonl"  # under WS/audits/, beside the audit folders
HOLDOUT_SPLITS = ("holdout", "tuning")  # the real cohort an audit compares with: the gate's, or the tuning split
_GATE_SALT = b"synthrelease-gate\0"
_LOG_FIX = ("the log is append-only and never edited: restore it from a backup of the workspace, or move it "
            "aside and re-run the audits")


def gating_seed(set_sha256: str, policy_sha256: str | None) -> int:
    """The seed of the gating audit of a set (sha256 hex over its files) under a policy (sha256 hex of its file;
    None: no policy). Fixed by the two hashes, so a steward cannot pick a seed that happens to pass."""
    data = _GATE_SALT + set_sha256.encode() + b"\0" + (policy_sha256 or "").encode()
    return int.from_bytes(hashlib.sha256(data).digest()[:4], "big")


@dataclass(frozen=True)
class AuditRecord:
    """One line of the audit log: which files were audited, how (seed, gating, split, policy) and the outcome."""

    time: str  # UTC, ISO 8601
    set: str  # the set's folder name
    set_sha256: str
    policy: str | None
    policy_sha256: str | None
    seed: int
    gating: bool
    holdout: str  # "holdout" (the gate's) or "tuning"
    verdict: str | None  # pass | fail; None without a policy
    report: str  # report.json, relative to the workspace when inside it
    report_sha256: str  # ties the log line to the report file export reads

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuditRecord:
        """Raises KeyError, TypeError or ValueError on a line that is not a record."""
        record = cls(**{k: data[k] for k in cls.__dataclass_fields__})
        if not isinstance(record.seed, int) or not isinstance(record.gating, bool) \
                or record.holdout not in HOLDOUT_SPLITS:
            raise ValueError("seed, gating or holdout has the wrong type or value")
        return record

    def to_line(self) -> bytes:
        return (json.dumps(asdict(self), separators=(",", ":")) + "\n").encode()


@dataclass(frozen=True)
class AuditHistory:
    """What the log says about one set's files (one sha256): a gate re-run until it passed shows here."""

    n_audits: int
    n_gating: int
    n_failed: int

    @classmethod
    def of(cls, records: Iterable[AuditRecord], set_sha256: str) -> AuditHistory:
        mine = [r for r in records if r.set_sha256 == set_sha256]
        return cls(len(mine), sum(r.gating for r in mine), sum(r.verdict == "fail" for r in mine))

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def _root(ws: Workspace | Path) -> Path:
    return ws.root if isinstance(ws, Workspace) else Path(ws)


def audit_log_path(ws: Workspace | Path) -> Path:
    return _root(ws) / "audits" / AUDIT_LOG


def logged_path(ws: Workspace | Path, path: Path) -> str:
    """How the log names a file: relative to the workspace when inside it (the log survives a moved workspace)."""
    try:
        return Path(path).resolve().relative_to(_root(ws).resolve()).as_posix()
    except ValueError:
        return str(Path(path).resolve())


def now_utc() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _drop_cut_tail(fd: int) -> None:
    """Cut off a last line that has no newline (an append interrupted by a crash): it is no record (the reader
    ignores it), and left in place it would become a corrupt middle line once the next line is appended."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    end = size
    while end > 0:
        start = max(0, end - 4096)
        newline = os.pread(fd, end - start, start).rfind(b"\n")
        if newline >= 0:
            os.ftruncate(fd, start + newline + 1)
            return
        end = start
    os.ftruncate(fd, 0)


def append_audit_log(ws: Workspace | Path, record: AuditRecord) -> Path:
    """Append ``record`` as one line of ``WS/audits/log.jsonl`` and fsync it. An exclusive lock keeps concurrent
    audits of one workspace from interleaving; earlier lines are never touched."""
    path = audit_log_path(ws)
    created = not path.exists()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _drop_cut_tail(fd)
        data = record.to_line()
        while data:
            data = data[os.write(fd, data):]
        os.fsync(fd)
    finally:
        os.close(fd)  # releases the lock
    if created:  # the new directory entry must survive a crash too
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def _parse(line: bytes, path: Path, number: int) -> AuditRecord:
    try:
        data = json.loads(line)
        if not isinstance(data, dict):
            raise TypeError("not a JSON object")
        return AuditRecord.from_dict(data)
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"line {number} is not an audit record ({type(exc).__name__}: {exc})", where=path,
                         fix=_LOG_FIX) from None


def read_audit_log(ws: Workspace | Path) -> tuple[AuditRecord, ...]:
    """Every record of the workspace's audit log, oldest first (none if there is no log yet). A last line without
    newline (an interrupted append) is ignored; any other line that is not a record raises ``InputError``."""
    path = audit_log_path(ws)
    if not path.is_file():
        return ()
    try:
        lines = path.read_bytes().split(b"\n")
    except OSError as exc:
        raise InputError(f"cannot be read ({exc})", where=path, fix="check its permissions") from None
    return tuple(_parse(line, path, i) for i, line in enumerate(lines[:-1], 1))
