"""The per-copy rules' two error rates: how often a set of unseen patients fails them, how often one copy passes.

Run: ``python benchmarks/bench_copynull.py [--seeds 0 1 2 3 4] [--splits 400] [--threads 2] [--json PATH]``, or
``--quick`` (a smoke run of a few minutes whose numbers are not the measured ones).

Per seed, one phantom cohort on the demo's grid (32^3 CT, 240 mm field of view): ``--n-train`` training patients,
``--n-holdout`` + ``--n-synthetic`` unseen patients (the pool), and one copy of every red-team class
(``checks.privacy.redteam``). One ``AuditContext`` searches the pool (as its holdout) and the copies (as its synthetic
set) against the training patients, exactly as an audit searches a holdout: the registered copy search
(``privacy.memorization``), the label maps' aligned Dice (``privacy.mask_memorization``) and the tumour scores
(``privacy.tumour_memorization``). The searches are then reused across ``--splits`` random splits of the pool into a
calibration holdout of ``--n-holdout`` and a judged set of ``--n-synthetic`` unseen patients:

- **false alarm**: the split's unseen set holds a case beyond its rule's line (the line calibrated on that split's
  holdout for ``--n-synthetic`` judged cases, alpha of the audit's settings). A set of unseen patients must fail a
  rule in at most ``alpha`` (5%) of draws;
- **detection**: each copy judged against the same split's line. One copy hidden among unseen patients must fail
  the gate in at least 95% of draws.

Splits of one cohort share its patients, so their rates are correlated; the table gives each seed's rate and the
pooled one. The copy search is fp32/fp64 numpy and single-threaded SimpleITK: its verdicts do not depend on the CPU.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from benchlib import print_table
from threadpoolctl import threadpool_limits

from synthrelease.checks import AuditContext, AuditSettings
from synthrelease.checks.copysearch import calibrate
from synthrelease.checks.embedding import EmbeddingConfig
from synthrelease.checks.privacy.redteam import RED_TEAM_CLASSES, elastic_by, hide_copies
from synthrelease.checks.privacy.tumour import JUDGED, best_tumour_matches, tumour_cubes
from synthrelease.data.cohort import Cohort
from synthrelease.data.phantoms import make_ct_phantom
from synthrelease.data.preprocess import PreprocessConfig, preprocess_case

FOV_MM = 240.0
N_HOSTS = 8
RULES = ("memorization", "mask_memorization", "tumour_memorization")


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-train", type=int, default=80)
    parser.add_argument("--n-holdout", type=int, default=60)
    parser.add_argument("--n-synthetic", type=int, default=120, help="unseen patients per judged set")
    parser.add_argument("--shape", type=int, default=32)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--splits", type=int, default=400, help="random holdout / judged splits of each pool")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--embedding-steps", type=int, default=None, help="encoder steps (default: the check's)")
    parser.add_argument("--classes", nargs="+", default=None, choices=list(RED_TEAM_CLASSES),
                        help="red-team classes to hide (default: all)")
    parser.add_argument("--elastic", type=float, nargs="+", default=[], metavar="VOXELS",
                        help="also hide elastic warps of these largest displacements (classes elastic_<V>vox)")
    parser.add_argument("--copies-per-class", type=int, default=1, help="copies of each class, of distinct patients")
    parser.add_argument("--quick", action="store_true", help="20 train, 10 holdout, 10 judged, seed 0, 50 splits")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here (flat JSON object)")
    args = parser.parse_args(argv)
    if args.quick:
        args.n_train, args.n_holdout, args.n_synthetic = 20, 10, 10
        args.seeds, args.splits = [0], 50
        args.embedding_steps = args.embedding_steps or 2
    return args


def class_names(args: argparse.Namespace) -> tuple[str, ...]:
    """The classes to hide: ``--classes`` (default all), then an ``elastic_<V>vox`` class per ``--elastic``
    magnitude (added to the red-team kit's registry for this run)."""
    names = list(args.classes or RED_TEAM_CLASSES)
    for magnitude in args.elastic:
        name = f"elastic_{magnitude:g}vox"
        RED_TEAM_CLASSES.setdefault(name, elastic_by(magnitude))
        names.append(name)
    return tuple(dict.fromkeys(names))


def scores(seed: int, args: argparse.Namespace, settings: AuditSettings, work: Path) -> dict[str, Any]:
    """One cohort's searches: per rule, the pool's and the copies' score rows (``(N, R)``)."""
    cfg = PreprocessConfig.for_modality("ct", spacing=(FOV_MM / args.shape,) * 3, shape=(args.shape,) * 3)
    n_pool = args.n_holdout + args.n_synthetic
    cases = [preprocess_case(make_ct_phantom(i, shape=args.shape, seed=seed, fov_mm=FOV_MM), cfg)[0]
             for i in range(args.n_train + n_pool + N_HOSTS)]
    train, pool, hosts = cases[:args.n_train], cases[args.n_train:args.n_train + n_pool], cases[args.n_train + n_pool:]
    classes = class_names(args)
    copies, truth = hide_copies([], train, classes, len(classes) * args.copies_per_class, seed, hosts=hosts)
    ctx = AuditContext(Cohort.from_cases(train, name="train"), Cohort.from_cases(pool, name="holdout"),
                       Cohort.from_cases(copies, name="synthetic"), out_dir=work / f"s{seed}",
                       cache_dir=work / f"cache{seed}", seed=seed, settings=settings)
    out: dict[str, Any] = {"classes": [t.red_team_class for t in sorted(truth, key=lambda t: t.synthetic)]}
    order = np.argsort(ctx.synthetic.case_ids)  # the copies in the order of their ids (as ``classes``)
    out["memorization"] = (ctx.copy_scores("holdout").ncc, ctx.copy_scores("synthetic").ncc[order])
    out["mask_memorization"] = (ctx.mask_matches("holdout", "train").column(0)[0].numpy()[:, None],
                                ctx.mask_matches("synthetic", "train").column(0)[0].numpy()[order][:, None])
    train_c, pool_c, copy_c = (tumour_cubes(ctx, w) for w in ("train", "holdout", "synthetic"))
    refs = train_c.subset(train_c.present)
    template = refs.around.mean(dim=0)
    pool_t = np.full((n_pool, len(JUDGED)), np.nan)
    copy_t = np.full((len(copies), len(JUDGED)), np.nan)
    for cubes, rows in ((pool_c, pool_t), (copy_c, copy_t)):
        if cubes.present.any():
            rows[cubes.present] = best_tumour_matches(cubes.subset(cubes.present), refs, template)[0][:, list(JUDGED)]
    out["tumour_memorization"] = (pool_t, copy_t[order])
    return out


def rates(found: dict[str, Any], args: argparse.Namespace, alpha: float, seed: int) -> dict[str, Any]:
    """Per rule: the share of splits whose unseen set holds a false copy, and per class the share of splits whose
    line the copy passes."""
    rng = np.random.default_rng([seed, 0xC0B1])
    n_pool = args.n_holdout + args.n_synthetic
    false = {rule: 0 for rule in RULES}
    false_any = 0
    n_copies = len(found["classes"])
    detected = np.zeros(n_copies, dtype=np.int64)
    margins = np.zeros((args.splits, n_copies))  # the copy's largest statistic minus its rule's line
    for b in range(args.splits):
        perm = rng.permutation(n_pool)
        cal, judged = perm[:args.n_holdout], perm[args.n_holdout:]
        any_false = False
        margins[b] = -np.inf
        for rule in RULES:
            pool_rows, copy_rows = found[rule]
            keep = ~np.isnan(pool_rows).all(axis=1)
            c, j = cal[keep[cal]], judged[keep[judged]]
            line = calibrate(pool_rows[c], args.n_synthetic, alpha)
            if (line.statistic(pool_rows[j])[0] > line.threshold).any():
                false[rule] += 1
                any_false = True
            margins[b] = np.maximum(margins[b], line.statistic(copy_rows)[0] - line.threshold)
        false_any += any_false
        detected += margins[b] > 0
    # per class by name (every seed draws its copies in its own order): the mean over the class's copies of the
    # share of splits each passes, and the median margin over its copies and splits
    names = np.array(found["classes"])
    return {"false": {k: v / args.splits for k, v in false.items()}, "false_any": false_any / args.splits,
            "detected": {n: float(np.mean(detected[names == n])) / args.splits for n in dict.fromkeys(names)},
            "margin": {n: float(np.median(margins[:, names == n])) for n in dict.fromkeys(names)}}


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    emb = EmbeddingConfig() if args.embedding_steps is None else EmbeddingConfig(steps=args.embedding_steps)
    settings = AuditSettings(embedding=emb)
    alpha = settings.copies.alpha
    print(f"# per-copy rules' error rates: {args.n_train} train, pools of {args.n_holdout} + {args.n_synthetic} "
          f"unseen, {args.shape}^3, seeds {args.seeds}, {args.splits} splits each, alpha {alpha}, "
          f"{args.threads} thread(s)\n", flush=True)
    per_seed: dict[int, dict[str, Any]] = {}
    classes: list[str] = []
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_copynull_") as tmp:
        for seed in args.seeds:
            t0 = time.perf_counter()
            found = scores(seed, args, settings, Path(tmp))
            classes = found["classes"]
            per_seed[seed] = rates(found, args, alpha, seed)
            print(f"seed {seed}: searched in {time.perf_counter() - t0:.1f} s; false alarm (any rule) "
                  f"{per_seed[seed]['false_any']:.3f}", flush=True)
    wall = time.perf_counter() - t_start

    print("\n## unseen-only sets: share of splits failing each per-copy rule (goal <= alpha)\n")
    rows = [(str(s), *(f"{r['false'][rule]:.3f}" for rule in RULES), f"{r['false_any']:.3f}")
            for s, r in per_seed.items()]
    pooled = {rule: float(np.mean([r["false"][rule] for r in per_seed.values()])) for rule in RULES}
    pooled_any = float(np.mean([r["false_any"] for r in per_seed.values()]))
    rows.append(("all", *(f"{pooled[rule]:.3f}" for rule in RULES), f"{pooled_any:.3f}"))
    print_table(("seed", *RULES, "any"), rows)

    print("## one copy: share of splits whose line it passes (goal >= 0.95), and its median margin\n")
    print("(margin: the copy's largest statistic over the three rules minus that rule's line)\n")
    detected = {name: float(np.mean([r["detected"][name] for r in per_seed.values()])) for name in classes}
    rows = [(name, *(f"{per_seed[s]['detected'][name]:.2f} ({per_seed[s]['margin'][name]:+.1f})" for s in per_seed),
             f"{detected[name]:.3f}") for name in sorted(set(classes))]
    print_table(("class", *(f"seed {s}" for s in per_seed), "all"), rows)
    print(f"wall time {wall:.0f} s")

    figures: dict[str, Any] = {"n_train": args.n_train, "n_holdout": args.n_holdout, "n_synthetic": args.n_synthetic,
                               "seeds": " ".join(map(str, args.seeds)), "splits": args.splits,
                               "false_alarm_any_frac": round(pooled_any, 4), "wall_time_s": round(wall, 1)}
    figures.update({f"false_alarm_{rule}_frac": round(v, 4) for rule, v in pooled.items()})
    figures.update({f"detection_{name}_frac": round(detected[name], 4) for name in classes})
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
