"""The built-in demo release on phantom data: every stage that exists, end to end, in one folder.

phantoms (fake patients with planted PHI) -> ingest (de-identify, pseudonymize, preprocess, split) -> PHI search of
the workspace -> train a generator (by default a conditional WGAN-GP whose label maps come from a statistical shape
model; or a latent diffusion model) -> sample a synthetic cohort -> full audit under the default
policy -> (gate passed) signed package exported and verified -> the same audit of a copycat negative control
(copies of training patients), on which the gate must close -> summary.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from synthrelease.checks.context import AuditSettings
from synthrelease.data.ingest import IngestOptions, ingest
from synthrelease.data.leakscan import find_strings
from synthrelease.data.nnunet import read_nnunet
from synthrelease.data.phantoms.cohort import PLANTED_PHI_FILE, write_phantom_cohort
from synthrelease.data.summary import summarize_workspace
from synthrelease.data.workspace import Workspace
from synthrelease.errors import InputError
from synthrelease.runtime.fs import atomic_directory

__all__ = ["MARKER", "demo_holdout", "run_demo"]

MARKER = ".synthrelease-demo"
Info = Callable[[str], None]
Progress = Callable[[str, int, int], None]


def _synthetic_summary(path: Path) -> dict[str, Any]:
    cohort = read_nnunet(path)
    present = {name: 0 for name in cohort.schema.foreground}
    for case in cohort:
        for name, value in cohort.schema.foreground.items():
            present[name] += int(np.any(case.labels == value))
    return {"path": str(path), "n_cases": len(cohort), "cases_with_label": present,
            "provenance": json.loads((path / "provenance.json").read_text())}


HEADLINE = ("integrity.cohort.n_holdout", "privacy.memorization.flagged_fraction",
            "privacy.mask_memorization.flagged_fraction", "privacy.dcr.overfitting_p", "privacy.mia.auc",
            "privacy.mia.auc_ci_high", "privacy.metadata.n_findings", "fidelity.diversity.ms_ssim_excess",
            "fidelity.radiomics.classifier_auc", "utility.segmentation.dice_ratio")


def _audit_summary(ws: Workspace, name: str, progress: Progress | None,
                   settings: AuditSettings | None, fail_fast: bool = False) -> dict[str, Any]:
    """The audit of a set under the ``default`` policy: verdict, failed rules, headline metrics, report path.
    With ``fail_fast``, the checks left after the first failing family are listed under ``not_run``."""
    from synthrelease.audit import audit_workspace

    outcome = audit_workspace(ws, name, policy="default", progress=progress, settings=settings,
                              fail_fast=fail_fast)
    report = outcome.report
    not_run = sorted(n for n, c in report["checks"].items() if c.get("not_run"))
    judged = [r for r in report["rules"] if not r["passed"] and r.get("judged", True)]
    return {"verdict": report["verdict"], "report_html": str(outcome.path / "report.html"),
            "failed_rules": [{"metric": r["metric"], "value": r["value"], "reason": r["reason"]}
                             for r in judged if r["severity"] == "fail"],
            "not_run": not_run,
            "warnings": [r["metric"] for r in judged if r["severity"] == "warn"],
            "metrics": {m: report["metrics"].get(m) for m in HEADLINE}}


def _export_and_verify(ws: Workspace, name: str, out: Path, seed: int) -> dict[str, Any]:
    """Sign the package with a fresh demo key, export it atomically and verify it with the public key."""
    from synthrelease.release import export_package, generate_keypair, verify_package

    private, public = generate_keypair(out / "demo-signing-key.pem")
    package = out / "package" / "synthrelease-demo"
    package.parent.mkdir()
    exported = export_package(ws, name, package, key=private, tar=True, date="2026-01-01")
    result = verify_package(package, key=public)
    return {"package": str(package), "tarball": str(exported.tarball), "public_key": str(public),
            "n_files": exported.n_files, "verified": result.valid, "problems": result.lines()}


COPYCAT_SAMPLES = 40  # copies in the control: enough for every privacy rule to fail it, at a third of 120's cost


def _copycat_control(ws: Workspace, n: int, seed: int, progress: Progress | None,
                     settings: AuditSettings | None) -> dict[str, Any]:
    """A copycat negative control (perturbed copies of training patients; at most ``COPYCAT_SAMPLES``), audited under
    the same policy and settings: the gate must close on it. The audit stops once the verdict is fail
    (``fail_fast``): copies fail the privacy rules, and the segmentation arms (about five minutes on 2 cores) could
    not turn that verdict."""
    from synthrelease.generators.runs import train_run
    from synthrelease.generators.sampling import sample_set

    train_run(ws, "copycat", name="copycat-control")
    sample_set(ws, "copycat-control", n=min(n, COPYCAT_SAMPLES), seed=seed + 2, name="copycat-control")
    return _audit_summary(ws, "copycat-control", progress, settings, fail_fast=True)


# wgan on shape-model masks (default): its set passes the default policy on the demo's 140 phantoms (dice_ratio
# 0.711, DCR p 0.49, MIA 0.56); ldm: joint images and masks, private by the audit but of little use yet (dice_ratio
# 0.27); benchmarks/RESULTS.md
DEMO_GENERATORS = {
    "wgan": "a conditional WGAN-GP (wgan) on label maps from a statistical shape model (shape)",
    "ldm": "latent diffusion (ldm)",
}
DEMO_STEPS = {"ldm": 600, "wgan": 400}


def demo_config(generator: str, steps: int, seed: int, *, cpu_bf16: bool = True) -> str:
    """The demo's training config (TOML). ``ldm``: a quarter of the steps for the autoencoder. ``wgan``: its default
    32^3 CPU model (batch 2, channels 16-32-64) on masks of the ``shape`` model (10 modes, fitted in about a second on
    a grid pooled 2x: at full resolution its masks lean towards the training patients' and DCR found it, p 0.68-0.74
    against 0.58-0.64 pooled), with the mode-seeking term (a short run ignores z otherwise, and its images come out
    more alike than real patients are), sampled with its last weights (``ema_decay = 0``: the average failed the DCR
    rule, p 0.66), with ``cpu_bf16``: under bf16 autocast where the CPU runs bf16 natively (1.6x faster; 400 steps in
    the minutes 300 took in fp32). benchmarks/RESULTS.md, 2026-12-07."""
    if generator == "ldm":
        return f'generator = "ldm"\nsteps = {steps}\nae_steps = {max(1, steps // 4)}\nseed = {seed}\n'
    return (f'generator = "wgan"\nsteps = {steps}\nseed = {seed}\nmask_generator = "shape"\n'  # 32^3 defaults
            f'mask = {{modes = 10, factor = 2}}\nmode_seeking_weight = 1.0\nema_decay = 0.0\n'
            f'cpu_bf16 = {"true" if cpu_bf16 else "false"}\n')


# Unseen patients the demo holds out: with 20 the upper bounds the default policy judges privacy on are about 0.14
# above their estimates, so even new patients of the same population (a perfect generator) often fail the
# membership rule; with 60 they are about 0.10 above (benchmarks/RESULTS.md).
DEMO_HOLDOUT = 60


def demo_holdout(cases: int, holdout: int | None = None) -> int:
    """Unseen patients for a demo of ``cases`` patients: ``holdout``, or ``DEMO_HOLDOUT`` keeping at least half the
    cohort for training."""
    n = min(DEMO_HOLDOUT, cases // 2) if holdout is None else holdout
    if not 1 <= n <= cases - 2:
        raise InputError(f"--holdout {n} leaves no room for training in {cases} patients",
                         fix=f"hold out between 1 and {cases - 2} patients")
    return n


def run_demo(out: Path, *, modality: str = "ct", cases: int = 140, shape: int = 32, seed: int = 0,
             generator: str = "wgan", train_steps: int | None = None, n_samples: int = 120,
             utility_steps: int | None = None, holdout: int | None = None, cpu_bf16: bool = True,
             info: Info | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Run the demo into ``out`` (replacing a previous demo folder there); return its summary.

    ``generator`` is ``wgan`` (default: a conditional WGAN-GP on label maps from a statistical shape model) or
    ``ldm`` (latent diffusion); ``train_steps`` defaults to ``DEMO_STEPS[generator]``. ``train_steps = 0`` skips
    training, sampling, audits and export. ``holdout`` unseen patients (default ``demo_holdout``: 60, or half a
    smaller cohort; the default policy fails an audit on fewer than 20, so a small demo shows the gate
    refusing thin evidence). ``cpu_bf16``: the WGAN and the segmentation models of the utility check run under bf16
    autocast on a CPU with native bf16 (about 10 minutes instead of 12 on 2 cores; not bit-for-bit reproducible in
    every shape, ``runtime.precision``); off: fp32, the same bytes for the same seed.
    """
    if generator not in DEMO_GENERATORS:
        raise InputError(f"demo generator {generator!r} is unknown", fix=f"use one of {sorted(DEMO_GENERATORS)}")
    train_steps = DEMO_STEPS[generator] if train_steps is None else train_steps
    n_holdout = demo_holdout(cases, holdout)
    say = info or (lambda message: None)
    settings = AuditSettings(utility_cpu_bf16=cpu_bf16)
    if utility_steps is not None:
        settings = replace(settings, utility_steps=utility_steps)
    out = Path(out).resolve()
    if out.exists() and not (out / MARKER).is_file():
        raise InputError("exists and is not a demo folder", where=out, fix="choose another --out or remove it")
    fmt = "dicom" if modality == "ct" else "brats"
    n_stages = 8 if train_steps else 3
    with atomic_directory(out, replace=True) as tmp:
        (tmp / MARKER).write_text("made by 'synthrelease demo'; safe to delete\n")
        say(f"1/{n_stages} writing {cases} {modality.upper()} phantom patients ({fmt}, {shape}^3) with fake PHI")
        src = write_phantom_cohort(tmp / "source", modality=modality, cases=cases, shape=shape, seed=seed, fmt=fmt)
        say(f"2/{n_stages} ingesting: de-identify, pseudonymize, preprocess, split by patient")
        fraction = (n_holdout + 0.1) / cases  # the split takes round(fraction * patients)
        ws = ingest(src, tmp / "workspace", modality=modality, options=IngestOptions(seed=seed, holdout=fraction),
                    progress=progress)
        say(f"3/{n_stages} searching the workspace for every planted identifier")
        planted = json.loads((src / PLANTED_PHI_FILE).read_text())
        needles = sorted({s for entry in planted.values() for s in entry["strings"]})
        leaks = find_strings(ws.root, needles)
        summary = summarize_workspace(ws)
        summary["deidentification"] = {"planted_strings": len(needles), "found_in_workspace": len(leaks)}
        if train_steps:
            from synthrelease.generators.runs import train_run
            from synthrelease.generators.sampling import sample_set

            say(f"4/{n_stages} training {DEMO_GENERATORS[generator]} for {train_steps} steps on the training split")

            def report(done: int, total: int, losses: dict[str, float]) -> None:
                if progress:
                    progress(f"train {generator}", done, total)

            config = tmp / f"{generator}-demo.toml"
            config.write_text(demo_config(generator, train_steps, seed, cpu_bf16=cpu_bf16))
            run = train_run(ws, generator, name=f"{generator}-demo", config_file=config, progress=report)
            ddim = generator == "ldm"
            say(f"5/{n_stages} sampling {n_samples} synthetic cases" + (" (DDIM, 50 steps)" if ddim else ""))
            path = sample_set(ws, f"{generator}-demo", n=n_samples, seed=seed + 1, name="demo", progress=progress,
                              sampler="ddim" if ddim else None, steps=50 if ddim else None)
            summary["training"] = {"generator": generator, "steps": run.steps, "seconds": round(run.seconds, 1),
                                   "final_losses": run.final_losses}
            summary["synthetic"] = _synthetic_summary(path)
            say(f"6/{n_stages} auditing the set (integrity, privacy, fidelity, utility) under the default policy")
            summary["audit"] = {"demo": _audit_summary(ws, "demo", progress, settings)}
            if summary["audit"]["demo"]["verdict"] == "pass":
                say(f"7/{n_stages} the gate passed: exporting a signed package and verifying it")
                summary["release"] = _export_and_verify(ws, "demo", tmp, seed)
            else:
                say(f"7/{n_stages} the gate failed: no package is exported (see the failed rules)")
            say(f"8/{n_stages} the same audit of a copycat negative control (copies of training patients), stopping "
                "once a family of checks fails it: the gate must close")
            summary["audit"]["copycat-control"] = _copycat_control(ws, n_samples, seed, progress, settings)
    summary["workspace"] = str(out / "workspace")
    if "synthetic" in summary:
        summary["synthetic"]["path"] = str(out / "workspace" / "synthetic" / "demo")
    summary["demo_folder"] = str(out)
    for audit in summary.get("audit", {}).values():  # paths inside the renamed folder
        audit["report_html"] = audit["report_html"].replace(str(tmp), str(out))
    if "release" in summary:
        for key in ("package", "tarball", "public_key"):
            summary["release"][key] = summary["release"][key].replace(str(tmp), str(out))
    return summary
