"""The content checks of ``verify``: the audit, the nnU-Net dataset and its NIfTI headers, the Croissant metadata.

Each returns ``(path inside the package, reason)`` pairs and never raises for a problem of the package: a recipient
wants the whole list. Files missing altogether are reported by the file checks, so these skip them silently.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from synthrelease.data.nnunet import scan_nnunet
from synthrelease.errors import LayoutError
from synthrelease.release.croissant import CONFORMS_TO, CroissantInvalid, validate_croissant
from synthrelease.release.manifest import sha256_file

__all__ = ["HEADER_TEXT_FIELDS", "check_audit", "check_croissant", "check_dataset"]

HEADER_TEXT_FIELDS = ("descrip", "aux_file", "intent_name", "db_name")
Found = list[tuple[str, str]]
_REPORT = "audit/report.json"


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


def check_audit(root: Path) -> Found:
    """Verdict pass, under a release policy whose file is the one the report names; evidence withheld; provenance
    agreeing with the report."""
    if not (root / _REPORT).is_file():
        return []
    report = _json(root / _REPORT)
    found: Found = []
    if report.get("verdict") != "pass":
        found.append((_REPORT, f"verdict is {report.get('verdict')!r}, not 'pass': the set was not cleared"))
    policy = report.get("policy")
    if not isinstance(policy, dict):
        return [*found, (_REPORT, "names no policy: the set was audited without a release gate")]
    if policy.get("release") is not True:
        found.append((_REPORT, f"policy {policy.get('name')!r} is not a release policy (release = false)"))
    policy_file = root / "audit" / "policy.toml"
    if policy_file.is_file():
        if sha256_file(policy_file) != policy.get("sha256"):
            found.append(("audit/policy.toml", f"sha256 differs from the policy sha256 in {_REPORT}: not the "
                                               "policy the set was judged by"))
        elif tomllib.loads(policy_file.read_text()).get("release", True) is not True:
            found.append(("audit/policy.toml", "is not a release policy (release = false)"))
    if (report.get("synthetic_set") or {}).get("negative_control"):
        found.append((_REPORT, "the audited set is a negative control (copies of training patients)"))
    withheld = all(not isinstance(c, dict) or set(c.get("evidence") or {"withheld": 1}) == {"withheld"}
                   for c in (report.get("checks") or {}).values())
    if not withheld:
        found.append((_REPORT, "carries audit evidence (derived from patient data); packages hold the public report"))
    if (root / "provenance.json").is_file():
        prov = _json(root / "provenance.json")
        audit = prov.get("audit") or {}
        facts = [((audit.get("policy") or {}).get("sha256"), policy.get("sha256"), "policy sha256"),
                 (audit.get("verdict"), report.get("verdict"), "verdict"),
                 ((prov.get("synthetic_set") or {}).get("sha256"), (report.get("synthetic_set") or {}).get("sha256"),
                  "synthetic set sha256")]
        found += [("provenance.json", f"{what} disagrees with {_REPORT}") for mine, theirs, what in facts
                  if mine != theirs]
    return found


def _header_problems(path: Path) -> tuple[list[str], tuple[int, ...]]:
    """Text in the free-text fields, any header extension; and the grid shape."""
    img = nib.load(path)  # reads the header only
    header: Any = img.header
    problems = []
    for field in HEADER_TEXT_FIELDS:
        if field in header:
            text = np.asarray(header[field]).tobytes().strip(b"\0 \t\r\n")
            if text:
                problems.append(f"NIfTI header field {field} is not empty ({len(text)} bytes of text)")
    if len(getattr(header, "extensions", [])):
        problems.append(f"NIfTI header carries {len(header.extensions)} extension(s) (free data, may hold anything)")
    return problems, tuple(int(n) for n in header.get_data_shape()[:3])


def check_dataset(root: Path) -> Found:
    """dataset.json against the files (nnU-Net's own rules), then every header re-read."""
    if not (root / "dataset.json").is_file():
        return []
    try:
        index = scan_nnunet(root)
    except LayoutError as exc:
        where = Path(exc.where or root)
        rel = where.relative_to(root).as_posix() if where.is_relative_to(root) and where != root else "dataset.json"
        return [(rel, exc.problem)]
    found: Found = []
    data = _json(root / "dataset.json")
    if data.get("numTraining") != len(index.cases):
        found.append(("dataset.json", f"numTraining is {data.get('numTraining')}, but labelsTr/ holds "
                                      f"{len(index.cases)} cases"))
    for case in index.cases:
        shapes = set()
        for path in (*case.images, case.label):
            rel = path.relative_to(root).as_posix()
            try:
                problems, shape = _header_problems(path)
                found += [(rel, p) for p in problems]
                shapes.add(shape)
            except (OSError, ValueError, nib.filebasedimages.ImageFileError) as exc:
                found.append((rel, f"not a readable NIfTI file ({exc})"))
        if len(shapes) > 1:
            found.append((case.label.relative_to(root).as_posix(), f"image and label grids differ: {sorted(shapes)}"))
    return found


def check_croissant(root: Path) -> Found:
    """Conforms to Croissant 1.1 + RAI, every file object's sha256 matches its file, every case file is described,
    and mlcroissant reports no error."""
    path = root / "croissant.json"
    if not path.is_file():
        return []
    doc = _json(path)
    found: Found = []
    conforms = doc.get("conformsTo")
    conforms = conforms if isinstance(conforms, list) else [conforms]
    if not all(c in conforms for c in CONFORMS_TO):
        found.append(("croissant.json", f"conformsTo {conforms} lacks {CONFORMS_TO}"))
    described = set()
    for item in doc.get("distribution") or []:
        if item.get("@type") != "cr:FileObject":
            continue
        rel = str(item.get("contentUrl", ""))
        target = (root / rel).resolve()
        if not target.is_relative_to(root.resolve()) or not target.is_file():
            found.append(("croissant.json", f"file object {rel!r} is not a file of the package"))
        elif sha256_file(target) != item.get("sha256"):
            found.append(("croissant.json", f"sha256 of {rel} differs from the file"))
        described.add(rel)
    for sub in ("imagesTr", "labelsTr"):
        for p in sorted((root / sub).glob("*")) if (root / sub).is_dir() else []:
            if p.relative_to(root).as_posix() not in described:
                found.append(("croissant.json", f"does not describe {p.relative_to(root).as_posix()}"))
    try:
        validate_croissant(path)
    except CroissantInvalid as exc:
        found.append(("croissant.json", f"does not validate: {exc}"))
    return found
