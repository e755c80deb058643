"""Is this synthetic set cleared for release? The conditions export checks before it writes anything.

A set is cleared only by the latest audit of *exactly* these files (sha256 over the set, recorded in the audit's
``report.json``), judged under a *release* policy (``release = true``; the ``study`` policy is not one) whose file
in the audit folder is the one the report names (sha256), with the verdict ``pass``; and only if it is not a
negative control (``copycat``, ``negative_control``). Each refusal says which condition failed and how to fix it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synthrelease.audit import set_sha256
from synthrelease.data.workspace import Workspace
from synthrelease.errors import InputError
from synthrelease.release.errors import ExportRefused
from synthrelease.release.manifest import sha256_file

__all__ = ["NEGATIVE_CONTROL_GENERATORS", "Clearance", "clear_for_release"]

NEGATIVE_CONTROL_GENERATORS = ("copycat",)


@dataclass(frozen=True)
class Clearance:
    """The evidence that a set may be released: its folder, its audit folder and the audit's (full) report."""

    set_dir: Path
    audit_dir: Path
    report: dict[str, Any]
    provenance: dict[str, Any]  # the set's own provenance.json
    set_sha256: str

    @property
    def policy(self) -> dict[str, Any]:
        return dict(self.report["policy"])


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ExportRefused(f"{what} cannot be read ({exc})", where=path,
                            fix="re-run 'synthrelease audit' on the set") from None
    if not isinstance(data, dict):
        raise ExportRefused(f"{what} is not a JSON object", where=path, fix="re-run 'synthrelease audit' on the set")
    return data


def _refuse_negative_control(set_dir: Path, provenance: dict[str, Any], report: dict[str, Any] | None) -> None:
    facts = [provenance, (report or {}).get("synthetic_set") or {}]
    if any(f.get("negative_control") or f.get("generator") in NEGATIVE_CONTROL_GENERATORS for f in facts):
        raise ExportRefused("is a negative control (copies of training patients made to test audits) and may never "
                            "be released", where=set_dir, fix="export a set sampled from a real generator")


def clear_for_release(ws: Workspace, set_name: str) -> Clearance:
    """The clearance of ``WS/synthetic/<set_name>``; ``ExportRefused`` naming the first condition that fails."""
    set_dir = ws.dir("synthetic") / set_name
    if "/" in set_name or set_name in ("", ".", "..") or not set_dir.is_dir():
        raise InputError(f"synthetic set {set_name!r} not found", where=ws.dir("synthetic"),
                         fix="give the name of a set under WS/synthetic/ (made by 'synthrelease sample')")
    provenance = _read_json(set_dir / "provenance.json", "the set's provenance") \
        if (set_dir / "provenance.json").is_file() else {}
    _refuse_negative_control(set_dir, provenance, None)
    audit_dir = ws.dir("audits") / set_name
    report_path = audit_dir / "report.json"
    audit_fix = f"run 'synthrelease audit {ws.root} --synthetic {set_name}' under a release policy"
    if not report_path.is_file():
        raise ExportRefused("has never been audited (no audit report)", where=set_dir, fix=audit_fix)
    report = _read_json(report_path, "the audit report")
    _refuse_negative_control(set_dir, provenance, report)
    actual = set_sha256(set_dir)
    if (report.get("synthetic_set") or {}).get("sha256") != actual:
        raise ExportRefused("changed since its latest audit (its sha256 differs from the one the report audited)",
                            where=set_dir, fix=f"audit it again: {audit_fix}")
    policy = report.get("policy")
    if not isinstance(policy, dict) or "verdict" not in report:
        raise ExportRefused("was audited without a policy: there is no verdict to release on", where=report_path,
                            fix=audit_fix)
    if policy.get("release") is not True:
        raise ExportRefused(f"was audited under policy {policy.get('name')!r}, which is not a release policy "
                            "(release = false: a research comparison only)", where=report_path,
                            fix=f"{audit_fix} such as 'default' or 'strict'")
    policy_file = audit_dir / "policy.toml"
    if not policy_file.is_file() or sha256_file(policy_file) != policy.get("sha256"):
        raise ExportRefused("the policy file in the audit folder is missing or is not the one the report was judged "
                            "by (sha256 differs)", where=policy_file, fix=f"audit the set again: {audit_fix}")
    if report.get("verdict") != "pass":
        failed = ", ".join((report.get("gate") or {}).get("failed", [])[:5]) or "see the report"
        raise ExportRefused(f"did not pass its audit under policy {policy.get('name')!r} (verdict "
                            f"{report.get('verdict')!r}; failed: {failed})", where=report_path,
                            fix="only a set that passes a release policy can be exported; see report.html")
    return Clearance(set_dir, audit_dir, report, provenance, actual)
