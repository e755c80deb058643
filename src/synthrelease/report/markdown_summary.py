"""``summary.md``: the audit in a few lines for a merge-request comment or a CI job summary.

A reviewer needs to see in seconds whether the gate passed, which rules failed and why, and whether anything did
not run; details live in ``report.html``. Plain markers (**PASS** / **FAIL**) instead of emoji render the same in
GitLab, GitHub, a terminal and a mail. Strings from the report are escaped for tables (``|``) and for HTML (the
comment renderers accept inline HTML).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from synthrelease.report.common import (
    check_of,
    checks_by_family,
    format_value,
    plural,
    rule_outcome,
    rules_in_order,
    threshold_text,
    verdict_label,
)

__all__ = ["render_markdown"]

MAX_HEADLINES = 8  # metrics per family


def _text(value: Any) -> str:
    """Safe inside a table cell: no pipe, no newline, no HTML."""
    text = str(value if value is not None else "")
    for old, new in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("|", "\\|"), ("\r", " "), ("\n", " ")):
        text = text.replace(old, new)
    return text


def _code(value: Any) -> str:
    return "`" + str(value).replace("`", "'").replace("|", "\\|").replace("\n", " ") + "`"


def _rule_table(rules: list[dict[str, Any]]) -> list[str]:
    lines = ["| metric | rule | value | why | reason |", "|---|---|---|---|---|"]
    for r in rules:
        lines.append(f"| {_code(r.get('metric', ''))} | {_text(r.get('op', ''))} {_text(threshold_text(r))} "
                     f"| {_text(format_value(r.get('value')))} | {_text(r.get('why') or '')} "
                     f"| {_text(r.get('reason') or '')} |")
    return lines


def _headlines(report: Mapping[str, Any]) -> dict[str, list[str]]:
    """Flat metric names per family: those the policy's rules test (a CI bound as its metric, shown with the CI),
    or (without rules) every non-``info`` one."""
    flat = report.get("metrics") or {}
    checks = report.get("checks") or {}
    names: list[str] = []
    if report.get("rules"):
        for r in report["rules"]:
            name = str(r.get("metric"))
            base = name.removesuffix("_ci_low").removesuffix("_ci_high")  # a rule on a CI bound: show the metric
            names += [base if base in flat else name] if name in flat else []
    else:
        for name, check in checks.items():
            names += [f"{name}.{k}" for k, m in (check.get("metrics") or {}).items()
                      if isinstance(m, Mapping) and m.get("direction") != "info"]
    out: dict[str, list[str]] = {}
    for n in dict.fromkeys(names):
        out.setdefault(check_of(n, checks).split(".", 1)[0], []).append(n)
    return out


def _ci(flat: Mapping[str, Any], name: str) -> str:
    lo, hi = flat.get(f"{name}_ci_low"), flat.get(f"{name}_ci_high")
    return f"[{format_value(lo)}, {format_value(hi)}]" if lo is not None and hi is not None else ""


def render_markdown(report: Mapping[str, Any]) -> str:
    """The merge-request summary (GitLab / GitHub flavoured Markdown)."""
    rules = rules_in_order(report)
    failed = [r for r in rules if rule_outcome(r) == "failed"]
    warned = [r for r in rules if rule_outcome(r) == "warned"]
    not_judged = [r for r in rules if rule_outcome(r) == "not_judged"]
    n_passed = len(rules) - len(failed) - len(warned) - len(not_judged)
    policy, synthetic = report.get("policy") or {}, report.get("synthetic_set") or {}
    label = verdict_label(report)
    marker = f"**{label}**" if label in ("PASS", "FAIL") else "**NO VERDICT** (no policy applied)"
    lines = [f"## synthrelease audit: {marker}", ""]
    if policy:
        lines.append(f"- Policy: {_code(policy.get('name', ''))} (sha256 {_code(str(policy.get('sha256', ''))[:16])})")
    lines.append(f"- Synthetic set: {_code(synthetic.get('name', ''))} (sha256 "
                 f"{_code(str(synthetic.get('sha256', ''))[:16])}, {_text(synthetic.get('n_cases', '?'))} cases, "
                 f"generator {_code(synthetic.get('generator') or 'unknown')}"
                 + (", **negative control**" if synthetic.get("negative_control") else "") + ")")
    if rules:
        lines.append(f"- Rules: {len(failed)} failed, {plural(len(warned), 'warning')}, "
                     f"{n_passed} of {len(rules)} passed"
                     + (f", {len(not_judged)} not judged (their checks were not run: --fail-fast)"
                        if not_judged else ""))
    for title, group in (("Failed rules", failed), ("Warnings", warned)):
        if group:
            lines += ["", f"### {title}", "", *_rule_table(group)]
    if not_judged:
        listed = ", ".join(_code(r.get("metric", "")) for r in not_judged)
        lines += ["", "### Rules not judged", "",
                  f"Their checks were not run once the verdict was fail (`--fail-fast`): {listed}."]
    if rules:
        lines += ["", f"{plural(n_passed, 'rule')} passed."]
    flat = report.get("metrics") or {}
    headlines = _headlines(report)
    if headlines:
        lines += ["", "### Headline metrics"]
    for family, names in headlines.items():
        lines += ["", f"**{_text(family)}**", "", "| metric | value | 95% CI |", "|---|---|---|"]
        lines += [f"| {_code(n)} | {_text(format_value(flat.get(n)))} | {_ci(flat, n)} |"
                  for n in names[:MAX_HEADLINES]]
        if len(names) > MAX_HEADLINES:
            lines.append(f"\n{len(names) - MAX_HEADLINES} more in report.html.")
    not_run = [(name, c) for _, checks in checks_by_family(report) for name, c in checks if c.get("status") != "ok"]
    if not_run:
        lines += ["", "### Checks not run", ""]
        lines += [f"- {_code(name)} {_text(c.get('status'))}: {_text(c.get('reason') or 'no reason given')}"
                  for name, c in not_run]
    lines += ["", "Details, evidence and figures: `report.html` in the audit folder."]
    return "\n".join(lines) + "\n"
