"""Radiomics cost: extraction throughput with 1 and 2 worker processes, and a first audit against a second audit of
a new synthetic set on the same workspace cache.

Run: ``python benchmarks/bench_radiomics.py [--n 40] [--shape 64] [--workers 1 2]`` (the target: 40 cases at 64^3 on
2 cores), or ``--smoke`` (16 cases at 24^3, under a minute).

Cohorts are phantom head-and-neck CTs (``make_ct_phantom`` + ``preprocess_case`` at ``--shape``^3, spacing 240/shape
mm): ``n`` real cases split into train (n/2), holdout (n/4) and other real patients (n/4) renamed as synthetic set A.
Set B is set A blurred and brightened: new bytes, so none of it can come from the cache.

Extraction: ``radiomics_features`` on a fresh cache for each worker count, i.e. every case of train, holdout and A
(``n`` cases; loading, model range, body mask and cache-key hashing included, and so is a pool's start-up: spawned
workers import numpy, SimpleITK and pyradiomics, not torch). cases/minute = n / seconds. The features of every worker
count must equal those of the first.

Audits: the check's ``run`` on A with an empty cache (extracts train, holdout and A), then on a fresh context with B
on the same cache (extracts B only; train and holdout come from the cache): seconds of each and their ratio.
``--json PATH`` also writes the headline figures as a flat JSON object (name -> number or string).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from benchlib import print_table

from synthrelease.data.cohort import Cohort

# The audit framework (and torch with it) is imported inside functions: a spawned worker re-imports the main script's
# module-level imports, and the CLI's workers import no torch either, so the pool start-up timed here is theirs.
if TYPE_CHECKING:
    from synthrelease.checks import CheckResult
    from synthrelease.checks.fidelity.radiomics import CohortFeatures
    from synthrelease.data.case import Case


def make_cases(count: int, shape: int) -> list[Case]:
    from synthrelease.data.phantoms import make_ct_phantom
    from synthrelease.data.preprocess import PreprocessConfig, preprocess_case

    cfg = PreprocessConfig.for_modality("ct", spacing=(240.0 / shape,) * 3, shape=(shape,) * 3)
    return [preprocess_case(make_ct_phantom(i, shape=shape, seed=0), cfg)[0] for i in range(count)]


def degraded(case: Case) -> Case:
    """Blurred (sigma 1 voxel) and brightened by 0.3 on the model range inside the body; background kept at -1."""
    from scipy import ndimage

    from synthrelease.checks.rois import body_from_model

    image = np.asarray(case.image, dtype=np.float32)
    body = body_from_model(image)
    out = np.clip(ndimage.gaussian_filter(image, sigma=(0, 1, 1, 1)) + 0.3, -1, 1).astype(np.float32)
    out[:, ~body] = -1.0
    return case.with_(image=out)


def renamed(cases: Sequence[Case]) -> Cohort:
    return Cohort.from_cases([c.with_(case_id=f"syn{i:04d}") for i, c in enumerate(cases)], name="synthetic")


def main() -> None:
    from synthrelease.checks import AuditContext, AuditSettings
    from synthrelease.checks.fidelity.radiomics import RadiomicsCheck, radiomics_features

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=40, help="real cases: train n/2, holdout n/4, synthetic set n/4")
    parser.add_argument("--shape", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to time extraction")
    parser.add_argument("--audit-workers", type=int, default=None, help="workers of the audits (default: the most)")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--smoke", action="store_true", help="16 cases at 24^3, 200 bootstrap draws")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here (flat JSON object)")
    args = parser.parse_args()
    if args.smoke:
        args.n, args.shape, args.n_boot = 16, 24, 200
    n_train, n_hold = args.n // 2, args.n // 4
    n_syn = args.n - n_train - n_hold
    audit_workers = args.audit_workers or max(args.workers)
    print(f"# fidelity.radiomics: {args.n} real cases at {args.shape}^3 (train {n_train}, holdout {n_hold}, "
          f"synthetic {n_syn}), extraction with {args.workers} workers, audits with {audit_workers}\n", flush=True)

    t0 = time.perf_counter()
    cases = make_cases(args.n, args.shape)
    print(f"phantoms: {time.perf_counter() - t0:.1f} s\n", flush=True)
    train = Cohort.from_cases(cases[:n_train], name="train")
    holdout = Cohort.from_cases(cases[n_train:n_train + n_hold], name="holdout")
    set_a = renamed(cases[n_train + n_hold:])
    set_b = renamed([degraded(c) for c in cases[n_train + n_hold:]])

    rows = []
    figures: dict[str, float | str] = {}
    reference: dict[str, CohortFeatures] | None = None
    with tempfile.TemporaryDirectory(prefix="bench_radiomics_") as tmp:
        work = Path(tmp)
        for w in args.workers:
            ctx = AuditContext(train, holdout, set_a, out_dir=work / f"x{w}", cache_dir=work / f"xcache{w}", seed=0,
                               settings=AuditSettings(workers=w, n_boot=args.n_boot))
            t0 = time.perf_counter()
            feats = radiomics_features(ctx)
            dt = time.perf_counter() - t0
            same = "reference" if reference is None else ("yes" if feats == reference else "NO")
            reference = reference or feats
            n_feat = int(np.mean([len(r) for f in feats.values() for r in f.rows]))
            rows.append((f"extraction, {w} worker(s)", f"{dt:.1f}", f"{args.n / dt * 60:.1f}",
                         f"{dt / args.n:.3f}", f"features per case {n_feat}; identical to the first: {same}"))
            figures.update({f"extraction_{w}_workers_s": round(dt, 2),
                            f"extraction_{w}_workers_cases_per_min": round(args.n / dt * 60, 1),
                            f"extraction_{w}_workers_identical": same, "features_per_case": n_feat})

        settings = AuditSettings(workers=audit_workers, n_boot=args.n_boot)
        results: dict[str, tuple[float, CheckResult]] = {}
        for label, syn in (("A", set_a), ("B", set_b)):
            ctx = AuditContext(train, holdout, syn, out_dir=work / f"audit{label}", cache_dir=work / "cache", seed=0,
                               settings=settings)
            t0 = time.perf_counter()
            res = RadiomicsCheck().run(ctx)
            results[label] = (time.perf_counter() - t0, res)
    (t_a, res_a), (t_b, res_b) = results["A"], results["B"]
    for label, extracted, (dt, res) in (("first audit (set A, empty cache)", args.n, results["A"]),
                                        ("second audit (set B, same cache)", n_syn, results["B"])):
        note = (f"real from cache: {res.evidence.get('real_features_cached')}" if res.status.value == "ok"
                else f"{res.status.value}: {res.reason}")
        rows.append((label, f"{dt:.1f}", f"{extracted / dt * 60:.1f}", f"{dt / extracted:.3f}", note))
    print(f"## extraction and audits ({args.shape}^3; cases/minute and s/case over the cases each row extracts)\n")
    print_table(("step", "seconds", "cases/minute", "s/case", "note"), rows)
    figures.update(first_audit_s=round(t_a, 2), second_audit_s=round(t_b, 2), second_over_first_x=round(t_b / t_a, 3))
    if res_b.status.value == "ok":
        cached = res_b.evidence.get("real_features_cached")
        figures["second_audit_real_from_cache"] = (", ".join(f"{k} {v}" for k, v in cached.items())
                                                   if isinstance(cached, dict) else str(cached))
    print(f"second / first audit time: {t_b / t_a:.2f} (extracting {n_syn} of {args.n} cases: "
          f"{n_syn / args.n:.2f} of the work, plus the classifier and bootstraps of each audit)\n")
    metric_rows = []
    for label, res in (("A (unseen real patients)", res_a), ("B (blurred + brightened)", res_b)):
        m = res.metrics
        if res.status.value != "ok":
            metric_rows.append((label, res.status.value, "", "", "", ""))
            continue
        auc = m["classifier_auc"]
        figures[f"set_{label[0].lower()}_classifier_auc"] = round(auc.value, 3)
        metric_rows.append((label, f"{auc.value:.3f} [{auc.ci_low:.3f}, {auc.ci_high:.3f}]", f"{m['frd'].value:.1f}",
                            f"{m['frd_holdout'].value:.1f}", f"{m['mean_abs_r'].value:.3f}",
                            f"{m['top10_abs_r'].value:.3f}"))
    print_table(("set", "classifier AUC [95% CI]", "FRD", "FRD holdout", "mean |r|", "top-10 |r|"), metric_rows)
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
