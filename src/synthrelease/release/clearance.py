"""Is this synthetic set cleared for release? The conditions export checks before it writes anything.

A set is cleared only by the latest audit of *exactly* these files (sha256 over the set, recorded in the audit's
``report.json``), judged under a *release* policy (``release = true``; the ``study`` policy is not one) whose file
in the audit folder is the one the report names (sha256), with the verdict ``pass``; and only if it is not a
negative control (``copycat``, ``negative_control``). The audit must also be the *gating* one (its seed derived from
the set's and the policy's sha256, on the gate holdout: not an explicit ``--seed``, not ``--on tuning``), and the
workspace's audit log must record that very report as the latest audit of its folder (a report copied in by hand, or
one from before the log, is refused). Each refusal says which condition failed and how to fix it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synthrelease.audit import set_sha256
from synthrelease.data.workspace import Workspace
from synthrelease.errors import InputError
from synthrelease.governance import AuditHistory, audit_log_path, logged_path, read_audit_log
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
    history: AuditHistory  # what the audit log records about these exact files

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


def _refuse_exploratory(report: dict[str, Any], report_path: Path, gate_fix: str) -> None:
    """Only the gating audit clears a set: derived seed, gate holdout."""
    if report.get("gating") is True and report.get("holdout", "holdout") == "holdout":
        return
    if report.get("holdout") == "tuning":
        raise ExportRefused("its latest audit compared it with the tuning split (exploratory, for choosing generator "
                            "settings), not with the gate holdout", where=report_path, fix=gate_fix)
    how = f"an explicit seed {report.get('seed')}" if report.get("gating") is False else "no gating record"
    raise ExportRefused(f"its latest audit was exploratory ({how}), not the gating audit whose seed is derived from "
                        "the set and the policy", where=report_path, fix=gate_fix)


def _logged_history(ws: Workspace, report_path: Path, set_hash: str, gate_fix: str) -> AuditHistory:
    """The log's history of these files; refuses unless the log's latest line for this audit folder is this report."""
    records = read_audit_log(ws)
    here = logged_path(ws, report_path)
    mine = [r for r in records if r.report == here]
    if not mine or mine[-1].report_sha256 != sha256_file(report_path) or not mine[-1].gating:
        raise ExportRefused(f"the audit log {audit_log_path(ws).name} does not record this report as the latest "
                            "gating audit of the set (a report copied in by hand or restored, or one written before "
                            "the log existed)", where=report_path, fix=gate_fix)
    return AuditHistory.of(records, set_hash)


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
    gate_fix = f"re-run 'synthrelease audit {ws.root} --synthetic {set_name}' without --seed (and without --on tuning)"
    _refuse_exploratory(report, report_path, gate_fix)
    history = _logged_history(ws, report_path, actual, gate_fix)
    return Clearance(set_dir, audit_dir, report, provenance, actual, history)
