"""What every rendering of ``report.json`` agrees on: how a rule reads, in which order rules are listed, which
check a flat metric belongs to, and how numbers print.

HTML, JUnit and Markdown are views of one canonical JSON; keeping these decisions in one place means the three
never disagree about whether a rule failed or merely warned.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["FAMILY_ORDER", "check_of", "checks_by_family", "format_value", "plural", "rule_label", "rule_outcome",
           "rules_in_order", "threshold_text", "verdict_label"]

FAMILY_ORDER = ("integrity", "privacy", "fidelity", "utility")
_OUTCOME_RANK = {"failed": 0, "warned": 1, "passed": 2, "not_judged": 3}


def verdict_label(report: Mapping[str, Any]) -> str:
    """``PASS``, ``FAIL`` or ``no verdict`` (a report written before any policy was applied)."""
    verdict = report.get("verdict")
    if verdict is None:
        return "no verdict"
    return str(verdict).upper()


def format_value(value: Any) -> str:
    """Numbers to four significant digits (enough to compare with a threshold), ``missing`` for None."""
    if value is None:
        return "missing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isfinite(value) and value == int(value) and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.4g}"
    return str(value)


def plural(n: int, word: str) -> str:
    """``1 warning``, ``2 warnings``."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def rule_outcome(rule: Mapping[str, Any]) -> str:
    """``passed``, ``failed`` (a failed fail-rule: blocks the release), ``warned`` (a failed warn-rule) or
    ``not_judged`` (its check was not run by ``--fail-fast``: the verdict was already fail).

    A rule without a severity counts as ``fail``: the gate's default, and the safe reading of an odd report.
    """
    if rule.get("passed") is True:
        return "passed"
    if rule.get("judged") is False:
        return "not_judged"
    return "warned" if rule.get("severity") == "warn" else "failed"


def rules_in_order(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Failed fail-rules first, then warnings, passes and rules not judged; policy order within each group."""
    rules = [dict(r) for r in report.get("rules") or []]
    return sorted(rules, key=lambda r: _OUTCOME_RANK[rule_outcome(r)])


def threshold_text(rule: Mapping[str, Any]) -> str:
    """``0.65``, or ``privacy.reidentification.baseline_rate + 0.05 (= 0.1)`` for a rule relative to a metric."""
    ref = rule.get("threshold_metric")
    if not ref:
        return format_value(rule.get("threshold"))
    margin = float(rule.get("margin") or 0.0)
    text = str(ref)
    if margin:
        text += f" {'+' if margin > 0 else '-'} {format_value(abs(margin))}"
    resolved = rule.get("threshold_value")
    return f"{text} (= {format_value(resolved)})" if resolved is not None else f"{text} (unresolved)"


def rule_label(rule: Mapping[str, Any]) -> str:
    """``privacy.mia.auc_ci_high <= 0.65``: the rule as one line (a JUnit test name, a table cell)."""
    ref = rule.get("threshold_metric")
    rhs = format_value(rule.get("threshold")) if not ref else str(ref)
    margin = float(rule.get("margin") or 0.0)
    if ref and margin:
        rhs += f" {'+' if margin > 0 else '-'} {format_value(abs(margin))}"
    return f"{rule.get('metric', '?')} {rule.get('op', '?')} {rhs}"


def check_of(metric: str, checks: Mapping[str, Any] | None = None) -> str:
    """The ``family.check`` a flat ``family.check.metric`` name belongs to (the longest known check prefix wins,
    so a future check name with more dots still resolves)."""
    if checks:
        for name in sorted(checks, key=len, reverse=True):
            if metric.startswith(name + "."):
                return name
    parts = metric.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 else metric


def checks_by_family(report: Mapping[str, Any]) -> Iterator[tuple[str, list[tuple[str, dict[str, Any]]]]]:
    """``(family, [(check name, check dict), ...])`` in the fixed family order, unknown families last."""
    groups: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for name, check in (report.get("checks") or {}).items():
        groups.setdefault(name.split(".", 1)[0], []).append((name, dict(check)))
    order = [f for f in FAMILY_ORDER if f in groups] + sorted(f for f in groups if f not in FAMILY_ORDER)
    for family in order:
        yield family, sorted(groups[family])
