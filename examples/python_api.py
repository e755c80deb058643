"""The quickstart through the Python API: the same workflow as ``examples/quickstart.sh``, library calls only.

phantoms -> ingest -> train -> sample -> audit (the release gate) -> on PASS: keygen, export, verify, load

    python examples/python_api.py --out api-run          # a laptop run on the CPU (60 patients at 32^3)
    python examples/python_api.py --out /tmp/api --cases 8 --shape 16 --holdout 0.25 --steps 6 --ae-steps 3 \
        --samples 4 --sample-steps 5 --embedding-steps 2 --only integrity --only privacy --only fidelity
        # a smoke run in a few minutes (without the utility check's three segmentation models); the gate fails

Every ``synthrelease`` command is a thin layer over these calls. The script runs to its end whatever the verdict
and exits 0 (the verdict is printed last); bad input exits 2 with one line saying what to fix.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from synthrelease.audit import audit_workspace
from synthrelease.checks import AuditSettings
from synthrelease.data.ingest import IngestOptions, ingest
from synthrelease.data.phantoms.cohort import write_phantom_cohort
from synthrelease.errors import InputError
from synthrelease.generators.runs import train_run
from synthrelease.generators.sampling import sample_set
from synthrelease.release import ExportRefused, export_package, generate_keypair, load, verify_package

CONFIGS = Path(__file__).resolve().parent / "configs"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="a new folder for everything this run writes")
    p.add_argument("--modality", choices=("ct", "mri"), default="ct")
    p.add_argument("--cases", type=int, default=60, help="phantom patients (default 60)")
    p.add_argument("--shape", type=int, default=32, help="grid size per axis (default 32)")
    p.add_argument("--holdout", type=float, default=0.35,
                   help="share of patients held out; the default policy asks for at least 20 (default 0.35)")
    p.add_argument("--config", type=Path, default=None,
                   help="generator config (default examples/configs/ldm-<modality>-cpu32.toml)")
    p.add_argument("--steps", type=int, default=None, help="override the config's training steps")
    p.add_argument("--ae-steps", type=int, default=None, help="override the config's autoencoder steps")
    p.add_argument("--samples", type=int, default=40, help="synthetic cases to sample (default 40)")
    p.add_argument("--sample-steps", type=int, default=50, help="DDIM steps (default 50)")
    p.add_argument("--embedding-steps", type=int, default=None, help="audit encoder steps (default: the audit's)")
    p.add_argument("--only", action="append", default=[],
                   help="audit only this family or check (repeatable); a partial audit never passes a release policy "
                        "whose rules need the others")
    p.add_argument("--policy", default="default", help="release policy: a shipped name or a TOML file")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def stage(text: str) -> None:
    print(f"\n== {text}", flush=True)


def training_config(args: argparse.Namespace) -> Path:
    """The config file to train with: the given (or example) file, with --steps / --ae-steps written into a copy."""
    import tomllib

    import tomli_w

    path = args.config or CONFIGS / f"ldm-{args.modality}-cpu32.toml"
    if args.steps is None and args.ae_steps is None:
        return Path(path)
    data = tomllib.loads(Path(path).read_text())
    data.update({k: v for k, v in (("steps", args.steps), ("ae_steps", args.ae_steps)) if v is not None})
    copy = args.out / "train-config.toml"
    copy.write_text(tomli_w.dumps(data))
    return copy


def run(args: argparse.Namespace) -> str:
    """The whole workflow; returns the verdict ('pass' or 'fail')."""
    out: Path = args.out
    if out.exists():
        raise InputError("already exists", where=out, fix="give a new folder to --out")
    out.mkdir(parents=True)
    fmt = "dicom" if args.modality == "ct" else "brats"

    stage(f"1/7 phantoms: {args.cases} fake {args.modality} patients at {args.shape}^3 ({fmt})")
    source = write_phantom_cohort(out / "source", modality=args.modality, cases=args.cases, shape=args.shape,
                                  seed=args.seed, fmt=fmt)

    stage("2/7 ingest: de-identify, pseudonymize, preprocess, split by patient")
    ws = ingest(source, out / "WS", modality=args.modality,
                options=IngestOptions(holdout=args.holdout, seed=args.seed))
    print(f"workspace {ws.root}: {len(ws.splits.train)} training and {len(ws.splits.holdout)} unseen patients")

    config = training_config(args)
    stage(f"3/7 train: latent diffusion (ldm) on the training split ({config})")
    info = train_run(ws, "ldm", name="ldm", config_file=config)
    print(f"{info.steps} steps in {info.seconds:.0f} s; final losses {info.final_losses}")

    set_name = f"ldm-s{args.seed + 1}"
    stage(f"4/7 sample: {args.samples} synthetic cases into WS/synthetic/{set_name}")
    set_dir = sample_set(ws, "ldm", n=args.samples, seed=args.seed + 1, name=set_name, sampler="ddim",
                         steps=args.sample_steps)
    print(f"{set_dir} (nnU-Net raw layout, provenance.json)")

    stage(f"5/7 audit: {', '.join(args.only) or 'every check'}, judged by the policy {args.policy!r}")
    settings = AuditSettings()
    if args.embedding_steps is not None:
        settings = replace(settings, embedding=replace(settings.embedding, steps=args.embedding_steps))
    outcome = audit_workspace(ws, set_name, policy=args.policy, settings=settings, only=args.only)  # gating seed
    report = outcome.report
    gate = report["gate"]
    print(f"verdict {report['verdict'].upper()}: {gate['n_failed']} rules failed, {gate['n_warned']} warnings "
          f"of {gate['n_rules']}")
    for rule in report["rules"]:
        if not rule["passed"]:
            print(f"  {rule['severity']:4}  {rule['metric']}: {rule['reason'] or rule['why']}")
    print(f"report: {outcome.path / 'report.html'} (real patients' images inside: keep it in the hospital)")

    package = out / "release" / f"synth-{args.modality}-1.0"
    package.parent.mkdir()
    if not outcome.passed:
        stage("6/7 export: refused, the gate failed")
        try:  # export checks the latest audit itself: it raises and writes nothing
            export_package(ws, set_name, package)
        except ExportRefused as exc:
            print(f"export refused (nothing written): {exc.problem}")
        return str(report["verdict"])

    stage("6/7 keygen + export: the signed release package and its .tar.gz")
    (out / "keys").mkdir()
    private, public = generate_keypair(out / "keys" / "publisher.key")
    exported = export_package(ws, set_name, package, key=private, tar=True)
    print(f"{exported.path}: {exported.n_cases} cases, {exported.n_files} files, tarball {exported.tarball}")

    stage("7/7 verify + load: what the recipient runs, with the publisher's public key")
    result = verify_package(package, key=public)
    print("valid" if result.valid else "\n".join(result.lines()))
    items = load(package, key=public)  # verifies again; one dict per case, ready for MONAI's LoadImaged
    print(f"load(): {len(items)} cases, first {items[0]}")
    return str(report["verdict"])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        verdict = run(args)
    except InputError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return 2
    print(f"\nverdict: {verdict.upper()} (policy {args.policy})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
