"""Run checks over a synthetic set and write its audit folder (``report.json`` and evidence figures) atomically.

Two ways in: a workspace and one of its sets (or any nnU-Net raw folder), or three folders (train, holdout,
synthetic) from any source, for sets made by other generators. Every case is loaded and validated before the first
check runs, so bad input stops the audit with one clear error and nothing written.

Without an explicit seed an audit is *gating*: its seed is derived from the set's and the policy's sha256, so the
gate cannot be re-run with other seeds until it passes. An explicit seed, or the workspace's tuning split in place of
the holdout, makes it *exploratory* (``"gating": false`` in report.json): export refuses such audits. Every audit of
a workspace appends a line to ``WS/audits/log.jsonl`` (see ``synthrelease.governance``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from synthrelease import __version__
from synthrelease.checks.base import Check, CheckResult, Status
from synthrelease.checks.context import AuditContext, AuditSettings
from synthrelease.checks.registry import select_checks
from synthrelease.data.cohort import Cohort
from synthrelease.data.nnunet import read_nnunet
from synthrelease.data.workspace import Workspace
from synthrelease.errors import InputError
from synthrelease.governance import (
    HOLDOUT_SPLITS,
    AuditRecord,
    append_audit_log,
    audit_log_path,
    gating_seed,
    logged_path,
    now_utc,
)
from synthrelease.policy import GateResult, Policy, apply_gate, evaluate, load_policy
from synthrelease.report import write_reports
from synthrelease.runtime.fs import atomic_directory

__all__ = ["SCHEMA_VERSION", "AuditOutcome", "AuditPlan", "audit_directories", "audit_workspace", "decided_fail",
           "run_checks", "set_sha256", "workspace_identifiers"]

SCHEMA_VERSION = 1
# --fail-fast runs the families in this order: privacy first (a refused set's report still says whether it leaks),
# the segmentation arms (the longest check) last
FAIL_FAST_ORDER = ("privacy", "integrity", "fidelity", "utility")
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class AuditOutcome:
    path: Path  # the audit folder
    report: dict[str, Any]
    results: tuple[CheckResult, ...]
    gate: GateResult | None = None  # None when audited without a policy

    @property
    def passed(self) -> bool | None:
        return None if self.gate is None else self.gate.passed


@dataclass(frozen=True)
class AuditPlan:
    """What an audit is, settled before any check runs: the set's identity, the policy, the seed and whether the
    audit can clear the set for release (gating: derived seed, on the gate holdout)."""

    set_name: str
    set_sha256: str
    rules: Policy | None
    seed: int
    gating: bool
    holdout: str  # "holdout" (the gate's) or "tuning"

    @classmethod
    def make(cls, set_dir: Path, policy: str | Path | Policy | None, seed: int | None,
             holdout: str = "holdout") -> AuditPlan:
        """``seed`` None: the gating seed of the set and policy (gating unless ``holdout`` is "tuning")."""
        rules = _resolve_policy(policy)
        digest = set_sha256(set_dir)
        used = gating_seed(digest, rules.sha256 if rules else None) if seed is None else seed
        return cls(set_dir.name, digest, rules, used, seed is None and holdout == "holdout", holdout)


def set_sha256(root: Path) -> str:
    """sha256 over the sorted relative paths and contents of every file of a set (its identity in reports)."""
    h = hashlib.sha256()
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def run_checks(ctx: AuditContext, checks: Sequence[Check], progress: Progress | None = None,
               stop: Callable[[list[CheckResult]], str | None] | None = None) -> list[CheckResult]:
    """Validate and load every case (errors propagate: bad input), then run each check (never raises).

    ``stop`` is asked whenever a family of checks is done; once it returns a reason, the checks left are not run
    (each a skipped result carrying that reason). A family is never cut short, so a refused set's report still holds
    all of its privacy findings."""
    for which in ("train", "holdout", "synthetic"):
        ctx.volumes(which)
    results: list[CheckResult] = []
    why: str | None = None
    for i, check in enumerate(checks):
        if why is None and stop is not None and results and results[-1].family != check.family:
            why = stop(results)
        if why is not None:
            results.append(CheckResult(check.name, Status.SKIPPED, reason=f"not run (--fail-fast): {why}",
                                       not_run=True))
            continue
        if progress:
            progress(f"check {check.name}", i, len(checks))
        results.append(check.run(ctx))
    if progress:
        progress("checks", len(checks), len(checks))
    return results


def _results_part(results: Sequence[CheckResult]) -> dict[str, Any]:
    """What the gate reads of a report: flat metrics and each check's result."""
    metrics = {k: v for r in results for k, v in r.flat_metrics().items()}
    return {"metrics": dict(sorted(metrics.items())), "checks": {r.name: r.to_dict() for r in results}}


def build_report(ctx: AuditContext, results: Sequence[CheckResult], set_name: str, set_hash: str, *,
                 gating: bool = False, holdout: str = "holdout") -> dict[str, Any]:
    prov = ctx.provenance
    case = ctx.train[0]
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "synthrelease", "version": __version__},
        "synthetic_set": {"name": set_name, "sha256": set_hash, "n_cases": len(ctx.synthetic),
                          "generator": prov.get("generator"), "negative_control": bool(prov.get("negative_control")),
                          "mask_source": prov.get("mask_source")},
        "data": {"modality": ctx.train.modality.value, "channels": list(ctx.train.channel_names),
                 "labels": ctx.train.schema.labels_json(), "grid_zyx": list(case.shape),
                 "n_train": len(ctx.train), "n_holdout": len(ctx.holdout)},
        "seed": ctx.seed,
        "gating": gating,  # derived seed on the gate holdout: the only kind of audit export accepts
        "holdout": holdout,  # the real cohort compared with: "holdout" (the gate's) or "tuning"
        **_results_part(results),
        "summary": {s.value: [r.name for r in results if r.status is s] for s in Status},
    }


def _resolve_policy(policy: str | Path | Policy | None) -> Policy | None:
    if policy is None or isinstance(policy, Policy):
        return policy
    return load_policy(policy)


def decided_fail(rules: Policy, results: Sequence[CheckResult]) -> str | None:
    """The first ``fail`` rule that the results so far already fail (None if none does). Only rules whose metric
    (and threshold metric) come from checks that have run are judged: a check still to run is not a missing one."""
    ran = {r.name for r in results}
    for rule, outcome in zip(rules.rules, evaluate(rules, _results_part(results)).rules, strict=True):
        if rule.severity == "fail" and rule.check in ran and (rule.threshold_check or rule.check) in ran \
                and not outcome.passed:
            return f"the verdict is already fail ({rule.describe()}: {outcome.reason})"
    return None


def _audit(ctx_factory: Callable[[Path], AuditContext], target: Path, plan: AuditPlan, only: Sequence[str],
           progress: Progress | None, fail_fast: bool = False) -> AuditOutcome:
    checks = select_checks(only)  # unknown names fail before anything is written
    rules = plan.rules
    stop = None
    if fail_fast and rules is not None:
        checks.sort(key=lambda c: FAIL_FAST_ORDER.index(c.family))
        stop = partial(decided_fail, rules)
    gate = None
    with atomic_directory(target, replace=True) as tmp:
        ctx = ctx_factory(tmp)
        results = run_checks(ctx, checks, progress, stop)
        report = build_report(ctx, results, plan.set_name, plan.set_sha256, gating=plan.gating, holdout=plan.holdout)
        if rules is not None:
            gate = evaluate(rules, report)
            report = apply_gate(report, gate)
            (tmp / "policy.toml").write_text(rules.text)
        (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        write_reports(tmp, report)
    return AuditOutcome(target, report, tuple(results), gate)


def _log_audit(ws: Workspace, outcome: AuditOutcome, plan: AuditPlan) -> None:
    """Append the audit's line to the workspace's audit log (after its report is in place)."""
    path = outcome.path / "report.json"
    rules = plan.rules
    append_audit_log(ws, AuditRecord(
        time=now_utc(), set=plan.set_name, set_sha256=plan.set_sha256, policy=rules.name if rules else None,
        policy_sha256=rules.sha256 if rules else None, seed=plan.seed, gating=plan.gating, holdout=plan.holdout,
        verdict=outcome.report.get("verdict"), report=logged_path(ws, path),
        report_sha256=hashlib.sha256(path.read_bytes()).hexdigest()))


def _read_provenance(set_dir: Path) -> dict[str, Any]:
    path = set_dir / "provenance.json"
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text()))
    except (ValueError, TypeError):
        raise InputError("is not valid JSON", where=path, fix="repair it or remove it") from None


def workspace_identifiers(ws: Workspace) -> tuple[str, ...]:
    """What may identify a real patient of the workspace: case pseudonyms and, when kept, the source ids and names
    of ``id_map.json`` (the metadata check and export search for them)."""
    ids = [*ws.splits.train, *ws.splits.holdout, *ws.splits.tuning]
    id_map = ws.root / "id_map.json"
    if id_map.is_file():
        for entry in json.loads(id_map.read_text()).values():
            ids.extend(str(v) for v in dict(entry).values())
    return tuple(ids)


def _set_folder(ws: Workspace, synthetic: str | Path) -> Path:
    """A set of the workspace (a name under ``synthetic/``) or any folder."""
    named = ws.dir("synthetic") / str(synthetic)
    set_dir = named if isinstance(synthetic, str) and "/" not in synthetic and named.is_dir() else Path(synthetic)
    if not set_dir.is_dir():
        raise InputError(f"synthetic set {str(synthetic)!r} is neither a set of this workspace nor a folder",
                         where=ws.dir("synthetic"), fix="run 'synthrelease sample' first or give a folder path")
    return set_dir


def _reference(ws: Workspace, on: str) -> Cohort:
    """The real cohort the set is compared with: the gate holdout, or the tuning split."""
    if on not in HOLDOUT_SPLITS:
        raise InputError(f"cannot audit on {on!r}", fix=f"use one of {', '.join(HOLDOUT_SPLITS)}")
    return ws.holdout() if on == "holdout" else ws.tuning()


def audit_workspace(ws: Workspace, synthetic: str | Path, *, only: Sequence[str] = (), seed: int | None = None,
                    settings: AuditSettings | None = None, extra_identifiers: Sequence[str] = (),
                    progress: Progress | None = None, policy: str | Path | Policy | None = "default",
                    out: Path | None = None, fail_fast: bool = False, on: str = "holdout") -> AuditOutcome:
    """Audit a set of the workspace (a name under ``synthetic/``) or an nnU-Net raw folder into ``audits/<set>``
    (or ``out``), judged by ``policy`` (a shipped name, a TOML path, a ``Policy``; None: metrics only, no verdict),
    then append a line to the workspace's audit log (``audits/log.jsonl``).

    ``seed`` None (the gating audit): the seed is derived from the set's and the policy's sha256. An explicit seed
    makes the audit exploratory (``"gating": false``; export refuses it). ``on="tuning"`` compares the set with the
    workspace's tuning split instead of the gate holdout, for choosing generator settings: always exploratory.

    ``fail_fast`` (with a policy): checks run family by family (privacy, integrity, fidelity, utility) and stop after
    the first family whose results fail a ``fail`` rule; the rest are reported as skipped. The verdict is the one
    the full audit would give (fail), sooner: the segmentation arms of a set that leaks are not trained."""
    set_dir = _set_folder(ws, synthetic)
    target = Path(out) if out is not None else ws.dir("audits") / set_dir.name
    if target.absolute() == audit_log_path(ws).absolute():
        raise InputError(f"{target.name!r} is the name of the audit log, not of an audit folder", where=set_dir,
                         fix="rename the set (or pass another audit folder)")
    cohort = read_nnunet(set_dir, name="synthetic")
    train, holdout = ws.train(), _reference(ws, on)
    identifiers = (*workspace_identifiers(ws), *extra_identifiers)
    plan = AuditPlan.make(set_dir, policy, seed, on)

    def factory(tmp: Path) -> AuditContext:
        return AuditContext(train, holdout, cohort, out_dir=tmp, cache_dir=ws.dir("cache"), seed=plan.seed,
                            synthetic_dir=set_dir, identifiers=identifiers, provenance=_read_provenance(set_dir),
                            settings=settings, progress=progress, intensity_reference=ws.intensity_reference)

    outcome = _audit(factory, target, plan, only, progress, fail_fast)
    _log_audit(ws, outcome, plan)
    return outcome


def audit_directories(train_dir: Path, holdout_dir: Path, synthetic_dir: Path, out: Path, *,
                      only: Sequence[str] = (), seed: int | None = None, settings: AuditSettings | None = None,
                      extra_identifiers: Sequence[str] = (), progress: Progress | None = None,
                      policy: str | Path | Policy | None = "default", fail_fast: bool = False) -> AuditOutcome:
    """Workspace-free audit of any synthetic set: three nnU-Net raw folders; results (and cache) under ``out``.

    ``seed`` None derives the gating seed from the set's and the policy's sha256, as in a workspace; an explicit
    seed makes the report exploratory (``"gating": false``). No audit log is written: there is no workspace to hold
    it, and export (which reads the log) works on workspaces only."""
    train = read_nnunet(train_dir, name="train")
    holdout = read_nnunet(holdout_dir, name="holdout")
    cohort = read_nnunet(synthetic_dir, name="synthetic")
    out = Path(out)
    if out.exists() and not (out / "report.json").is_file():
        raise InputError("exists and is not an audit folder", where=out, fix="choose a new --out folder")
    overlap = set(train.case_ids) & set(holdout.case_ids)
    if overlap:
        raise InputError(f"train and holdout share case ids {sorted(overlap)[:3]}", where=holdout_dir,
                         fix="hold out patients the generator never saw")
    plan = AuditPlan.make(Path(synthetic_dir), policy, seed)

    def factory(tmp: Path) -> AuditContext:
        return AuditContext(train, holdout, cohort, out_dir=tmp, cache_dir=tmp / "cache", seed=plan.seed,
                            synthetic_dir=Path(synthetic_dir), identifiers=tuple(extra_identifiers),
                            provenance=_read_provenance(Path(synthetic_dir)), settings=settings, progress=progress)

    return _audit(factory, out, plan, only, progress, fail_fast)
