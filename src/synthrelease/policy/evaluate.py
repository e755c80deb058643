"""The gate: every rule of a policy evaluated against a report's metrics, and the verdict.

- A rule whose metric is missing fails, with the reason (the check did not run, was skipped, failed, or has no
  such metric): a check that did not run is not a pass. The only exception is a check that reported the risk it
  measures absent from the data (``not_applicable``, e.g. no face in view), and only where the rule says
  ``not_applicable = "pass"``.
- A rule on a check that ``--fail-fast`` left out (the verdict was already fail) is *not judged*: it does not pass,
  so the verdict stays fail, but it is reported apart from the failures, which are the findings.
- ``warn`` rules are evaluated and reported but never fail the gate.
- ``verdict`` is ``pass`` only if every ``fail`` rule passed.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from synthrelease.policy.model import Policy, Rule

__all__ = ["GateResult", "RuleResult", "apply_gate", "evaluate"]

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt, "==": operator.eq, "!=": operator.ne}


@dataclass(frozen=True)
class RuleResult:
    metric: str
    op: str
    threshold: float | None
    threshold_metric: str | None
    margin: float
    threshold_value: float | None
    value: float | None
    passed: bool
    severity: str
    why: str
    reason: str | None
    judged: bool = True  # False: its check was not run (--fail-fast); never passed, never counted as a failure

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GateResult:
    policy: Policy
    rules: tuple[RuleResult, ...]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rules if r.severity == "fail")

    @property
    def verdict(self) -> str:
        return "pass" if self.passed else "fail"

    @property
    def failed(self) -> list[RuleResult]:
        return [r for r in self.rules if not r.passed and r.judged and r.severity == "fail"]

    @property
    def warned(self) -> list[RuleResult]:
        return [r for r in self.rules if not r.passed and r.judged and r.severity == "warn"]

    @property
    def not_judged(self) -> list[RuleResult]:
        return [r for r in self.rules if not r.judged]

    def summary(self) -> dict[str, Any]:
        return {"n_rules": len(self.rules), "n_passed": sum(r.passed for r in self.rules),
                "n_failed": len(self.failed), "n_warned": len(self.warned), "n_not_judged": len(self.not_judged),
                "failed": [r.metric for r in self.failed], "warned": [r.metric for r in self.warned],
                "not_judged": [r.metric for r in self.not_judged]}


def _not_run(check: str, checks: Mapping[str, Any]) -> bool:
    """The check was left out by ``--fail-fast`` (a skipped result marked ``not_run``)."""
    result = checks.get(check) or {}
    return result.get("status") == "skipped" and bool(result.get("not_run"))


def _missing_reason(metric: str, check: str, checks: Mapping[str, Any]) -> tuple[str, bool]:
    """Why ``metric`` has no value, and whether its check reported the risk absent (not applicable)."""
    result = checks.get(check)
    if result is None:
        return f"metric missing: check {check} did not run in this audit", False
    status = result.get("status")
    if status == "skipped":
        return f"metric missing: check {check} was skipped: {result.get('reason', '')}", bool(
            result.get("not_applicable"))
    if status == "error":
        return f"metric missing: check {check} failed: {result.get('reason', '')}", False
    return f"metric missing: check {check} ran but reported no {metric.split('.')[-1]!r}", False


def _evaluate_rule(rule: Rule, metrics: Mapping[str, float], checks: Mapping[str, Any]) -> RuleResult:
    def result(passed: bool, value: float | None, threshold_value: float | None, reason: str | None,
               judged: bool = True) -> RuleResult:
        return RuleResult(rule.metric, rule.op, rule.threshold, rule.threshold_metric, rule.margin, threshold_value,
                          value, passed, rule.severity, rule.why, reason, judged)

    value = metrics.get(rule.metric)
    if value is None:
        reason, not_applicable = _missing_reason(rule.metric, rule.check, checks)
        if not_applicable and rule.not_applicable == "pass":
            return result(True, None, None, f"not applicable: {reason.split(': ', 1)[1]}")
        if _not_run(rule.check, checks):
            return result(False, None, None, f"not judged: check {rule.check} was not run (--fail-fast)", False)
        return result(False, None, None, reason)
    if rule.threshold_metric is None:
        threshold = rule.threshold
    else:
        base = metrics.get(rule.threshold_metric)
        if base is None:
            other = str(rule.threshold_check)
            if _not_run(other, checks):
                return result(False, float(value), None, f"not judged: check {other} was not run (--fail-fast)",
                              False)
            reason = _missing_reason(rule.threshold_metric, other, checks)[0]
            return result(False, float(value), None, f"threshold {reason}")
        threshold = float(base) + rule.margin
    assert threshold is not None
    passed = _COMPARE[rule.op](float(value), threshold)
    return result(passed, float(value), threshold, None if passed else
                  f"{float(value):.4g} is not {rule.op} {threshold:.4g}")


def evaluate(policy: Policy, report: Mapping[str, Any]) -> GateResult:
    """Every rule of ``policy`` against ``report["metrics"]`` (``report["checks"]`` explains missing ones)."""
    metrics, checks = report.get("metrics", {}), report.get("checks", {})
    return GateResult(policy, tuple(_evaluate_rule(r, metrics, checks) for r in policy.rules))


def apply_gate(report: dict[str, Any], gate: GateResult) -> dict[str, Any]:
    """``report`` with ``policy``, ``verdict``, ``rules`` and ``gate`` (the contract of DESIGN.md) filled in."""
    out = dict(report)
    out["policy"] = gate.policy.to_dict()
    out["verdict"] = gate.verdict
    out["rules"] = [r.to_dict() for r in gate.rules]
    out["gate"] = gate.summary()
    return out
