"""The Check protocol's results and the registry."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from synthrelease.checks import Check, CheckResult, Direction, Metric, Skip, Status, check_names, select_checks
from synthrelease.errors import InputError

PRIVACY = {"privacy.memorization", "privacy.mask_memorization", "privacy.dcr", "privacy.mia",
           "privacy.reidentification", "privacy.metadata", "privacy.tumour_memorization"}


def test_registry_holds_every_privacy_check() -> None:
    assert set(check_names()) >= PRIVACY


def test_select_by_family_and_name() -> None:
    assert {c.name for c in select_checks(["privacy"])} == PRIVACY
    assert [c.name for c in select_checks(["privacy.mia,privacy.dcr"])] == ["privacy.mia", "privacy.dcr"]
    with pytest.raises(InputError, match="names no check"):
        select_checks(["privacy.nope"])


def test_metric_rejects_non_finite_and_round_trips() -> None:
    with pytest.raises(ValueError):
        Metric(math.nan, Direction.LOWER)
    m = Metric(0.7, Direction.LOWER, "auc", 0.6, 0.8)
    assert Metric.from_dict(json.loads(json.dumps(m.to_dict()))) == m


def test_result_flattens_ci_and_round_trips() -> None:
    r = CheckResult("privacy.mia", Status.OK, {"auc": Metric(0.7, "lower", "", 0.6, 0.8)}, {"k": [1]})
    assert r.flat_metrics() == {"privacy.mia.auc": 0.7, "privacy.mia.auc_ci_low": 0.6, "privacy.mia.auc_ci_high": 0.8}
    back = CheckResult.from_dict("privacy.mia", json.loads(json.dumps(r.to_dict())))
    assert back.flat_metrics() == r.flat_metrics() and back.evidence == r.evidence


def test_skipped_or_errored_results_carry_a_reason_and_no_metric() -> None:
    with pytest.raises(ValueError):
        CheckResult("privacy.mia", Status.SKIPPED)
    with pytest.raises(ValueError):
        CheckResult("privacy.mia", Status.ERROR, {"auc": Metric(0.5, "lower")}, reason="boom")


class _Raises(Check):
    name = "privacy.test_raises"

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def compute(self, ctx: Any) -> tuple[dict[str, Metric], dict[str, Any]]:
        raise self.exc


def test_run_turns_skip_and_failure_into_statuses() -> None:
    skipped = _Raises(Skip("no face in view")).run(None)  # type: ignore[arg-type]
    assert skipped.status is Status.SKIPPED and skipped.reason == "no face in view" and not skipped.flat_metrics()
    errored = _Raises(RuntimeError("boom")).run(None)  # type: ignore[arg-type]
    assert errored.status is Status.ERROR and "boom" in (errored.reason or "")
