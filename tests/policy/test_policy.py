"""Policies: shipped files load and mean what they say; validation names the rule, key and line; the gate's
verdict follows the rules (missing metric fails, warn never fails, not-applicable only where allowed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from synthrelease.policy import PolicyError, apply_gate, evaluate, load_policy, parse_policy
from synthrelease.resources import list_policies

RULE = """
[[rule]]
metric = "privacy.mia.auc_ci_high"
op = "<="
threshold = 0.7
severity = "fail"
why = "membership must stay hidden"
"""


def _policy(body: str, head: str = 'name = "t"\n') -> str:
    return head + body


def test_shipped_policies_load_and_differ_as_documented() -> None:
    assert {"default", "strict", "study"} <= set(list_policies())
    default, strict, study = (load_policy(n) for n in ("default", "strict", "study"))
    assert default.release and strict.release and not study.release
    assert not any(r.metric.startswith("privacy.") for r in study.rules)  # the study gates nothing on privacy
    metrics = {r.metric for r in default.rules}
    for needed in ("integrity.cohort.n_holdout", "privacy.memorization.flagged_fraction_ci_high",
                   "privacy.mia.auc_ci_high", "privacy.metadata.n_findings", "utility.segmentation.dice_ratio"):
        assert needed in metrics
    # strict is at least as strict as default on every rule they share with a fixed threshold
    d = {(r.metric, r.op): r for r in default.rules if r.threshold is not None}
    for r in strict.rules:
        other = d.get((r.metric, r.op))
        if other is None or r.threshold is None:
            continue
        assert (r.threshold <= other.threshold) if r.op in ("<=", "<") else (r.threshold >= other.threshold)
        assert not (other.severity == "fail" and r.severity == "warn")


def test_policy_identity_is_the_file_hash(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(_policy(RULE))
    a = load_policy(path)
    path.write_text(_policy(RULE) + "\n# a comment changes the identity\n")
    assert load_policy(path).sha256 != a.sha256 and len(a.sha256) == 64


@pytest.mark.parametrize(("edit", "message", "line"), [
    (lambda t: t.replace('op = "<="', 'op = "=<"'), "op '=<'", 5),
    (lambda t: t.replace("threshold = 0.7", 'threshold = "0.7"'), "threshold '0.7'", 6),
    (lambda t: t.replace("threshold = 0.7", "treshold = 0.7"), "unknown key 'treshold'", 6),
    (lambda t: t.replace('why = "membership must stay hidden"\n', ""), "has no 'why'", 3),
    (lambda t: t.replace('severity = "fail"', 'severity = "block"'), "severity 'block'", 7),
    (lambda t: t.replace("threshold = 0.7", 'threshold = 0.7\nthreshold_metric = "a.b.c"'), "exactly one", 3),
    (lambda t: t.replace("threshold = 0.7", "threshold = 0.7\nmargin = 0.1"), "margin", 7),
    (lambda t: t.replace('metric = "privacy.mia.auc_ci_high"', 'metric = "auc"'), "not 'family.check.metric'", 4),
    (lambda t: "colour = 1\n" + t, "unknown key 'colour'", 1),
    (lambda t: t.replace("[[rule]]", "[[rules]]"), "unknown key 'rules'", None),
])
def test_validation_names_rule_key_and_line(edit: Any, message: str, line: int | None) -> None:
    text = edit(_policy(RULE))
    with pytest.raises(PolicyError) as err:
        parse_policy(text, where="p.toml")
    assert message in str(err.value)
    if line is not None:
        assert f"p.toml:{line}" in err.value.one_line()


def test_bad_toml_and_missing_file_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="not valid TOML"):
        parse_policy("name = ", where="x")
    with pytest.raises(PolicyError, match="no such policy file"):
        load_policy(tmp_path / "absent.toml")
    with pytest.raises(PolicyError, match="no \\[\\[rule\\]\\]"):
        parse_policy('name = "empty"\n')


def _report(metrics: dict[str, float], checks: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"metrics": metrics, "checks": checks or {}}


POLICY = parse_policy("""
name = "t"
[[rule]]
metric = "privacy.mia.auc_ci_high"
op = "<="
threshold = 0.7
why = "w"
[[rule]]
metric = "privacy.reidentification.rank1_rate"
op = "<="
threshold_metric = "privacy.reidentification.baseline_rate"
margin = 0.05
not_applicable = "pass"
why = "w"
[[rule]]
metric = "fidelity.labels.ks_tumour_volume"
op = "<="
threshold = 0.5
severity = "warn"
why = "w"
""")


def test_verdict_passes_only_when_every_fail_rule_passes() -> None:
    good = {"privacy.mia.auc_ci_high": 0.6, "privacy.reidentification.rank1_rate": 0.1,
            "privacy.reidentification.baseline_rate": 0.06, "fidelity.labels.ks_tumour_volume": 0.9}
    gate = evaluate(POLICY, _report(good))
    assert gate.verdict == "pass" and [r.metric for r in gate.warned] == ["fidelity.labels.ks_tumour_volume"]
    reid = gate.rules[1]
    assert reid.threshold_value == pytest.approx(0.11) and reid.passed
    bad = dict(good, **{"privacy.reidentification.rank1_rate": 0.12})
    gate = evaluate(POLICY, _report(bad))
    assert gate.verdict == "fail" and gate.failed[0].reason == "0.12 is not <= 0.11"
    report = apply_gate({"metrics": bad, "checks": {}}, gate)
    assert report["verdict"] == "fail" and report["gate"]["failed"] == ["privacy.reidentification.rank1_rate"]
    assert report["policy"]["sha256"] == POLICY.sha256 and len(report["rules"]) == 3


def test_a_missing_metric_fails_with_the_reason() -> None:
    checks = {"privacy.mia": {"status": "error", "reason": "RuntimeError: boom"},
              "privacy.reidentification": {"status": "skipped", "reason": "only 1 of 20 training faces"}}
    gate = evaluate(POLICY, _report({"fidelity.labels.ks_tumour_volume": 0.1}, checks))
    mia, reid, _ = gate.rules
    assert not mia.passed and "failed: RuntimeError: boom" in (mia.reason or "")
    assert not reid.passed and "skipped: only 1 of 20" in (reid.reason or "")  # skipped is not a pass
    gate = evaluate(POLICY, _report({}))
    assert all(not r.passed for r in gate.rules) and "did not run" in (gate.rules[0].reason or "")
    assert gate.verdict == "fail"


def test_not_applicable_passes_only_where_the_rule_allows() -> None:
    na = {"privacy.reidentification": {"status": "skipped", "reason": "no face in view", "not_applicable": True}}
    gate = evaluate(POLICY, _report({"privacy.mia.auc_ci_high": 0.5}, na))
    assert gate.rules[1].passed and (gate.rules[1].reason or "").startswith("not applicable")
    strict = parse_policy(POLICY.text.replace('not_applicable = "pass"\n', ""))
    assert not evaluate(strict, _report({"privacy.mia.auc_ci_high": 0.5}, na)).rules[1].passed


def test_rules_on_checks_not_run_by_fail_fast_are_not_judged_and_never_pass() -> None:
    left_out = {"status": "skipped", "reason": "not run (--fail-fast): the verdict is already fail (...)",
                "not_run": True}
    checks = {"privacy.reidentification": left_out, "fidelity.labels": left_out}
    gate = evaluate(POLICY, _report({"privacy.mia.auc_ci_high": 0.9}, checks))
    mia, reid, labels = gate.rules
    assert not mia.passed and mia.judged and gate.failed == [mia]  # the finding
    assert not reid.passed and not reid.judged and "not judged" in (reid.reason or "")
    assert not labels.judged and gate.warned == []  # a warn rule not judged is not a warning either
    assert gate.not_judged == [reid, labels] and gate.summary()["n_not_judged"] == 2
    # even were every judged rule met, a rule not judged keeps the verdict at fail: it is never a pass
    gate = evaluate(POLICY, _report({"privacy.mia.auc_ci_high": 0.5}, checks))
    assert gate.failed == [] and gate.verdict == "fail"
    # a threshold metric from a check that was not run: not judged either
    relative = parse_policy('name = "r"\n[[rule]]\nmetric = "fidelity.labels.ks_tumour_volume"\nop = "<="\n'
                            'threshold_metric = "privacy.mia.auc"\nwhy = "w"\n')
    (rule,) = evaluate(relative, _report({"fidelity.labels.ks_tumour_volume": 0.1},
                                         {"fidelity.labels": {"status": "ok"}, "privacy.mia": left_out})).rules
    assert not rule.passed and not rule.judged and rule.value == 0.1
    # a check skipped for another reason still fails its rules as before
    other = {"privacy.reidentification": {"status": "skipped", "reason": "only 1 of 20 training faces"}}
    assert evaluate(POLICY, _report({"privacy.mia.auc_ci_high": 0.5}, other)).rules[1].judged is True
