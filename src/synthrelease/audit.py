"""Run checks over a synthetic set and write its audit folder (``report.json`` and evidence figures) atomically.

Two ways in: a workspace and one of its sets (or any nnU-Net raw folder), or three folders (train, holdout,
synthetic) from any source, for sets made by other generators. Every case is loaded and validated before the first
check runs, so bad input stops the audit with one clear error and nothing written.
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
from synthrelease.data.nnunet import read_nnunet
from synthrelease.data.workspace import Workspace
from synthrelease.errors import InputError
from synthrelease.policy import GateResult, Policy, apply_gate, evaluate, load_policy
from synthrelease.report import write_reports
from synthrelease.runtime.fs import atomic_directory

__all__ = ["SCHEMA_VERSION", "AuditOutcome", "audit_directories", "audit_workspace", "decided_fail", "run_checks",
           "set_sha256", "workspace_identifiers"]

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


def build_report(ctx: AuditContext, results: Sequence[CheckResult], set_name: str, set_hash: str) -> dict[str, Any]:
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


def _audit(ctx_factory: Callable[[Path], AuditContext], target: Path, set_name: str, set_dir: Path | None,
           only: Sequence[str], progress: Progress | None, policy: str | Path | Policy | None,
           fail_fast: bool = False) -> AuditOutcome:
    checks = select_checks(only)  # unknown names fail before anything is written
    rules = _resolve_policy(policy)  # so does a bad policy
    stop = None
    if fail_fast and rules is not None:
        checks.sort(key=lambda c: FAIL_FAST_ORDER.index(c.family))
        stop = partial(decided_fail, rules)
    gate = None
    with atomic_directory(target, replace=True) as tmp:
        ctx = ctx_factory(tmp)
        results = run_checks(ctx, checks, progress, stop)
        report = build_report(ctx, results, set_name, set_sha256(set_dir) if set_dir else "")
        if rules is not None:
            gate = evaluate(rules, report)
            report = apply_gate(report, gate)
            (tmp / "policy.toml").write_text(rules.text)
        (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        write_reports(tmp, report)
    return AuditOutcome(target, report, tuple(results), gate)


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
    ids = [*ws.splits.train, *ws.splits.holdout]
    id_map = ws.root / "id_map.json"
    if id_map.is_file():
        for entry in json.loads(id_map.read_text()).values():
            ids.extend(str(v) for v in dict(entry).values())
    return tuple(ids)


def audit_workspace(ws: Workspace, synthetic: str | Path, *, only: Sequence[str] = (), seed: int = 0,
                    settings: AuditSettings | None = None, extra_identifiers: Sequence[str] = (),
                    progress: Progress | None = None, policy: str | Path | Policy | None = "default",
                    out: Path | None = None, fail_fast: bool = False) -> AuditOutcome:
    """Audit a set of the workspace (a name under ``synthetic/``) or an nnU-Net raw folder into ``audits/<set>``
    (or ``out``), judged by ``policy`` (a shipped name, a TOML path, a ``Policy``; None: metrics only, no verdict).

    ``fail_fast`` (with a policy): checks run family by family (privacy, integrity, fidelity, utility) and stop after
    the first family whose results fail a ``fail`` rule; the rest are reported as skipped. The verdict is the one
    the full audit would give (fail), sooner: the segmentation arms of a set that leaks are not trained."""
    named = ws.dir("synthetic") / str(synthetic)
    set_dir = named if isinstance(synthetic, str) and "/" not in synthetic and named.is_dir() else Path(synthetic)
    if not set_dir.is_dir():
        raise InputError(f"synthetic set {str(synthetic)!r} is neither a set of this workspace nor a folder",
                         where=ws.dir("synthetic"), fix="run 'synthrelease sample' first or give a folder path")
    cohort = read_nnunet(set_dir, name="synthetic")
    train, holdout = ws.train(), ws.holdout()
    identifiers = (*workspace_identifiers(ws), *extra_identifiers)

    def factory(tmp: Path) -> AuditContext:
        return AuditContext(train, holdout, cohort, out_dir=tmp, cache_dir=ws.dir("cache"), seed=seed,
                            synthetic_dir=set_dir, identifiers=identifiers, provenance=_read_provenance(set_dir),
                            settings=settings, progress=progress, intensity_reference=ws.intensity_reference)

    return _audit(factory, out or ws.dir("audits") / set_dir.name, set_dir.name, set_dir, only, progress, policy,
                  fail_fast)


def audit_directories(train_dir: Path, holdout_dir: Path, synthetic_dir: Path, out: Path, *,
                      only: Sequence[str] = (), seed: int = 0, settings: AuditSettings | None = None,
                      extra_identifiers: Sequence[str] = (), progress: Progress | None = None,
                      policy: str | Path | Policy | None = "default", fail_fast: bool = False) -> AuditOutcome:
    """Workspace-free audit of any synthetic set: three nnU-Net raw folders; results (and cache) under ``out``."""
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
    def factory(tmp: Path) -> AuditContext:
        return AuditContext(train, holdout, cohort, out_dir=tmp, cache_dir=tmp / "cache", seed=seed,
                            synthetic_dir=Path(synthetic_dir), identifiers=tuple(extra_identifiers),
                            provenance=_read_provenance(Path(synthetic_dir)), settings=settings, progress=progress)

    return _audit(factory, out, Path(synthetic_dir).name, Path(synthetic_dir), only, progress, policy, fail_fast)
