"""``export``: write the release package of a cleared synthetic set, atomically.

Order matters: every input is checked (paths, key, licence) and the set's clearance established before anything
is written; the package is then built in a hidden temporary folder, scanned for every identifier the workspace
knows and its own path, described (card, Croissant, validated), hashed and signed, and only then renamed into place.
An error, a refusal or Ctrl-C at any point leaves nothing at ``out`` (nor a tarball).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from synthrelease.audit import workspace_identifiers
from synthrelease.checks.privacy.metadata import MIN_IDENTIFIER_LENGTH
from synthrelease.data.leakscan import find_strings
from synthrelease.data.nnunet import scan_nnunet
from synthrelease.data.workspace import Workspace
from synthrelease.errors import InputError
from synthrelease.release.archive import write_tarball
from synthrelease.release.card import render_card
from synthrelease.release.clearance import Clearance, clear_for_release
from synthrelease.release.croissant import CroissantInvalid, build_croissant, dumps, validate_croissant
from synthrelease.release.errors import ExportRefused
from synthrelease.release.info import DEFAULT_LICENSE, PackageInfo, check_version, license_url, package_provenance
from synthrelease.release.manifest import MANIFEST, SIGNATURE, build_manifest, list_package
from synthrelease.release.signing import load_private_key, sign
from synthrelease.report import public_report, render_html
from synthrelease.runtime.fs import atomic_directory

__all__ = ["ExportOutcome", "export_package"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


@dataclass(frozen=True)
class ExportOutcome:
    path: Path
    tarball: Path | None
    signed: bool
    n_cases: int
    n_files: int
    croissant_warnings: tuple[str, ...]


def _release_date(date: str | None) -> str:
    """``date``, else ``SOURCE_DATE_EPOCH`` (reproducible builds), else today (UTC), as YYYY-MM-DD."""
    if date is not None:
        try:
            return dt.date.fromisoformat(date).isoformat()
        except ValueError:
            raise InputError(f"date {date!r} is not YYYY-MM-DD", fix="use e.g. 2026-01-31") from None
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch and epoch.isdigit():
        return dt.datetime.fromtimestamp(int(epoch), dt.UTC).date().isoformat()
    return dt.datetime.now(dt.UTC).date().isoformat()


def _copy_dataset(clearance: Clearance, tmp: Path) -> tuple[str, ...]:
    """Copy dataset.json and each case's files (nothing else of the set folder); return the case ids."""
    index = scan_nnunet(clearance.set_dir)
    shutil.copyfile(clearance.set_dir / "dataset.json", tmp / "dataset.json")
    for sub in ("imagesTr", "labelsTr"):
        (tmp / sub).mkdir()
    for case in index.cases:
        for path in (*case.images, case.label):
            shutil.copyfile(path, tmp / path.parent.name / path.name)
    return tuple(c.case_id for c in index.cases)


def _write_audit(clearance: Clearance, tmp: Path) -> dict[str, object]:
    """The public audit: evidence withheld, figures of real data left out; the exact policy file."""
    (tmp / "audit").mkdir()
    public = public_report(clearance.report)
    (tmp / "audit" / "report.json").write_text(json.dumps(public, indent=2) + "\n")
    (tmp / "audit" / "report.html").write_text(render_html(clearance.report, clearance.audit_dir, public=True))
    shutil.copyfile(clearance.audit_dir / "policy.toml", tmp / "audit" / "policy.toml")
    return public


def _refuse_leaks(tmp: Path, ws: Workspace, extra: Sequence[str]) -> None:
    """Refuse if any file name or content (gzip opened) holds a real identifier or the workspace's path."""
    ids = {i for i in (*workspace_identifiers(ws), *extra) if len(i) >= MIN_IDENTIFIER_LENGTH}
    paths = {str(ws.root.resolve()), str(ws.root.absolute())}
    findings = find_strings(tmp, ids | paths)
    if findings:
        files = sorted({f.path.relative_to(tmp).as_posix() for f in findings})
        kinds = sorted({"the workspace path" if f.needle in paths else "a real-cohort identifier" for f in findings})
        raise ExportRefused(f"the package would contain {' and '.join(kinds)} in {len(files)} file(s): "
                            f"{', '.join(files[:5])}", where=ws.root,
                            fix="find where it comes from (set files, report reasons) and remove it, then re-audit")


def export_package(workspace: Workspace | Path, set_name: str, out: Path, *, key: Path | None = None,
                   tar: bool = False, license: str = DEFAULT_LICENSE, version: str = "1.0.0", date: str | None = None,
                   identifiers: Sequence[str] = ()) -> ExportOutcome:
    """Write the release package of ``WS/synthetic/<set_name>`` to the new folder ``out`` (signed with the
    private key at ``key`` if given; also ``<out>.tar.gz`` if ``tar``). Raises ``ExportRefused`` unless the set is
    cleared (see ``clearance``); nothing is written then."""
    ws = workspace if isinstance(workspace, Workspace) else Workspace(Path(workspace))
    out = Path(out)
    if not _NAME.match(out.name):
        raise InputError(f"package name {out.name!r} (the --out folder's name) is not a plain name", where=out,
                         fix="use letters, digits, '.', '_' or '-'")
    license_url(license)
    version, date = check_version(version), _release_date(date)
    private = load_private_key(key) if key is not None else None
    tarball = out.with_name(out.name + ".tar.gz") if tar else None
    if not out.parent.is_dir():
        raise InputError("parent folder does not exist", where=out.parent, fix="create it first")
    for path in (out, tarball):
        if path is not None and (path.exists() or path.is_symlink()):
            raise InputError("already exists", where=path, fix="choose another --out or remove it")
    clearance = clear_for_release(ws, set_name)
    hidden_tar = out.with_name(f".{out.name}.tar.gz.partial-{secrets.token_hex(4)}")
    try:
        with atomic_directory(out) as tmp:
            case_ids = _copy_dataset(clearance, tmp)
            public = _write_audit(clearance, tmp)
            provenance = package_provenance(clearance, name=out.name, version=version, license=license)
            (tmp / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
            info = PackageInfo(out.name, version, license, json.loads((tmp / "dataset.json").read_text()), case_ids,
                               provenance, public)
            (tmp / "README.md").write_text(render_card(info))
            listed = list(list_package(tmp).files)
            (tmp / "croissant.json").write_text(dumps(build_croissant(tmp, info, listed, date=date)))
            try:
                warnings = validate_croissant(tmp / "croissant.json")
            except CroissantInvalid as exc:
                raise ExportRefused(f"croissant.json does not validate: {exc}", where=out,
                                    fix="report this as a bug with the message") from None
            _refuse_leaks(tmp, ws, identifiers)
            manifest = build_manifest(tmp)
            (tmp / MANIFEST).write_bytes(manifest)
            if private is not None:
                (tmp / SIGNATURE).write_bytes(sign(manifest, private))
            n_files = len(list_package(tmp).files)
            if tarball is not None:
                write_tarball(tmp, hidden_tar, top=out.name)
        if tarball is not None:
            os.replace(hidden_tar, tarball)
    finally:
        hidden_tar.unlink(missing_ok=True)
    return ExportOutcome(out, tarball, private is not None, len(case_ids), n_files, tuple(warnings))
