"""Reports rendered from a real (tiny) audit's report.json, with a hand-written gate on top.

The audit runs three cheap checks on 16^3 phantoms (figures included); three hand-made results add what those
cannot: a metric with a confidence interval and evidence naming a planted real pseudonym, a figure marked free of
real data, and an error whose reason carries markup.
"""

from __future__ import annotations

import base64
import copy
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from synthrelease.audit import build_report, run_checks
from synthrelease.checks import AuditContext, CheckResult, Direction, Metric, Status, select_checks
from synthrelease.data.cohort import Cohort
from synthrelease.data.phantoms import make_ct_phantom
from synthrelease.data.preprocess import PreprocessConfig, preprocess_case
from synthrelease.report import public_report, render_html, render_junit, render_markdown, write_reports
from synthrelease.report.public import ERROR_WITHHELD

PLANTED = "PATIENT-REAL-0042"  # a real pseudonym in evidence: must never reach a public page
HOSTILE = "ValueError: <script>alert(1)</script> in file"
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class TagBalance(HTMLParser):
    """Every non-void tag opened is closed, in order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def _assert_well_formed(page: str) -> None:
    parser = TagBalance()
    parser.feed(page)
    parser.close()
    assert page.startswith("<!DOCTYPE html>")
    assert not parser.errors, parser.errors[:5]
    assert not parser.stack, parser.stack


def _png(path: Path, value: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, dtype=np.uint8)).save(path, format="PNG")
    return path


def _figures(value: Any, real: bool = False) -> Iterator[tuple[str, bool]]:
    """(path, shows real data) of every figure entry, independent of the renderer's own walk."""
    if isinstance(value, dict):
        real = real or value.get("contains_real_data") is True
        if isinstance(value.get("figure"), str):
            yield value["figure"], real or value.get("contains_real_data") is not False
        for v in value.values():
            yield from _figures(v, real)
    elif isinstance(value, list):
        for v in value:
            yield from _figures(v, real)


def _extra_results(audit: Path) -> list[CheckResult]:
    _png(audit / "figures" / "mia_real.png", 200)
    _png(audit / "figures" / "synthetic_only.png", 90)
    mia = CheckResult("privacy.mia", Status.OK,
                      {"auc": Metric(0.52, Direction.LOWER, "membership AUC", 0.41, 0.63)},
                      {"flagged": [{"synthetic": f"syn{i:04d}", "nearest_train": PLANTED if i == 0 else f"tr{i}",
                                    "score": 0.5 + i / 1000} for i in range(100)],
                       "figures": [{"figure": "figures/mia_real.png", "contains_real_data": True}]})
    utility = CheckResult("utility.segmentation", Status.OK, {"dice_ratio": Metric(0.93, Direction.HIGHER)},
                          {"figures": [{"figure": "figures/synthetic_only.png", "contains_real_data": False}]})
    broken = CheckResult("integrity.files", Status.ERROR, reason=HOSTILE)
    return [mia, utility, broken]


def _rule(metric: str, op: str, threshold: float | None, value: float | None, passed: bool, severity: str,
          **kw: Any) -> dict[str, Any]:
    return {"metric": metric, "op": op, "threshold": threshold, "threshold_metric": None, "margin": 0.0,
            "threshold_value": threshold, "value": value, "passed": passed, "severity": severity,
            "why": f"why {metric}", "reason": None, **kw}


@pytest.fixture(scope="module")
def audit(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = PreprocessConfig.for_modality("ct", spacing=(15.0, 15.0, 15.0), shape=(16, 16, 16))
        cases = [preprocess_case(make_ct_phantom(i, shape=16, seed=0), cfg)[0] for i in range(12)]
        train = Cohort.from_cases(cases[:4], name="train")
        holdout = Cohort.from_cases(cases[4:8], name="holdout")
        syn = Cohort.from_cases([c.with_(case_id=f"syn{i:04d}") for i, c in enumerate(cases[8:])], name="synthetic")
        base = tmp_path_factory.mktemp("report")
        ctx = AuditContext(train, holdout, syn, out_dir=base / "audit", cache_dir=base / "cache", seed=0)
        results = run_checks(ctx, select_checks(["privacy.metadata", "fidelity.labels", "fidelity.intensity"]))
    finally:
        torch.set_num_threads(threads)
    results += _extra_results(ctx.out_dir)
    report = json.loads(json.dumps(build_report(ctx, results, "tiny-set", "ab" * 32)))
    m = report["metrics"]
    report["policy"] = {"name": "default", "sha256": "cd" * 32, "release": True, "description": "test policy"}
    report["rules"] = [
        _rule("privacy.mia.auc_ci_high", "<=", 0.65, m["privacy.mia.auc_ci_high"], True, "fail"),
        _rule("fidelity.labels.ks_tumour_volume", "<=", -1.0, m["fidelity.labels.ks_tumour_volume"], False, "fail"),
        _rule("fidelity.intensity.w1_mean", "<=", None, m["fidelity.intensity.w1_mean"], False, "warn",
              threshold_metric="fidelity.intensity.w1_tumour_holdout", margin=-10.0,
              threshold_value=m["fidelity.intensity.w1_tumour_holdout"] - 10.0),
        _rule("privacy.metadata.n_findings", "==", 0.0, None, False, "fail",
              reason=f"metric missing: check privacy.metadata skipped: {HOSTILE}"),
    ]
    report["verdict"] = "fail"
    report["gate"] = {"n_rules": 4, "n_failed": 2, "n_warned": 1,
                      "failed": ["fidelity.labels.ks_tumour_volume", "privacy.metadata.n_findings"],
                      "warned": ["fidelity.intensity.w1_mean"]}
    return report, ctx.out_dir


def test_html_is_self_contained_and_shows_everything(audit: tuple[dict[str, Any], Path]) -> None:
    report, audit_dir = audit
    page = render_html(report, audit_dir)
    _assert_well_formed(page)
    assert 'class="banner fail"' in page and ">FAIL<" in page
    assert report["policy"]["sha256"] in page and report["synthetic_set"]["sha256"] in page
    for rule in report["rules"]:
        assert rule["metric"] in page
    for name, check in report["checks"].items():
        assert f'id="check-{name}"' in page
        if check.get("reason"):
            assert check["reason"].split("<")[0] in page
    figures = [path for check in report["checks"].values() for path, _ in _figures(check["evidence"])]
    assert len(figures) >= 5  # labels 1, intensity 2, mia 1, utility 1
    assert page.count('<img src="data:image/png;base64,') == len(figures)
    for path in figures:  # the bytes embedded are those of the file named
        assert base64.b64encode((audit_dir / path).read_bytes()).decode() in page
    lowered = page.lower()
    for external in ("http://", "https://", "<script", "<link", "src=\"/", "url("):
        assert external not in lowered, external
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "[0.41, 0.63]" in page  # the 95% CI of a metric
    assert "80 more rows (100 in all" in page  # a long evidence list is cut with a count
    assert PLANTED in page  # the workspace version keeps the evidence


def test_rules_table_lists_failures_first_and_marks_warnings(audit: tuple[dict[str, Any], Path]) -> None:
    report, audit_dir = audit
    page = render_html(report, audit_dir)
    table = page[page.index("<h2>Rules</h2>"):page.index("<h2>Checks</h2>")]
    assert table.count('<tr class="failed">') == 2 and table.count('<tr class="warned">') == 1
    assert table.count('<tr class="passed">') == 1
    order = [table.index(f">{m}<") for m in ("fidelity.labels.ks_tumour_volume", "privacy.metadata.n_findings",
                                               "fidelity.intensity.w1_mean", "privacy.mia.auc_ci_high")]
    assert order == sorted(order)
    assert "fidelity.intensity.w1_tumour_holdout - 10" in table


def test_public_html_withholds_evidence_and_real_figures(audit: tuple[dict[str, Any], Path]) -> None:
    report, audit_dir = audit
    page = render_html(report, audit_dir, public=True)
    _assert_well_formed(page)
    assert PLANTED not in page and "nearest_train" not in page and "voxels_sampled" not in page
    assert "withheld" in page and "derived from protected data" in page
    for check in report["checks"].values():
        for path, real in _figures(check["evidence"]):
            embedded = base64.b64encode((audit_dir / path).read_bytes()).decode() in page
            assert embedded is not real, path
    assert page.count("data:image/png;base64,") == 1  # only the figure marked free of real data
    assert "privacy.mia" in page and "0.52" in page and "[0.41, 0.63]" in page  # metrics stay
    for rule in report["rules"]:
        assert rule["metric"] in page


def test_public_report_keeps_metrics_and_drops_evidence(audit: tuple[dict[str, Any], Path]) -> None:
    report, audit_dir = audit
    before = copy.deepcopy(report)
    pub = public_report(report)
    assert report == before  # the input is untouched
    for key in ("metrics", "verdict", "policy", "synthetic_set", "data", "summary", "gate", "seed"):
        assert pub[key] == report[key], key
    for name, check in pub["checks"].items():
        assert check["evidence"] == {"withheld": "derived from protected data; kept in the workspace"}
        kept = {k: v for k, v in report["checks"][name].items() if k != "evidence"}
        if kept["status"] == "error":  # an exception's text can hold workspace paths: withheld too
            assert check["reason"] == ERROR_WITHHELD and "<script>" not in json.dumps(check)
            kept["reason"] = ERROR_WITHHELD
        assert {k: v for k, v in check.items() if k != "evidence"} == kept
    dumped = json.dumps(pub)
    assert PLANTED not in dumped and "figures/" not in dumped
    assert "data:image" not in render_html(pub, audit_dir)  # nothing left to embed, even in the full view


def test_junit_counts_rules_and_warnings_do_not_fail(audit: tuple[dict[str, Any], Path]) -> None:
    report, _ = audit
    root = ET.fromstring(render_junit(report))
    suites = list(root.iter("testsuite"))
    assert len(suites) == 1
    suite = suites[0]
    assert suite.get("name") == "synthrelease gate: default"
    cases = suite.findall("testcase")
    assert int(suite.get("tests", -1)) == len(cases) == len(report["rules"])
    failed = [r for r in report["rules"] if not r["passed"] and r["severity"] == "fail"]
    assert int(suite.get("failures", -1)) == len(failed) == 2
    assert int(suite.get("skipped", -1)) == 1 and int(suite.get("errors", -1)) == 0
    by_class = {c.get("classname"): c for c in cases}
    assert set(by_class) == {"privacy.mia", "fidelity.labels", "fidelity.intensity", "privacy.metadata"}
    warn = by_class["fidelity.intensity"]
    skipped = warn.find("skipped")
    assert warn.find("failure") is None and skipped is not None
    assert (skipped.get("message") or "").startswith("warning:")
    missing = by_class["privacy.metadata"].find("failure")
    assert missing is not None and HOSTILE in (missing.get("message") or "")  # escaped in XML, intact when read
    ks = by_class["fidelity.labels"].find("failure")
    value = report["metrics"]["fidelity.labels.ks_tumour_volume"]
    assert ks is not None and f"{value:.4g}" in (ks.get("message") or "") and "-1" in (ks.get("message") or "")
    assert by_class["privacy.mia"].find("failure") is None and by_class["privacy.mia"].find("skipped") is None


def test_without_rules_there_is_no_verdict_and_one_testcase_per_check(audit: tuple[dict[str, Any], Path]) -> None:
    report, audit_dir = audit
    bare = {k: v for k, v in report.items() if k not in ("policy", "verdict", "rules", "gate")}
    page = render_html(bare, audit_dir)
    _assert_well_formed(page)
    assert 'class="banner none"' in page and "no verdict" in page
    root = ET.fromstring(render_junit(bare))
    suite = next(root.iter("testsuite"))
    assert int(suite.get("tests", -1)) == len(report["checks"])
    assert int(suite.get("errors", -1)) == 1 and int(suite.get("skipped", -1)) == 1
    assert int(suite.get("failures", -1)) == 0
    assert "NO VERDICT" in render_markdown(bare)


def test_markdown_lists_failed_rules_and_checks_not_run(audit: tuple[dict[str, Any], Path]) -> None:
    report, _ = audit
    text = render_markdown(report)
    assert "**FAIL**" in text and "default" in text and "tiny-set" in text
    failed_at = text.index("### Failed rules")
    warned_at = text.index("### Warnings")
    for rule in report["rules"]:
        if not rule["passed"]:
            at = text.index(f"`{rule['metric']}`")
            assert failed_at < at < warned_at if rule["severity"] == "fail" else at > warned_at
    assert "1 rule passed." in text
    assert "<script>" not in text and "&lt;script&gt;" in text
    for name, check in report["checks"].items():
        if check["status"] != "ok":
            assert f"`{name}` {check['status']}" in text
    assert "[0.41, 0.63]" in text  # the CI of a headline metric
    assert PLANTED not in text


def test_write_reports_writes_the_three_views(audit: tuple[dict[str, Any], Path],
                                              tmp_path: Path) -> None:
    report, audit_dir = audit
    paths = write_reports(audit_dir, report)
    assert {p.name for p in paths.values()} == {"report.html", "junit.xml", "summary.md"}
    assert all(p.parent == audit_dir for p in paths.values())
    assert paths["html"].read_text(encoding="utf-8") == render_html(report, audit_dir)
    assert paths["junit"].read_text(encoding="utf-8") == render_junit(report)
    assert paths["markdown"].read_text(encoding="utf-8") == render_markdown(report)
    assert not list(audit_dir.glob("*.partial"))


def test_figure_outside_the_audit_folder_is_not_embedded(audit: tuple[dict[str, Any], Path]) -> None:
    report, audit_dir = audit
    secret = _png(audit_dir.parent / "secret.png", 7)
    crafted = copy.deepcopy(report)
    crafted["checks"]["utility.segmentation"]["evidence"]["figures"] = [
        {"figure": "../secret.png", "contains_real_data": False},
        {"figure": str(secret), "contains_real_data": False}]
    page = render_html(crafted, audit_dir, public=True)
    assert base64.b64encode(secret.read_bytes()).decode() not in page
    assert "path outside the audit folder refused" in page and "absolute path refused" in page
