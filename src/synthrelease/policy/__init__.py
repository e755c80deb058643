"""Release policies (validated TOML data) and the gate that evaluates them against ``report.json``."""

from synthrelease.policy.evaluate import GateResult, RuleResult, apply_gate, evaluate
from synthrelease.policy.model import OPS, Policy, PolicyError, Rule, load_policy, parse_policy

__all__ = ["OPS", "GateResult", "Policy", "PolicyError", "Rule", "RuleResult", "apply_gate", "evaluate",
           "load_policy", "parse_policy"]
