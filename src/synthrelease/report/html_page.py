"""``report.html``: one self-contained page (inline CSS, figures inlined, no script, no external URL).

The steward reads it to decide, an ethics board or a recipient reads it to trust the decision, so it opens with
the verdict and the rules that decided it, then shows every check with its metrics, evidence and figures. One file
with no outside reference still renders offline, years later, inside a hospital network. Every string from the
report is escaped: reasons carry exception texts and evidence carries file names, neither of which is trusted.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from pathlib import Path
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
from synthrelease.report.evidence import render_evidence, render_value
from synthrelease.report.public import WITHHELD_NOTE

__all__ = ["render_html"]

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1200px;padding:0 16px 40px;
color:#1d232a}
h1{font-size:22px;margin:18px 0 6px}h2{font-size:18px;border-bottom:1px solid #ccd;padding-bottom:3px;margin-top:28px}
h3{font-size:16px;margin:20px 0 6px;text-transform:capitalize}h4{font-size:15px;margin:0 0 6px}
.banner{border-radius:6px;padding:14px 18px;color:#fff;margin:16px 0}.banner .verdict{font-size:28px;font-weight:700}
.pass{background:#1e7b34}.fail{background:#b3261e}.none{background:#6b7280}
table{border-collapse:collapse;margin:6px 0 10px}th,td{border:1px solid #d4d7dd;padding:3px 7px;text-align:left;
vertical-align:top}thead th{background:#eef0f3}table.kv th{background:#f6f7f9;font-weight:600}
tr.failed td{background:#fde7e6}tr.failed td.result{color:#b3261e;font-weight:700}
tr.warned td{background:#fff4d6}tr.warned td.result{color:#8a5a00;font-weight:700}
.check{border:1px solid #d4d7dd;border-radius:6px;padding:10px 14px;margin:10px 0}
.status{font-size:12px;border-radius:10px;padding:1px 8px;margin-left:6px;color:#fff}
.st-ok{background:#1e7b34}.st-skipped{background:#8a5a00}.st-error{background:#b3261e}
.st-warned{background:#c98a00}.st-failed{background:#b3261e}
.muted{color:#6b7280}.more{color:#6b7280;font-size:12px;margin:0 0 8px}.reason{font-weight:600}
.withheld{background:#eef2ff;border-left:4px solid #4f46e5;padding:6px 10px}.tag{background:#fde7e6;font-size:11px;
padding:0 4px}.missing{color:#b3261e}.figures{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0}
figure img{max-width:560px;border:1px solid #d4d7dd}figcaption{font-size:12px;color:#4b5563}
code{font-size:12px}td code{word-break:break-all}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _anchor(check: str) -> str:
    return _esc("check-" + check)


def _kv(rows: list[tuple[str, str]]) -> str:
    return '<table class="kv">' + "".join(f"<tr><th>{_esc(k)}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


def _counts(report: Mapping[str, Any]) -> str:
    outcomes = [rule_outcome(r) for r in report.get("rules") or []]
    statuses = [str(c.get("status")) for c in (report.get("checks") or {}).values()]
    parts = []
    if outcomes:
        parts.append(f"{plural(len(outcomes), 'rule')}: {outcomes.count('failed')} failed, "
                     f"{plural(outcomes.count('warned'), 'warning')}, {outcomes.count('passed')} passed"
                     + (f", {outcomes.count('not_judged')} not judged (--fail-fast)"
                        if "not_judged" in outcomes else ""))
    else:
        parts.append("no policy rules were evaluated")
    per_status = ", ".join(f"{statuses.count(s)} {s}" for s in ("ok", "skipped", "error"))
    parts.append(f"{plural(len(statuses), 'check')}: {per_status}")
    return " · ".join(_esc(p) for p in parts)


def _banner(report: Mapping[str, Any]) -> str:
    label = verdict_label(report)
    css = {"PASS": "pass", "FAIL": "fail"}.get(label, "none")
    name = (report.get("synthetic_set") or {}).get("name", "")
    return (f'<div class="banner {css}"><div class="verdict">{_esc(label)}</div>'
            f"<div>synthetic set {_esc(name)} · {_counts(report)}</div></div>")


def _policy(report: Mapping[str, Any]) -> str:
    policy = report.get("policy")
    if not policy:
        return "<h2>Policy</h2><p>No policy was applied: this report has metrics but no verdict.</p>"
    rows = [("name", _esc(policy.get("name", ""))), ("sha256", f"<code>{_esc(policy.get('sha256', ''))}</code>")]
    if "release" in policy:
        rows.append(("release policy", "yes" if policy.get("release") else "no (not valid for a release)"))
    rows += [(str(k), render_value(v)) for k, v in policy.items() if k not in ("name", "sha256", "release")]
    return "<h2>Policy</h2>" + _kv(rows)


def _synthetic_set(report: Mapping[str, Any]) -> str:
    info = dict(report.get("synthetic_set") or {})
    order = ["name", "sha256", "n_cases", "generator", "negative_control", "mask_source"]
    keys = [k for k in order if k in info] + [k for k in info if k not in order]
    rows = [(k, f"<code>{_esc(info[k])}</code>" if k == "sha256" else render_value(info[k])) for k in keys]
    note = ""
    if info.get("negative_control"):
        note = ('<p class="withheld">This set is a negative control (copies of training patients): '
                "the privacy checks are expected to fail it.</p>")
    return "<h2>Synthetic set</h2>" + _kv(rows) + note


def _data(report: Mapping[str, Any]) -> str:
    rows = [(str(k), render_value(v)) for k, v in (report.get("data") or {}).items()]
    tool = report.get("tool") or {}
    rows += [("seed", render_value(report.get("seed"))),
             ("tool", _esc(f"{tool.get('name', '?')} {tool.get('version', '?')}")),
             ("report schema", _esc(report.get("schema_version", "?")))]
    return "<h2>Data</h2>" + _kv(rows)


def _rules(report: Mapping[str, Any]) -> str:
    rules = rules_in_order(report)
    if not rules:
        return "<h2>Rules</h2><p class=\"muted\">No rules: no policy was applied.</p>"
    checks = report.get("checks") or {}
    head = "".join(f"<th>{h}</th>" for h in
                   ("result", "severity", "metric", "op", "threshold", "value", "why", "reason"))
    rows = []
    for r in rules:
        outcome = rule_outcome(r)
        metric = str(r.get("metric", ""))
        check = check_of(metric, checks)
        cell = f'<a href="#{_anchor(check)}">{_esc(metric)}</a>' if check in checks else _esc(metric)
        result = {"failed": "FAILED", "warned": "WARNING", "passed": "passed", "not_judged": "not judged"}[outcome]
        # a rule passed without a value: its check reported the risk absent (policy said not_applicable = "pass")
        value = "n/a" if r.get("value") is None and outcome == "passed" else format_value(r.get("value"))
        rows.append(f'<tr class="{outcome}"><td class="result">{result}</td><td>{_esc(r.get("severity", "fail"))}'
                    f"</td><td>{cell}</td><td>{_esc(r.get('op', ''))}</td><td>{_esc(threshold_text(r))}</td>"
                    f"<td>{_esc(value)}</td><td>{_esc(r.get('why') or '')}</td>"
                    f"<td>{_esc(r.get('reason') or '')}</td></tr>")
    return f"<h2>Rules</h2><table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _rules_on(check: str, metric: str, rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    names = {f"{check}.{metric}", f"{check}.{metric}_ci_low", f"{check}.{metric}_ci_high"}
    return [r for r in rules if r.get("metric") in names]


def _metrics(check: str, metrics: Mapping[str, Any], rules: list[dict[str, Any]]) -> str:
    if not metrics:
        return ""
    rows = []
    for key, m in metrics.items():
        m = m if isinstance(m, Mapping) else {"value": m}
        ci = m.get("ci95")
        ci_text = f"[{format_value(ci[0])}, {format_value(ci[1])}]" if isinstance(ci, list | tuple) and len(ci) == 2 \
            else ""
        on = _rules_on(check, key, rules)
        outcomes = [rule_outcome(r) for r in on]
        css = ' class="failed"' if "failed" in outcomes else ' class="warned"' if "warned" in outcomes else ""
        gate = "; ".join(f"{r.get('metric', '').rsplit('.', 1)[-1]} {r.get('op', '')} {threshold_text(r)}: "
                         f"{rule_outcome(r)}" for r in on)
        rows.append(f'<tr{css}><td>{_esc(key)}</td><td>{_esc(format_value(m.get("value")))}</td>'
                    f"<td>{_esc(m.get('direction', ''))}</td><td>{_esc(ci_text)}</td><td>{_esc(gate)}</td>"
                    f"<td>{_esc(m.get('description', ''))}</td></tr>")
    head = "".join(f"<th>{h}</th>" for h in ("metric", "value", "better", "95% CI", "rule", "description"))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _check(name: str, check: Mapping[str, Any], rules: list[dict[str, Any]], audit_dir: Path, public: bool) -> str:
    status = str(check.get("status", "error"))
    mine = [r for r in rules if str(r.get("metric", "")).startswith(name + ".")]
    outcomes = [rule_outcome(r) for r in mine]
    badges = f'<span class="status st-{_esc(status)}">{_esc(status)}</span>'
    for outcome, word in (("failed", "failed"), ("warned", "warning")):
        n = outcomes.count(outcome)
        if n:
            badges += f'<span class="status st-{outcome}">{n} rule{"s" if n > 1 else ""} {word}</span>'
    body = f"<h4>{_esc(name)}{badges}</h4>"
    if check.get("reason"):
        body += f'<p class="reason">{_esc(status)}: {_esc(check["reason"])}</p>'
    body += f'<p class="muted">{_esc(format_value(check.get("seconds", 0.0)))} s</p>'
    body += _metrics(name, check.get("metrics") or {}, rules)
    if status == "ok" or check.get("evidence"):
        body += render_evidence(check.get("evidence") or {}, audit_dir, public=public)
    return f'<section class="check" id="{_anchor(name)}">{body}</section>'


def _checks(report: Mapping[str, Any], audit_dir: Path, public: bool) -> str:
    rules = list(report.get("rules") or [])
    parts = ["<h2>Checks</h2>"]
    for family, checks in checks_by_family(report):
        parts.append(f"<h3>{_esc(family)}</h3>")
        parts.extend(_check(name, check, rules, audit_dir, public) for name, check in checks)
    if len(parts) == 1:
        parts.append('<p class="muted">No check ran.</p>')
    return "".join(parts)


def render_html(report: Mapping[str, Any], audit_dir: Path, *, public: bool = False) -> str:
    """The whole page. ``public=True``: the release version: no evidence, no figure that shows real data."""
    name = (report.get("synthetic_set") or {}).get("name", "")
    title = f"synthrelease audit: {name}: {verdict_label(report)}"
    notice = ""
    if public:
        notice = (f'<p class="withheld">Public version. The evidence of every check (flagged cases, per-case '
                  f"tables, figures of real patients) is withheld: {_esc(WITHHELD_NOTE)}. Metrics, rules and the "
                  "verdict are complete.</p>")
    tool = report.get("tool") or {}
    footer = (f'<p class="muted">Rendered from report.json by {_esc(tool.get("name", "synthrelease"))} '
              f"{_esc(tool.get('version', ''))}.</p>")
    return ("<!DOCTYPE html>\n"
            f'<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">'
            f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{_esc(title)}</h1>{_banner(report)}{notice}{_policy(report)}{_synthetic_set(report)}"
            f"{_data(report)}{_rules(report)}{_checks(report, Path(audit_dir), public)}{footer}</body></html>\n")
