"""Release policies: TOML data (never executed) that the gate evaluates against ``report.json``.

```toml
name = "default"
description = "..."
release = true                 # may a set that passes be exported? (false: a research comparison only)
[[rule]]
metric = "privacy.mia.auc_ci_high"       # family.check.metric of report.json
op = "<="                                 # <=, <, >=, >, ==, !=
threshold = 0.7                           # a number, or:
# threshold_metric = "privacy.reidentification.baseline_rate"   # another metric of the report
# margin = 0.05                           # added to threshold_metric's value
severity = "fail"                         # fail | warn (warn never fails the gate)
why = "an attacker holding the release must not tell training patients from unseen ones"
# not_applicable = "pass"                 # let a check that reports its risk absent (no face in view) pass
```

Loading validates everything (unknown keys, bad operators, wrong types, missing fields) and names the file, the
rule and its line, so a typo can never silently drop a rule.
"""

from __future__ import annotations

import hashlib
import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synthrelease.errors import InputError

__all__ = ["OPS", "Policy", "PolicyError", "Rule", "load_policy", "parse_policy"]

OPS = ("<=", "<", ">=", ">", "==", "!=")
SEVERITIES = ("fail", "warn")
_TOP_KEYS = {"name", "description", "release", "rule"}
_RULE_KEYS = {"metric", "op", "threshold", "threshold_metric", "margin", "severity", "why", "not_applicable"}
_METRIC = re.compile(r"^[a-z]+\.[a-z0-9_]+\.[A-Za-z0-9_]+$")


class PolicyError(InputError):
    """A policy file that cannot be used as written."""


@dataclass(frozen=True)
class Rule:
    metric: str
    op: str
    why: str
    threshold: float | None = None
    threshold_metric: str | None = None
    margin: float = 0.0
    severity: str = "fail"
    not_applicable: str = "fail"

    @property
    def check(self) -> str:
        """The ``family.check`` whose result holds the metric."""
        return ".".join(self.metric.split(".")[:2])

    @property
    def threshold_check(self) -> str | None:
        """The ``family.check`` whose result holds the threshold metric (None for a fixed threshold)."""
        return ".".join(self.threshold_metric.split(".")[:2]) if self.threshold_metric else None

    def describe(self) -> str:
        if self.threshold_metric is None:
            return f"{self.metric} {self.op} {self.threshold:g}"
        margin = f" + {self.margin:g}" if self.margin > 0 else f" - {-self.margin:g}" if self.margin < 0 else ""
        return f"{self.metric} {self.op} {self.threshold_metric}{margin}"


@dataclass(frozen=True)
class Policy:
    name: str
    description: str
    release: bool
    rules: tuple[Rule, ...]
    sha256: str  # of the file's bytes: the identity a report and a package record
    text: str  # the file as read (copied into every audit folder and package)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "sha256": self.sha256, "release": self.release, "description": self.description}


def _line_of(text: str, rule_index: int | None, key: str | None) -> int | None:
    """1-based line of ``key`` (top level or inside the ``rule_index``-th ``[[rule]]``), or of the rule's header."""
    lines = text.splitlines()
    start, end = 0, len(lines)
    if rule_index is not None:
        headers = [i for i, ln in enumerate(lines) if re.match(r"^\s*\[\[\s*rule\s*\]\]", ln)]
        if rule_index >= len(headers):
            return None
        start = headers[rule_index]
        end = headers[rule_index + 1] if rule_index + 1 < len(headers) else len(lines)
    elif key is not None:
        end = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("[")), len(lines))
    if key is None:
        return start + 1
    for i in range(start, end):
        if re.match(rf"^\s*{re.escape(key)}\s*=", lines[i]):
            return i + 1
    return start + 1 if rule_index is not None else None


def _error(where: str, text: str, message: str, fix: str, *, rule: int | None = None,
           key: str | None = None) -> PolicyError:
    line = _line_of(text, rule, key)
    at = f"{where}:{line}" if line else where
    label = f"rule {rule + 1}" if rule is not None else "policy"
    return PolicyError(f"{label}: {message}", where=at, fix=fix)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(float(value))


def _rule(raw: Any, i: int, where: str, text: str) -> Rule:
    if not isinstance(raw, dict):
        raise _error(where, text, "is not a table", "write each rule as a [[rule]] table", rule=i)
    unknown = sorted(set(raw) - _RULE_KEYS)
    if unknown:
        raise _error(where, text, f"unknown key {unknown[0]!r}", f"use only {', '.join(sorted(_RULE_KEYS))}",
                     rule=i, key=unknown[0])
    for key in ("metric", "op", "why"):
        if key not in raw:
            raise _error(where, text, f"has no {key!r}", f"add {key} = ...", rule=i)
        if not isinstance(raw[key], str) or not raw[key].strip():
            raise _error(where, text, f"{key!r} must be a non-empty string", f"quote the {key}", rule=i, key=key)
    if not _METRIC.match(raw["metric"]):
        raise _error(where, text, f"metric {raw['metric']!r} is not 'family.check.metric'",
                     "name a metric as it appears in report.json", rule=i, key="metric")
    if raw["op"] not in OPS:
        raise _error(where, text, f"op {raw['op']!r} is not one of {' '.join(OPS)}", "use one of them",
                     rule=i, key="op")
    has_t, has_m = "threshold" in raw, "threshold_metric" in raw
    if has_t == has_m:
        raise _error(where, text, "needs exactly one of 'threshold' and 'threshold_metric'",
                     "compare with a number or with another metric", rule=i)
    if has_t and not _number(raw["threshold"]):
        raise _error(where, text, f"threshold {raw['threshold']!r} is not a finite number", "write a number",
                     rule=i, key="threshold")
    if has_m and (not isinstance(raw["threshold_metric"], str) or not _METRIC.match(raw["threshold_metric"])):
        raise _error(where, text, f"threshold_metric {raw['threshold_metric']!r} is not 'family.check.metric'",
                     "name a metric of report.json", rule=i, key="threshold_metric")
    if "margin" in raw and (not has_m or not _number(raw["margin"])):
        raise _error(where, text, "margin must be a number and goes with threshold_metric only",
                     "fold a margin into threshold, or give threshold_metric", rule=i, key="margin")
    severity = raw.get("severity", "fail")
    if severity not in SEVERITIES:
        raise _error(where, text, f"severity {severity!r} is not fail or warn", "use fail or warn", rule=i,
                     key="severity")
    na = raw.get("not_applicable", "fail")
    if na not in ("fail", "pass"):
        raise _error(where, text, f"not_applicable {na!r} is not fail or pass", "use fail or pass", rule=i,
                     key="not_applicable")
    return Rule(metric=raw["metric"], op=raw["op"], why=raw["why"].strip(),
                threshold=float(raw["threshold"]) if has_t else None,
                threshold_metric=raw.get("threshold_metric"), margin=float(raw.get("margin", 0.0)),
                severity=severity, not_applicable=na)


def parse_policy(text: str, where: str = "<policy>") -> Policy:
    """A validated ``Policy`` from TOML text (``where`` names the source in errors)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"is not valid TOML ({exc})", where=where, fix="repair the syntax") from None
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise _error(where, text, f"unknown key {unknown[0]!r}", f"use only {', '.join(sorted(_TOP_KEYS))}",
                     key=unknown[0])
    name = raw.get("name")
    if not isinstance(name, str) or not re.match(r"^[A-Za-z0-9_.-]+$", name):
        raise _error(where, text, f"name {name!r} must be a word (letters, digits, _ . -)", "set name = \"...\"",
                     key="name")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise _error(where, text, "description must be a string", "quote it", key="description")
    release = raw.get("release", True)
    if not isinstance(release, bool):
        raise _error(where, text, f"release {release!r} must be true or false", "write release = true",
                     key="release")
    rules_raw = raw.get("rule", [])
    if not isinstance(rules_raw, list) or not rules_raw:
        raise _error(where, text, "has no [[rule]]", "add at least one [[rule]] table")
    rules = tuple(_rule(r, i, where, text) for i, r in enumerate(rules_raw))
    return Policy(name=name, description=description, release=release, rules=rules,
                  sha256=hashlib.sha256(text.encode()).hexdigest(), text=text)


def load_policy(name_or_path: str | Path) -> Policy:
    """A shipped policy by name (``default``, ``strict``, ``study``) or a TOML file by path."""
    from synthrelease.resources import list_policies, policy_path

    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or candidate.exists():
        if not candidate.is_file():
            raise PolicyError("no such policy file", where=candidate,
                              fix=f"give a TOML file or a shipped policy: {', '.join(list_policies())}")
        path = candidate
    else:
        path = policy_path(str(name_or_path))
    try:
        data = path.read_bytes()
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"cannot be read ({exc})", where=path, fix="give a UTF-8 TOML file") from None
    return parse_policy(text, where=str(path))  # its sha256 is that of ``data`` (UTF-8 round-trips exactly)
