"""The built-in demo release on phantom data: every stage that exists, end to end, in one folder.

phantoms (fake patients with planted PHI) -> ingest (de-identify, pseudonymize, preprocess, split) -> PHI search of
the workspace -> train a generator (by default a conditional WGAN-GP whose label maps come from a statistical shape
model; or a latent diffusion model) -> sample a synthetic cohort -> full audit under the default
policy -> (gate passed) signed package exported and verified -> the same audit of a copycat negative control
(copies of training patients), on which the gate must close -> summary.
"""

from __future__ import annotations

import json
import time
import tomllib
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

__all__ = ["MARKER", "demo_holdout", "demo_outcome", "demo_precision", "run_demo"]

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


HEADLINE = ("integrity.cohort.n_holdout", "privacy.memorization.n_copies", "privacy.mask_memorization.n_copies",
            "privacy.tumour_memorization.n_copies",
            "privacy.memorization.flagged_fraction", "privacy.mask_memorization.flagged_fraction",
            "privacy.dcr.overfitting_p", "privacy.dcr.overfitting_p_ci_high", "privacy.mia.auc",
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
    utility = report["checks"].get("utility.segmentation", {}).get("evidence", {})
    return {"verdict": report["verdict"], "report_html": str(outcome.path / "report.html"),
            "failed_rules": [{"metric": r["metric"], "value": r["value"], "reason": r["reason"]}
                             for r in judged if r["severity"] == "fail"],
            "not_run": not_run,
            "warnings": [r["metric"] for r in judged if r["severity"] == "warn"],
            "metrics": {m: report["metrics"].get(m) for m in HEADLINE},
            "utility_precision": utility.get("precision")}


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


COPYCAT_SAMPLES = 40  # copies in the control: enough for every privacy rule to fail it, at a fraction of the cost


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


# wgan on shape-model masks (default): on a tuning cohort (phantom seed 11, 150 train / 150 unseen, never a demo
# seed's) its set passed every privacy rule (MIA upper bound 0.642, DCR 0.66) and fell just short on utility
# (dice_ratio 0.691: the masks' tumours teach the segmenter half as much as real ones); ldm: joint images and masks,
# private by the audit but of little use yet (dice_ratio 0.27); benchmarks/RESULTS.md
DEMO_GENERATORS = {
    "wgan": "a conditional WGAN-GP (wgan) on label maps from a statistical shape model (shape)",
    "ldm": "latent diffusion (ldm)",
}
DEMO_STEPS = {"ldm": 600, "wgan": 400}


def demo_config(generator: str, steps: int, seed: int, *, cpu_bf16: bool = False) -> str:
    """The demo's training config (TOML). ``ldm``: a quarter of the steps for the autoencoder. ``wgan``: its default
    32^3 CPU model (batch 2, channels 16-32-64) on masks of the ``shape`` model with 5 modes on a grid pooled 2x
    (fitted in about a second; at full resolution its masks lean towards the training patients' and DCR found it;
    with 10 modes its white-box log-likelihood told 80 members from unseen patients at AUC 0.70-0.73, with 5 at
    0.60-0.64, and at 150 members 0.64 against 0.56: fewer modes and more patients leave each member less imprint),
    with the
    mode-seeking term (a short run ignores z otherwise, and its images come out more alike than real patients are),
    sampled with its last weights (``ema_decay = 0``: the average failed the DCR rule), with ``cpu_bf16``: under
    bf16 autocast where the CPU runs bf16 natively (faster, not bit-for-bit reproducible: off by default).
    benchmarks/RESULTS.md."""
    if generator == "ldm":
        return f'generator = "ldm"\nsteps = {steps}\nae_steps = {max(1, steps // 4)}\nseed = {seed}\n'
    return (f'generator = "wgan"\nsteps = {steps}\nseed = {seed}\nmask_generator = "shape"\n'  # 32^3 defaults
            f'mask = {{modes = 5, factor = 2}}\nmode_seeking_weight = 1.0\nema_decay = 0.0\n'
            f'cpu_bf16 = {"true" if cpu_bf16 else "false"}\n')


# Unseen patients the demo holds out, and its cohort. Membership is judged on the upper bound of the strongest of
# seven attacks (four black-box, three white-box on the model), whose maximum over attacks and bootstrap interval grow
# with few unseen patients: for a set that leaks nothing at all, the bound averaged 0.65-0.67 with 80 members and 60
# unseen patients (the line is 0.7; above it 10% of the time), 0.63-0.64 with 100 / 100 and 0.61 with 150 / 150
# (above 0.65 2-3% of the time; simulated, benchmarks/RESULTS.md). So the demo writes 300 patients and holds out
# half: a private set then passes with room to spare, and the training split is large enough that the shape model's
# modes keep little of any one member.
DEMO_CASES = 300
DEMO_HOLDOUT = 150
DEMO_SAMPLES = 150


def demo_holdout(cases: int, holdout: int | None = None) -> int:
    """Unseen patients for a demo of ``cases`` patients: ``holdout``, or ``DEMO_HOLDOUT`` keeping at least half the
    cohort for training."""
    n = min(DEMO_HOLDOUT, cases // 2) if holdout is None else holdout
    if not 1 <= n <= cases - 2:
        raise InputError(f"--holdout {n} leaves no room for training in {cases} patients",
                         fix=f"hold out between 1 and {cases - 2} patients")
    return n


def demo_precision(generator: str, cpu_bf16: bool) -> dict[str, Any]:
    """The precision the demo's networks run in, as ``runtime.precision`` resolves it for the generator (its demo
    config's ``cpu_bf16``; bf16 autocast on CUDA) and the utility check's segmentation models: ``generator`` and
    ``utility`` (``fp32``, ``bf16``, or ``nnunet``: nnU-Net's own on a GPU), the request, whether the CPU runs bf16
    natively, ``cpu_bf16_effective`` (the request where the CPU runs bf16 natively, else off: what the demo writes
    into its generator config and audit settings, so that on a CPU without native bf16 ``--cpu-bf16`` leaves every
    byte, the set's hash and so its gating seed as in fp32), and ``text``, the line the demo prints."""
    import torch

    from synthrelease.runtime import precision
    from synthrelease.segmentation import default_engine_name
    from synthrelease.segmentation.base import resolve_device

    native = precision.cpu_bf16_supported()
    effective = cpu_bf16 and native
    gen_bf16 = bool(tomllib.loads(demo_config(generator, 1, 0, cpu_bf16=effective)).get("cpu_bf16", False))
    gen_device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # the generators' default device
    gen = precision.resolved_precision(gen_device, cuda_bf16=True, cpu_bf16=gen_bf16)
    if default_engine_name() == "nnunet":
        utility = "nnunet"
    else:
        utility = precision.resolved_precision(torch.device(resolve_device("auto")), cuda_bf16=False,
                                               cpu_bf16=effective)

    def name(value: str, device: torch.device) -> str:
        if value == "nnunet":
            return "nnU-Net's own mixed precision (CUDA)"
        if value == "bf16":
            return "bf16 autocast (CUDA)" if device.type == "cuda" else "bf16 autocast (CPU has native bf16)"
        return "fp32"

    gen_text, util_text = name(gen, gen_device), name(utility, torch.device(resolve_device("auto")))
    text = gen_text if gen_text == util_text else f"generator {gen_text}; utility models {util_text}"
    if cpu_bf16 and not native and gen_device.type == "cpu":
        text += " (--cpu-bf16 asked for bf16 autocast, but this CPU has no native bf16: it falls back to fp32)"
    return {"text": text, "generator": gen, "utility": utility, "cpu_bf16_requested": cpu_bf16,
            "cpu_native_bf16": native, "cpu_bf16_effective": effective}


def demo_outcome(summary: dict[str, Any]) -> tuple[bool, str]:
    """The demo's own verdict on its ``summary``: ``(ok, reason)``. ``ok`` only when no planted identifier reached the
    workspace and, where a generator was trained (``train_steps`` > 0), the demo set passed the gate, its package was
    exported and verified valid, and the gate refused the copycat control (verdict ``fail``). Without training
    (``train_steps = 0``) nothing else is claimed, so only the identifier search counts. ``reason`` says every
    shortfall, or what held."""
    problems: list[str] = []
    leaks = int(summary["deidentification"]["found_in_workspace"])
    if leaks:
        problems.append(f"{leaks} planted identifier(s) reached the workspace")
    audits = summary.get("audit", {})
    if "training" not in summary and not audits:
        if problems:
            return False, "; ".join(problems)
        return True, ("no planted identifier reached the workspace (no generator trained with --train-steps 0: "
                      "no set audited, nothing else claimed)")
    demo = audits.get("demo")
    if demo is None:
        problems.append("the demo set was not audited")
    elif demo["verdict"] != "pass":
        failed = ", ".join(r["metric"] for r in demo.get("failed_rules", [])) or "no judged rule"
        problems.append(f"the gate failed the demo set ({failed}), so no package was exported")
    release = summary.get("release")
    if demo is not None and demo["verdict"] == "pass":
        if release is None:
            problems.append("the gate passed but no package was exported")
        elif not release.get("verified"):
            problems.append("the exported package failed verification ("
                            + ("; ".join(release.get("problems") or []) or "no detail") + ")")
    control = audits.get("copycat-control")
    if control is None:
        problems.append("the copycat control was not audited")
    elif control["verdict"] != "fail":
        problems.append(f"the gate let the copycat control through (verdict {control['verdict']})")
    if problems:
        return False, "; ".join(problems)
    return True, ("the demo set passed the gate, its package was exported and verified, the gate refused the "
                  "copycat control, and no planted identifier reached the workspace")


def _clock_text(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 60:2d}:{whole % 60:02d}"


class _StageClock:
    """The demo's stage lines, each with the demo's elapsed time and the previous stage's duration:
    ``[ 0:42] 3/8 searching ... (2/8 took 0:31)``; ``finish`` says the total."""

    def __init__(self, say: Info, clock: Callable[[], float] = time.monotonic) -> None:
        self._say, self._clock = say, clock
        self._start = self._last = clock()
        self._previous: str | None = None
        self.seconds: dict[str, float] = {}  # stage ("1/8", ...) -> its duration

    def __call__(self, message: str) -> None:
        self._say(self._line(message, self._clock()))
        self._previous = message.split(" ", 1)[0]

    def finish(self) -> None:
        now = self._clock()
        self._say(self._line(f"finished in {_clock_text(now - self._start).strip()}", now))

    def _line(self, message: str, now: float) -> str:
        took = f" ({self._previous} took {_clock_text(now - self._last).strip()})" if self._previous else ""
        if self._previous:
            self.seconds[self._previous] = round(now - self._last, 1)
        self._last = now
        return f"[{_clock_text(now - self._start)}] {message}{took}"


def run_demo(out: Path, *, modality: str = "ct", cases: int = DEMO_CASES, shape: int = 32, seed: int = 0,
             generator: str = "wgan", train_steps: int | None = None, n_samples: int = DEMO_SAMPLES,
             utility_steps: int | None = None, holdout: int | None = None, cpu_bf16: bool = False,
             info: Info | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Run the demo into ``out`` (replacing a previous demo folder there); return its summary.

    ``generator`` is ``wgan`` (default: a conditional WGAN-GP on label maps from a statistical shape model) or
    ``ldm`` (latent diffusion); ``train_steps`` defaults to ``DEMO_STEPS[generator]``. ``train_steps = 0`` skips
    training, sampling, audits and export. ``holdout`` unseen patients (default ``demo_holdout``: 150, or half a
    smaller cohort; the default policy fails an audit on fewer than 20, so a small demo shows the gate
    refusing thin evidence). ``cpu_bf16``: the WGAN and the segmentation models of the utility check run under bf16
    autocast on a CPU with native bf16 (about 10 minutes instead of 12 on 2 cores; not bit-for-bit reproducible in
    every shape, ``runtime.precision``); off (the default): fp32, the same bytes for the same seed, so a release
    verdict does not depend on the CPU's instruction set. On a CPU without native bf16 the request changes nothing
    (not even the config, whose hash the set's gating seed depends on). The precision used is printed and kept in
    ``summary["precision"]`` (``demo_precision``). Each stage line carries the demo's elapsed time and the previous
    stage's duration; ``demo_outcome`` judges the summary.
    """
    if generator not in DEMO_GENERATORS:
        raise InputError(f"demo generator {generator!r} is unknown", fix=f"use one of {sorted(DEMO_GENERATORS)}")
    train_steps = DEMO_STEPS[generator] if train_steps is None else train_steps
    n_holdout = demo_holdout(cases, holdout)
    say = info or (lambda message: None)
    stage = _StageClock(say)
    precision = demo_precision(generator, cpu_bf16)
    settings = AuditSettings(utility_cpu_bf16=precision["cpu_bf16_effective"])
    if utility_steps is not None:
        settings = replace(settings, utility_steps=utility_steps)
    out = Path(out).resolve()
    if out.exists() and not (out / MARKER).is_file():
        raise InputError("exists and is not a demo folder", where=out, fix="choose another --out or remove it")
    fmt = "dicom" if modality == "ct" else "brats"
    n_stages = 8 if train_steps else 3
    if train_steps:  # nothing runs in any precision otherwise
        say(f"precision: {precision['text']}")
    with atomic_directory(out, replace=True) as tmp:
        (tmp / MARKER).write_text("made by 'synthrelease demo'; safe to delete\n")
        stage(f"1/{n_stages} writing {cases} {modality.upper()} phantom patients ({fmt}, {shape}^3) with fake PHI")
        src = write_phantom_cohort(tmp / "source", modality=modality, cases=cases, shape=shape, seed=seed, fmt=fmt)
        stage(f"2/{n_stages} ingesting: de-identify, pseudonymize, preprocess, split by patient")
        fraction = (n_holdout + 0.1) / cases  # the split takes round(fraction * patients)
        ws = ingest(src, tmp / "workspace", modality=modality, options=IngestOptions(seed=seed, holdout=fraction),
                    progress=progress)
        stage(f"3/{n_stages} searching the workspace for every planted identifier")
        planted = json.loads((src / PLANTED_PHI_FILE).read_text())
        needles = sorted({s for entry in planted.values() for s in entry["strings"]})
        leaks = find_strings(ws.root, needles)
        summary = summarize_workspace(ws)
        summary["deidentification"] = {"planted_strings": len(needles), "found_in_workspace": len(leaks)}
        if train_steps:
            summary["precision"] = precision
        if train_steps:
            from synthrelease.generators.runs import train_run
            from synthrelease.generators.sampling import sample_set

            stage(f"4/{n_stages} training {DEMO_GENERATORS[generator]} for {train_steps} steps on the training split")

            def report(done: int, total: int, losses: dict[str, float]) -> None:
                if progress:
                    progress(f"train {generator}", done, total)

            config = tmp / f"{generator}-demo.toml"
            config.write_text(demo_config(generator, train_steps, seed, cpu_bf16=precision["cpu_bf16_effective"]))
            run = train_run(ws, generator, name=f"{generator}-demo", config_file=config, progress=report)
            ddim = generator == "ldm"
            stage(f"5/{n_stages} sampling {n_samples} synthetic cases" + (" (DDIM, 50 steps)" if ddim else ""))
            path = sample_set(ws, f"{generator}-demo", n=n_samples, seed=seed + 1, name="demo", progress=progress,
                              sampler="ddim" if ddim else None, steps=50 if ddim else None)
            recorded = json.loads((run.path / "run.json").read_text()).get("precision")
            summary["training"] = {"generator": generator, "steps": run.steps, "seconds": round(run.seconds, 1),
                                   "precision": recorded, "final_losses": run.final_losses}
            summary["synthetic"] = _synthetic_summary(path)
            stage(f"6/{n_stages} auditing the set (integrity, privacy, fidelity, utility) under the default policy")
            summary["audit"] = {"demo": _audit_summary(ws, "demo", progress, settings)}
            if summary["audit"]["demo"]["verdict"] == "pass":
                stage(f"7/{n_stages} the gate passed: exporting a signed package and verifying it")
                summary["release"] = _export_and_verify(ws, "demo", tmp, seed)
            else:
                stage(f"7/{n_stages} the gate failed: no package is exported (see the failed rules)")
            stage(f"8/{n_stages} the same audit of a copycat negative control (copies of training patients), stopping "
                "once a family of checks fails it: the gate must close")
            summary["audit"]["copycat-control"] = _copycat_control(ws, n_samples, seed, progress, settings)
    stage.finish()
    summary["stage_seconds"] = stage.seconds
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
