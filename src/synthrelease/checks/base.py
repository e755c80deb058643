"""The ``Check`` protocol shared by every audit family, and its frozen results.

A check reads an ``AuditContext`` (train, holdout and synthetic cohorts plus shared, cached features) and returns
a ``CheckResult``: named metrics (value, which direction is better, a 95% confidence interval where one applies),
evidence (flagged case ids, figure paths, per-case tables) and a status. ``ok`` means every metric is real;
``skipped`` and ``error`` carry a reason and no metrics (so a policy rule on them fails: a check that did not run
is not a pass).
"""

from __future__ import annotations

import logging
import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

from synthrelease.errors import SynthReleaseError

if TYPE_CHECKING:
    from synthrelease.checks.context import AuditContext

__all__ = ["Check", "CheckResult", "Direction", "Metric", "Skip", "Status"]

log = logging.getLogger(__name__)


class Status(StrEnum):
    OK = "ok"
    SKIPPED = "skipped"
    ERROR = "error"


class Direction(StrEnum):
    """Which way a metric is better (``info``: descriptive, e.g. a calibrated threshold)."""

    LOWER = "lower"
    HIGHER = "higher"
    INFO = "info"


@dataclass(frozen=True)
class Metric:
    value: float
    direction: Direction
    description: str = ""
    ci_low: float | None = None
    ci_high: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", float(self.value))
        object.__setattr__(self, "direction", Direction(self.direction))
        if not math.isfinite(self.value):
            raise ValueError(f"metric value {self.value} is not finite")
        for bound in ("ci_low", "ci_high"):
            v = getattr(self, bound)
            if v is not None:
                object.__setattr__(self, bound, float(v))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"value": self.value, "direction": self.direction.value}
        if self.ci_low is not None and self.ci_high is not None:
            d["ci95"] = [self.ci_low, self.ci_high]
        if self.description:
            d["description"] = self.description
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Metric:
        ci = d.get("ci95") or (None, None)
        return cls(d["value"], Direction(d["direction"]), d.get("description", ""), ci[0], ci[1])


@dataclass(frozen=True)
class CheckResult:
    """What one check found. ``name`` is ``family.check``; metric keys are plain names (``flagged_fraction``)."""

    name: str
    status: Status
    metrics: dict[str, Metric] = field(default_factory=dict)
    evidence: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None
    seconds: float = 0.0
    # skipped because the risk or property it measures is absent from these data (e.g. no face in view), not because
    # it could not run: a policy rule may let such a skip pass (``not_applicable = "pass"``); nothing else passes
    not_applicable: bool = False
    # skipped because ``--fail-fast`` had already decided the verdict (fail): its rules are not judged
    not_run: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", Status(self.status))
        if self.status is Status.OK and self.reason:
            raise ValueError("an ok result carries no reason")
        if (self.not_applicable or self.not_run) and self.status is not Status.SKIPPED:
            raise ValueError("only a skipped result can be not applicable or not run")
        if self.status is not Status.OK and (self.metrics or not self.reason):
            raise ValueError(f"a {self.status.value} result needs a reason and carries no metrics")

    @property
    def family(self) -> str:
        return self.name.split(".", 1)[0]

    def flat_metrics(self) -> dict[str, float]:
        """``family.check.metric`` -> value; a confidence interval adds ``metric_ci_low`` / ``metric_ci_high``."""
        flat: dict[str, float] = {}
        for key, m in self.metrics.items():
            flat[f"{self.name}.{key}"] = m.value
            if m.ci_low is not None and m.ci_high is not None:
                flat[f"{self.name}.{key}_ci_low"] = m.ci_low
                flat[f"{self.name}.{key}_ci_high"] = m.ci_high
        return flat

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"status": self.status.value, "seconds": round(self.seconds, 3),
                             "metrics": {k: m.to_dict() for k, m in self.metrics.items()}, "evidence": self.evidence}
        if self.reason:
            d["reason"] = self.reason
        if self.not_applicable:
            d["not_applicable"] = True
        if self.not_run:
            d["not_run"] = True
        return d

    @classmethod
    def from_dict(cls, name: str, d: dict[str, Any]) -> CheckResult:
        return cls(name, Status(d["status"]), {k: Metric.from_dict(v) for k, v in d.get("metrics", {}).items()},
                   dict(d.get("evidence", {})), d.get("reason"), float(d.get("seconds", 0.0)),
                   bool(d.get("not_applicable", False)), bool(d.get("not_run", False)))


class Skip(Exception):
    """Raised inside ``Check.compute`` when the check cannot run on these data (the reason goes into the report).
    ``not_applicable=True`` says more: what the check measures is absent (no face in view: nothing to re-identify)."""

    def __init__(self, reason: str, *, not_applicable: bool = False) -> None:
        super().__init__(reason)
        self.not_applicable = not_applicable


class Check(ABC):
    """One audit check. Subclasses set ``name`` (``family.check``) and implement ``compute``.

    ``__init__`` only stores options (scikit-learn style); ``run`` never raises: a check that cannot apply is
    ``skipped``, one that fails is ``error``, both with a reason.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""

    @property
    def family(self) -> str:
        return self.name.split(".", 1)[0]

    @abstractmethod
    def compute(self, ctx: AuditContext) -> tuple[dict[str, Metric], dict[str, Any]]:
        """Metrics and evidence; raise ``Skip(reason)`` when the check does not apply."""

    def run(self, ctx: AuditContext) -> CheckResult:
        start = time.perf_counter()
        try:
            metrics, evidence = self.compute(ctx)
        except Skip as exc:
            return CheckResult(self.name, Status.SKIPPED, reason=str(exc), seconds=time.perf_counter() - start,
                               not_applicable=exc.not_applicable)
        except (SynthReleaseError, ValueError, RuntimeError, OSError, MemoryError) as exc:
            log.debug("check %s failed", self.name, exc_info=True)
            return CheckResult(self.name, Status.ERROR, reason=f"{type(exc).__name__}: {exc}",
                               seconds=time.perf_counter() - start)
        if not metrics:
            return CheckResult(self.name, Status.ERROR, reason="the check produced no metric",
                               seconds=time.perf_counter() - start)
        return CheckResult(self.name, Status.OK, metrics, evidence, seconds=time.perf_counter() - start)
