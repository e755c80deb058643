"""The built-in demo release on phantom data: every stage that exists, end to end, in one folder.

phantoms (fake patients with planted PHI) -> ingest (de-identify, pseudonymize, preprocess, split) -> PHI search of
the workspace -> train a latent diffusion model -> sample a synthetic cohort -> privacy audit of that set beside a
copycat negative control (copies of training patients, which the audit must flag) -> summary. The gate and export
stages join as they land.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from synthrelease.data.ingest import IngestOptions, ingest
from synthrelease.data.leakscan import find_strings
from synthrelease.data.nnunet import read_nnunet
from synthrelease.data.phantoms.cohort import PLANTED_PHI_FILE, write_phantom_cohort
from synthrelease.data.summary import summarize_workspace
from synthrelease.data.workspace import Workspace
from synthrelease.errors import InputError
from synthrelease.runtime.fs import atomic_directory

__all__ = ["MARKER", "run_demo"]

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


AUDIT_METRICS = ("privacy.memorization.flagged_fraction", "privacy.mask_memorization.flagged_fraction",
                 "privacy.dcr.overfitting_p", "privacy.mia.auc", "privacy.reidentification.rank1_rate",
                 "privacy.reidentification.baseline_rate", "privacy.metadata.n_findings")


def _audit_with_control(ws: Workspace, set_name: str, n: int, seed: int,
                        progress: Progress | None) -> dict[str, dict[str, float | None]]:
    """Privacy audits of the sampled set and of a copycat control set of the same size: headline metrics."""
    from synthrelease.checks.audit import audit_workspace
    from synthrelease.generators.runs import train_run
    from synthrelease.generators.sampling import sample_set

    train_run(ws, "copycat", name="copycat-control")
    sample_set(ws, "copycat-control", n=n, seed=seed + 2, name="copycat-control")
    out: dict[str, dict[str, float | None]] = {}
    for name in (set_name, "copycat-control"):
        report = audit_workspace(ws, name, only=["privacy"], seed=seed, progress=progress).report
        out[name] = {m: report["metrics"].get(m) for m in AUDIT_METRICS}
    return out


def run_demo(out: Path, *, modality: str = "ct", cases: int = 12, shape: int = 32, seed: int = 0,
             train_steps: int = 600, n_samples: int = 8, info: Info | None = None,
             progress: Progress | None = None) -> dict[str, Any]:
    """Run the demo into ``out`` (replacing a previous demo folder there); return its summary.

    ``train_steps = 0`` skips training and sampling.
    """
    say = info or (lambda message: None)
    out = Path(out).resolve()
    if out.exists() and not (out / MARKER).is_file():
        raise InputError("exists and is not a demo folder", where=out, fix="choose another --out or remove it")
    fmt = "dicom" if modality == "ct" else "brats"
    n_stages = 6 if train_steps else 3
    with atomic_directory(out, replace=True) as tmp:
        (tmp / MARKER).write_text("made by 'synthrelease demo'; safe to delete\n")
        say(f"1/{n_stages} writing {cases} {modality.upper()} phantom patients ({fmt}, {shape}^3) with fake PHI")
        src = write_phantom_cohort(tmp / "source", modality=modality, cases=cases, shape=shape, seed=seed, fmt=fmt)
        say(f"2/{n_stages} ingesting: de-identify, pseudonymize, preprocess, split by patient")
        holdout = max(0.2, 2.1 / cases)  # the privacy audit needs at least two unseen patients
        ws = ingest(src, tmp / "workspace", modality=modality, options=IngestOptions(seed=seed, holdout=holdout),
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

            say(f"4/{n_stages} training latent diffusion (ldm) for {train_steps} steps on the training split")
            ae_steps = max(1, train_steps // 4)

            def report(done: int, total: int, losses: dict[str, float]) -> None:
                if progress:
                    progress("train ldm", done, total)

            config = tmp / "ldm-demo.toml"
            config.write_text(f'generator = "ldm"\nsteps = {train_steps}\nae_steps = {ae_steps}\nseed = {seed}\n')
            run = train_run(ws, "ldm", name="ldm-demo", config_file=config, progress=report)
            say(f"5/{n_stages} sampling {n_samples} synthetic cases (DDIM, 50 steps)")
            path = sample_set(ws, "ldm-demo", n=n_samples, seed=seed + 1, name="demo", sampler="ddim", steps=50,
                              progress=progress)
            summary["training"] = {"generator": "ldm", "steps": run.steps, "seconds": round(run.seconds, 1),
                                   "final_losses": run.final_losses}
            summary["synthetic"] = _synthetic_summary(path)
            say(f"6/{n_stages} privacy audit of the set, beside the copycat negative control (copies of training "
                "patients) that the audit must flag")
            summary["audit"] = _audit_with_control(ws, "demo", n_samples, seed, progress)
    summary["workspace"] = str(out / "workspace")
    if "synthetic" in summary:
        summary["synthetic"]["path"] = str(out / "workspace" / "synthetic" / "demo")
    summary["demo_folder"] = str(out)
    return summary
