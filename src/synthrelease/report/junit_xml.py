"""``junit.xml``: the gate as a test report, so CI (GitLab, Jenkins) shows each rule as a test.

One ``<testcase>`` per policy rule: classname ``family.check`` (CI groups by it, dots as packages), name the rule
itself. A failed fail-rule is a ``<failure>``. A failed warn-rule is ``<skipped>``: both GitLab's test report and
Jenkins' JUnit plugin list skipped tests visibly, with their message, and neither fails the pipeline or marks the
build unstable for them, which is what a warning means. ``<system-out>`` would be the alternative, but on a
passing test neither system shows it unless someone opens that test, so the warning would go unseen. A report
without rules (an audit run without a policy) gets one testcase per check instead: error status is ``<error>``,
skipped is ``<skipped>``. The exit code stays the authority; this file is for people reading the pipeline.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

from synthrelease.report.common import check_of, format_value, rule_label, rule_outcome, threshold_text

__all__ = ["render_junit"]


def _suite_name(report: Mapping[str, Any]) -> str:
    policy = report.get("policy") or {}
    if policy.get("name"):
        return f"synthrelease gate: {policy['name']}"
    return f"synthrelease audit: {(report.get('synthetic_set') or {}).get('name', '')}"


def _explain(rule: Mapping[str, Any]) -> str:
    text = (f"{rule.get('metric')} = {format_value(rule.get('value'))}, required {rule.get('op')} "
            f"{threshold_text(rule)}")
    if rule.get("reason"):
        text += f" ({rule['reason']})"
    if rule.get("why"):
        text += f". Why: {rule['why']}"
    return text


def _rule_cases(suite: ET.Element, report: Mapping[str, Any]) -> None:
    checks = report.get("checks") or {}
    for rule in report.get("rules") or []:
        metric = str(rule.get("metric", ""))
        case = ET.SubElement(suite, "testcase", classname=check_of(metric, checks), name=rule_label(rule))
        outcome = rule_outcome(rule)
        if outcome == "failed":
            ET.SubElement(case, "failure", message=_explain(rule), type="gate").text = _explain(rule)
        elif outcome == "warned":
            ET.SubElement(case, "skipped", message=f"warning: {_explain(rule)}").text = f"warning: {_explain(rule)}"
        elif outcome == "not_judged":
            ET.SubElement(case, "skipped", message=f"not judged: {_explain(rule)}").text = \
                f"not judged: {_explain(rule)}"


def _check_cases(suite: ET.Element, report: Mapping[str, Any]) -> None:
    for name, check in (report.get("checks") or {}).items():
        family, _, short = str(name).partition(".")
        case = ET.SubElement(suite, "testcase", classname=family, name=short or family,
                             time=f"{float(check.get('seconds', 0.0)):.3f}")
        status, reason = check.get("status"), str(check.get("reason") or "")
        if status == "skipped":
            ET.SubElement(case, "skipped", message=reason).text = reason
        elif status != "ok":
            ET.SubElement(case, "error", message=reason, type=str(status)).text = reason


def render_junit(report: Mapping[str, Any]) -> str:
    """JUnit XML (pretty-printed, UTF-8 declaration) with one ``<testsuite>`` inside ``<testsuites>``."""
    root = ET.Element("testsuites", name="synthrelease")
    suite = ET.SubElement(root, "testsuite", name=_suite_name(report))
    props = ET.SubElement(suite, "properties")
    policy, synthetic = report.get("policy") or {}, report.get("synthetic_set") or {}
    for key, value in (("verdict", report.get("verdict")), ("policy.sha256", policy.get("sha256")),
                       ("synthetic_set.name", synthetic.get("name")),
                       ("synthetic_set.sha256", synthetic.get("sha256"))):
        if value is not None:
            ET.SubElement(props, "property", name=key, value=str(value))
    if report.get("rules"):
        _rule_cases(suite, report)
    else:
        _check_cases(suite, report)
    cases = suite.findall("testcase")
    counts = {"tests": len(cases), "failures": sum(c.find("failure") is not None for c in cases),
              "errors": sum(c.find("error") is not None for c in cases),
              "skipped": sum(c.find("skipped") is not None for c in cases)}
    seconds = sum(float(c.get("seconds", 0.0)) for c in (report.get("checks") or {}).values())
    for element in (root, suite):
        for key, n in counts.items():
            element.set(key, str(n))
        element.set("time", f"{seconds:.3f}")
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
