"""The public view of a report: what may leave the hospital in a release package.

Evidence is computed from the real cohorts: it names real case pseudonyms (the nearest training patient of a
flagged synthetic case) and its figures show real images. Metrics, rules and the verdict are aggregate statements
a recipient needs to judge the set, so they stay; evidence is replaced by a note, never filtered key by key (a
filter would have to know every current and future evidence field to be safe).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

__all__ = ["ERROR_WITHHELD", "WITHHELD", "WITHHELD_NOTE", "public_report"]

WITHHELD_NOTE = "derived from protected data; kept in the workspace"
WITHHELD: dict[str, str] = {"withheld": WITHHELD_NOTE}
ERROR_WITHHELD = "the check failed to run (its error message is kept in the workspace)"


def public_report(report: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``report`` with every check's ``evidence`` replaced by ``{"withheld": ...}`` and the error
    messages of checks that failed to run (and of the rules that cite them) replaced by a note.

    Everything else (metrics, rules, verdict, policy, synthetic_set, data, summary) is kept as is; the input is not
    modified. Used by export for the package's ``audit/report.json``.
    """
    out = copy.deepcopy(dict(report))
    for check in (out.get("checks") or {}).values():
        if isinstance(check, dict):
            check["evidence"] = dict(WITHHELD)
            if check.get("status") == "error":  # exception text can hold workspace paths: keep it at home
                check["reason"] = ERROR_WITHHELD
    for rule in out.get("rules") or []:
        if isinstance(rule, dict) and "failed: " in str(rule.get("reason") or ""):
            rule["reason"] = str(rule["reason"]).split("failed: ", 1)[0] + "failed: " + ERROR_WITHHELD
    return out
