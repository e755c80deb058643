"""Red-team copies outside the old search envelope: does the privacy audit find them, and does the gate close?

Run: ``python benchmarks/bench_redteam.py [--threads 2] [--json PATH]`` (demo sizes: 32^3 phantom CTs, 80 training,
60 holdout and 120 synthetic cases, seeds 0, 1, 2; about 20 audits of the privacy family), or ``--quick`` (12 / 10 /
20 cases, one seed, a 2-step encoder: a smoke run of a few minutes whose numbers are not the measured ones).

Each seed is its own cohort: phantom patients ``make_ct_phantom(i, seed=seed)`` preprocessed onto the ``--shape``^3
workspace grid (240 mm field of view), split into training, holdout and unseen patients, plus a few more unseen
patients whose bodies host the partial copies (``half_mix``, ``tumour_transplant``). The copies come from
``synthrelease.checks.privacy.redteam`` (``RED_TEAM_CLASSES``: shifts of 4 voxels and 15% of the field of view,
anterior-posterior and superior-inferior flips, 15-degree rotations, zooms of 0.9 and 1.1, elastic warps of 2 and 3
voxels, blur and noise, a blanked quarter, half a patient, a transplanted tumour, a rotation then a shift), all
outside the envelope of the old search and of the ``copycat`` control (left-right flip, 2-voxel shifts, 5-degree
rotations).
Per seed, every set is audited with ``AuditContext`` and the privacy checks (``--only``, default the family; the set
is written as an nnU-Net folder so that ``privacy.metadata`` has files to scan):

1. classes: one copy of every class hidden among unseen patients (``n_synthetic`` in all). A copy is *detected*
   when a check lists it in ``evidence["copies"]`` with the copied training patient as its nearest. Beside it: the
   highest score a listing check gave it with that check's copy threshold, and what the old share rule saw (the
   copy's pixel NCC to its nearest training case against tau, the highest holdout NCC).
2. unseen: ``n_synthetic`` unseen patients only: the copies each check calls (false copies: every one is a false
   alarm) and the memorization check's flagged share.
3. gate: 1, 2 and 5 copies (classes drawn at random per seed) hidden among 119 / 118 / 115 unseen patients, judged by
   the ``default`` policy's privacy rules (every rule on a ``privacy.*`` metric): the gate must fail each.
4. private generator: the unseen-only set of each of ``--private-seeds`` (its own cohort per seed) under the same
   rules: the pass rate of a generator that memorized nothing.

Every audit is timed (its checks' ``run``, encoder training on the first audit of a cohort included; writing the set
is not). ``--json PATH`` also writes the headline figures as a flat JSON object (name -> number or string).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from benchlib import print_table
from threadpoolctl import threadpool_limits

from synthrelease.checks import AuditContext, AuditSettings, CheckResult, select_checks
from synthrelease.checks.embedding import EmbeddingConfig
from synthrelease.checks.privacy.redteam import COPY_CHECKS, RED_TEAM_CLASSES, Detection, detect, hide_copies
from synthrelease.data.case import Case
from synthrelease.data.cohort import Cohort
from synthrelease.data.nnunet import write_nnunet
from synthrelease.data.phantoms import make_ct_phantom
from synthrelease.data.preprocess import PreprocessConfig, preprocess_case
from synthrelease.policy import GateResult, Policy, evaluate, load_policy

FOV_MM = 240.0
N_HOSTS = 8  # unseen patients kept apart to host the partial copies
# where a copy check may report the threshold its copies are judged against (the first one present is shown)
THRESHOLD_METRICS = ("copy_threshold", "tau_copy", "copy_tau")


# -- cohorts -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cohorts:
    """One seed's patients: training, holdout, unseen (the plain synthetic cases) and hosts."""

    seed: int
    train: list[Case]
    holdout: list[Case]
    unseen: list[Case]
    hosts: list[Case]


def make_cohorts(seed: int, args: argparse.Namespace) -> Cohorts:
    """Phantom cohort ``seed`` on the workspace grid: each patient depends only on (seed, index)."""
    cfg = PreprocessConfig.for_modality("ct", spacing=(FOV_MM / args.shape,) * 3, shape=(args.shape,) * 3)
    counts = [args.n_train, args.n_holdout, args.n_synthetic, N_HOSTS]
    cases = [preprocess_case(make_ct_phantom(i, shape=args.shape, seed=seed, fov_mm=FOV_MM), cfg)[0]
             for i in range(sum(counts))]
    edges = np.cumsum([0, *counts])
    parts = [cases[a:b] for a, b in itertools.pairwise(edges)]
    return Cohorts(seed, *parts)


# -- one audit -----------------------------------------------------------------------------------------------------
@dataclass
class Audit:
    label: str
    results: dict[str, CheckResult]
    seconds: float
    gate: GateResult


def privacy_policy() -> Policy:
    """The default policy restricted to its privacy rules (metric and threshold metric both ``privacy.*``)."""
    policy = load_policy("default")
    rules = tuple(r for r in policy.rules if r.check.startswith("privacy.")
                  and (r.threshold_check is None or r.threshold_check.startswith("privacy.")))
    return dataclasses.replace(policy, rules=rules)


def judge(policy: Policy, results: dict[str, CheckResult]) -> GateResult:
    """The gate on the results, as ``audit`` builds the part of the report it reads."""
    report = {"metrics": {k: v for r in results.values() for k, v in r.flat_metrics().items()},
              "checks": {name: r.to_dict() for name, r in results.items()}}
    return evaluate(policy, report)


def run_audit(label: str, co: Cohorts, cases: list[Case], work: Path, settings: AuditSettings, only: Sequence[str],
              policy: Policy) -> Audit:
    """Write the set, audit it with the checks ``only`` names, judge it; print its time and verdict."""
    syn = Cohort.from_cases(cases, name="synthetic")
    ref = co.train[0]
    set_dir = work / label / "set"
    write_nnunet(syn, set_dir, name="synthetic", schema=ref.schema, modality=ref.modality,
                 channel_names=ref.channel_names)
    ctx = AuditContext(Cohort.from_cases(co.train, name="train"), Cohort.from_cases(co.holdout, name="holdout"), syn,
                       out_dir=work / label / "audit", cache_dir=work / f"cache{co.seed}", seed=co.seed,
                       synthetic_dir=set_dir, settings=settings)
    t0 = time.perf_counter()
    results = {c.name: c.run(ctx) for c in select_checks(only)}
    seconds = time.perf_counter() - t0
    gate = judge(policy, results)
    errors = [f"{n}: {r.status.value} ({r.reason})" for n, r in results.items() if r.status.value != "ok"]
    print(f"audit {label}: {len(cases)} synthetic, {seconds:.1f} s, privacy verdict {gate.verdict}"
          + (f"; not ok: {'; '.join(errors)}" if errors else ""), flush=True)
    return Audit(label, results, seconds, gate)


# -- reading results -------------------------------------------------------------------------------------------------
def metric(results: dict[str, CheckResult], check: str, name: str) -> float | None:
    r = results.get(check)
    m = r.metrics.get(name) if r is not None else None
    return None if m is None else float(m.value)


def copy_threshold(result: CheckResult | None) -> float | None:
    if result is None:
        return None
    return next((float(result.metrics[k].value) for k in THRESHOLD_METRICS if k in result.metrics), None)


def fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def old_rule(results: dict[str, CheckResult], synthetic: str) -> tuple[float | None, bool]:
    """The old share rule's view of one case: its pixel NCC to its nearest training case and whether it was above
    tau (listed in ``evidence["flagged"]``)."""
    mem = results.get("privacy.memorization")
    if mem is None:
        return None, False
    ncc = mem.evidence.get("per_case", {}).get(synthetic, {}).get("ncc")
    flagged = any(f.get("synthetic") == synthetic for f in mem.evidence.get("flagged", []))
    return (None if ncc is None else float(ncc)), flagged


def has_copy_rule(audit: Audit) -> bool:
    """Whether any copy check of the audit lists copies (``evidence["copies"]``) at all: without it, "not
    detected" would mean "not looked for"."""
    return any("copies" in r.evidence for name, r in audit.results.items() if name in COPY_CHECKS)


def detected(d: Detection, audit: Audit) -> str:
    return ("yes" if d.detected else "NO") if has_copy_rule(audit) else "n/a"


def detection_row(d: Detection, audit: Audit, seed: int) -> tuple[str, ...]:
    ncc, flagged = old_rule(audit.results, d.copy.synthetic)
    by = d.checks[0] if d.checks else None
    threshold = copy_threshold(audit.results.get(by)) if by else None
    tau = metric(audit.results, "privacy.memorization", "tau")
    return (d.copy.red_team_class, str(seed), detected(d, audit),
            ", ".join(c.split(".")[1] for c in d.checks) or "-", fmt(d.score), fmt(threshold),
            f"{fmt(ncc)} / {fmt(tau)}", "yes" if flagged else "no", json.dumps(d.copy.params, sort_keys=True))


def n_copies(results: dict[str, CheckResult]) -> list[float | None]:
    return [metric(results, name, "n_copies") for name in COPY_CHECKS]


def failed_rules(gate: GateResult) -> str:
    """The failed rules' metrics (``family.`` dropped); a metric the checks did not report is marked missing."""
    return ", ".join(r.metric.split(".", 1)[1] + (" (missing)" if r.value is None else "") for r in gate.failed) or "-"


# -- main ----------------------------------------------------------------------------------------------------------
def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-train", type=int, default=80)
    parser.add_argument("--n-holdout", type=int, default=60)
    parser.add_argument("--n-synthetic", type=int, default=120, help="cases per synthetic set (copies included)")
    parser.add_argument("--shape", type=int, default=32)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="cohorts of the class and gate runs")
    parser.add_argument("--private-seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4],
                        help="cohorts whose unseen-only set stands in for a private generator")
    parser.add_argument("--gate-copies", type=int, nargs="+", default=[1, 2, 5], help="copies hidden per gate set")
    parser.add_argument("--classes", nargs="+", default=list(RED_TEAM_CLASSES), choices=list(RED_TEAM_CLASSES))
    parser.add_argument("--only", nargs="+", default=["privacy"], help="checks or families to run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--embedding-steps", type=int, default=None, help="encoder steps (default: the check's)")
    parser.add_argument("--n-boot", type=int, default=None, help="bootstrap draws (default: the checks')")
    parser.add_argument("--quick", action="store_true",
                        help="12 training, 10 holdout, 20 synthetic, seed 0, one gate set of 1 copy, 2 encoder steps")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here (flat JSON object)")
    args = parser.parse_args(argv)
    if args.quick:
        args.n_train, args.n_holdout, args.n_synthetic = 12, 10, 20
        args.seeds, args.private_seeds, args.gate_copies = [0], [0], [1]
        args.embedding_steps = args.embedding_steps or 2
        args.n_boot = args.n_boot or 100
    if args.n_synthetic <= max(len(args.classes), *args.gate_copies):
        parser.error(f"--n-synthetic {args.n_synthetic} leaves no unseen patient beside the copies")
    return args


def settings_of(args: argparse.Namespace) -> AuditSettings:
    emb = EmbeddingConfig() if args.embedding_steps is None else EmbeddingConfig(steps=args.embedding_steps)
    extra: dict[str, Any] = {} if args.n_boot is None else {"n_boot": args.n_boot}
    return AuditSettings(embedding=emb, **extra)


def gate_classes(seed: int, k: int, classes: Sequence[str]) -> list[str]:
    """``k`` classes drawn without replacement (repeating once all are drawn) for the gate set of ``seed``."""
    rng = np.random.default_rng([seed, k, 0x6A7E])
    order = [classes[int(i)] for i in rng.permutation(len(classes))]
    return [order[i % len(order)] for i in range(k)]


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    settings = settings_of(args)
    policy = privacy_policy()
    n_syn = args.n_synthetic
    print(f"# red team: {args.n_train} train, {args.n_holdout} holdout, {n_syn} synthetic, {args.shape}^3, seeds "
          f"{args.seeds}, private seeds {args.private_seeds}, {args.threads} thread(s), embedding steps "
          f"{settings.embedding.steps}, n_boot {settings.n_boot}; privacy rules of the default policy: "
          f"{len(policy.rules)}\n", flush=True)
    detections: list[tuple[int, Detection, Audit]] = []
    unseen: dict[int, Audit] = {}
    gates: list[tuple[int, int, list[str], Audit]] = []
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_redteam_") as tmp:
        work = Path(tmp)
        for seed in sorted({*args.seeds, *args.private_seeds}):
            t0 = time.perf_counter()
            co = make_cohorts(seed, args)
            print(f"cohort {seed}: {sum(map(len, (co.train, co.holdout, co.unseen, co.hosts)))} phantoms in "
                  f"{time.perf_counter() - t0:.1f} s", flush=True)
            unseen[seed] = run_audit(f"s{seed}_unseen", co, co.unseen, work, settings, args.only, policy)
            if seed not in args.seeds:
                continue
            cases, truth = hide_copies(co.unseen[:n_syn - len(args.classes)], co.train, args.classes,
                                       len(args.classes), seed, hosts=co.hosts)
            audit = run_audit(f"s{seed}_classes", co, cases, work, settings, args.only, policy)
            detections += [(seed, d, audit) for d in detect(audit.results, truth)]
            for k in args.gate_copies:
                chosen = gate_classes(seed, k, args.classes)
                cases, _ = hide_copies(co.unseen[:n_syn - k], co.train, chosen, k, seed, hosts=co.hosts)
                gates.append((seed, k, chosen, run_audit(f"s{seed}_gate{k}", co, cases, work, settings, args.only,
                                                         policy)))
    wall = time.perf_counter() - t_start
    figures = report(args, detections, unseen, gates)
    figures["wall_time_s"] = round(wall, 1)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


def report(args: argparse.Namespace, detections: list[tuple[int, Detection, Audit]], unseen: dict[int, Audit],
           gates: list[tuple[int, int, list[str], Audit]]) -> dict[str, Any]:
    """Print the tables; the headline figures (flat) for ``--json``."""
    figures: dict[str, Any] = {"n_train": args.n_train, "n_holdout": args.n_holdout, "n_synthetic": args.n_synthetic,
                               "shape": args.shape, "seeds": " ".join(map(str, args.seeds))}
    print(f"\n## detection per class (one copy of each class among {args.n_synthetic - len(args.classes)} unseen)\n")
    rows = [detection_row(d, a, seed) for seed, d, a in sorted(detections, key=lambda x: (x[1].copy.red_team_class,
                                                                                          x[0]))]
    print_table(("class", "seed", "detected", "listed by", "score", "threshold", "old NCC / tau", "old flag",
                 "params"), rows)
    summary = []
    for name in args.classes:
        mine = [(d, a) for _, d, a in detections if d.copy.red_team_class == name]
        hits = [d.detected for d, a in mine if has_copy_rule(a)]
        old = [old_rule(a.results, d.copy.synthetic)[1] for d, a in mine]
        figures[f"detection_rate_{name}_frac"] = round(sum(hits) / len(hits), 3) if hits else "n/a"
        summary.append((name, f"{sum(hits)}/{len(hits)}" if hits else "n/a", f"{sum(old)}/{len(old)}"))
    all_hits = [d.detected for _, d, a in detections if has_copy_rule(a)]
    figures["detection_rate_all_frac"] = round(sum(all_hits) / len(all_hits), 3) if all_hits else "n/a"
    print_table(("class", "detected (per-copy rule)", "flagged by the old share rule"), summary)

    print("## unseen patients only (every copy called is false)\n")
    rows = []
    for seed, a in sorted(unseen.items()):
        counts = n_copies(a.results)
        share = metric(a.results, "privacy.memorization", "flagged_fraction")
        rows.append((str(seed), *(fmt(c, 0) for c in counts), fmt(share), a.gate.verdict, failed_rules(a.gate),
                     f"{a.seconds:.1f}"))
    print_table(("seed", *(f"{c.split('.')[1]} n_copies" for c in COPY_CHECKS), "memorization flagged share",
                 "privacy verdict", "failed rules", "audit s"), rows)
    in_seeds = [unseen[s] for s in args.seeds if s in unseen]
    for check in COPY_CHECKS:
        values = [v for a in in_seeds if (v := metric(a.results, check, "n_copies")) is not None]
        figures[f"unseen_false_copies_{check.split('.')[1]}"] = sum(values) if values else "n/a"
    shares = [v for a in in_seeds if (v := metric(a.results, "privacy.memorization", "flagged_fraction")) is not None]
    figures["unseen_memorization_flagged_share_frac"] = round(float(np.mean(shares)), 4) if shares else "n/a"

    print(f"## gate: copies hidden among unseen patients ({args.n_synthetic} cases per set), default policy's "
          f"privacy rules\n")
    rows = [(str(seed), str(k), ", ".join(chosen), a.gate.verdict, failed_rules(a.gate), f"{a.seconds:.1f}")
            for seed, k, chosen, a in gates]
    print_table(("seed", "copies", "classes", "verdict", "failed rules", "audit s"), rows)
    for k in args.gate_copies:
        verdicts = [a.gate.verdict for _, kk, _, a in gates if kk == k]
        figures[f"gate_{k}_copies_failed"] = f"{verdicts.count('fail')}/{len(verdicts)}"

    print("## private generator stand-in (unseen-only set, its own cohort per seed)\n")
    private = [(s, unseen[s]) for s in args.private_seeds]
    print_table(("seed", "verdict", "failed rules"), [(str(s), a.gate.verdict, failed_rules(a.gate))
                                                      for s, a in private])
    passes = sum(a.gate.verdict == "pass" for _, a in private)
    figures["private_generator_pass_rate"] = f"{passes}/{len(private)}"

    seconds = [a.seconds for a in {id(a): a for a in [*unseen.values(), *(g[3] for g in gates),
                                                      *(x[2] for x in detections)]}.values()]
    figures["audits"] = len(seconds)
    figures["audit_mean_s"] = round(float(np.mean(seconds)), 1)
    figures["audit_max_s"] = round(float(np.max(seconds)), 1)
    print(f"{len(seconds)} audits: mean {np.mean(seconds):.1f} s, max {np.max(seconds):.1f} s\n", flush=True)
    return figures


if __name__ == "__main__":
    main()
