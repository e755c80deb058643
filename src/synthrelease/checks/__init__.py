"""Audit checks: a registry of ``Check`` classes (families integrity, privacy, fidelity, utility) that read an
``AuditContext`` and return ``CheckResult`` objects. ``synthrelease.audit`` runs them, applies the policy and writes
the audit folder (this package knows nothing of policies or reports)."""

from synthrelease.checks.base import Check, CheckResult, Direction, Metric, Skip, Status
from synthrelease.checks.context import AuditContext, AuditSettings
from synthrelease.checks.registry import check_names, get_check_class, register, select_checks

__all__ = ["AuditContext", "AuditSettings", "Check", "CheckResult", "Direction", "Metric", "Skip", "Status",
           "check_names", "get_check_class", "register", "select_checks"]
