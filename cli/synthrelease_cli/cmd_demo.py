"""``synthrelease demo``: the built-in release run on phantom data (what exists so far, end to end)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from synthrelease_cli.output import Output

MARKER = ".synthrelease-demo"


@click.command()
@click.option("--modality", type=click.Choice(["ct", "mri"], case_sensitive=False), default="ct", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("synthrelease-demo"), show_default=True,
              help="Demo folder (a previous demo folder there is replaced).")
@click.option("--cases", "n_cases", type=click.IntRange(min=4), default=12, show_default=True)
@click.option("--shape", type=click.IntRange(min=16, max=256), default=32, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the demo summary as JSON on stdout.")
@click.pass_obj
def demo(out_: Output, modality: str, out: Path, n_cases: int, shape: int, seed: int, as_json: bool) -> None:
    """Run the built-in demo: phantom patients (DICOM with fake PHI for CT, BraTS for MRI) -> ingest -> summary.

    The later stages (train, sample, audit, export) join this run as they land.
    """
    from synthrelease.data.ingest import IngestOptions, ingest
    from synthrelease.data.leakscan import find_strings
    from synthrelease.data.phantoms.cohort import PLANTED_PHI_FILE, write_phantom_cohort
    from synthrelease.data.summary import summarize_workspace
    from synthrelease.errors import InputError
    from synthrelease.runtime.fs import atomic_directory
    from synthrelease_cli.cmd_data import render_summary

    out = out.resolve()
    if out.exists() and not (out / MARKER).is_file():
        raise InputError("exists and is not a demo folder", where=out, fix="choose another --out or remove it")
    fmt = "dicom" if modality == "ct" else "brats"
    with atomic_directory(out, replace=True) as tmp:
        (tmp / MARKER).write_text("made by 'synthrelease demo'; safe to delete\n")
        out_.info(f"[bold]1/3[/bold] writing {n_cases} {modality.upper()} phantom patients ({fmt}, {shape}^3)")
        src = write_phantom_cohort(tmp / "source", modality=modality, cases=n_cases, shape=shape, seed=seed,
                                   fmt=fmt)
        out_.info("[bold]2/3[/bold] ingesting: de-identify, pseudonymize, preprocess, split")
        with out_.progress() as progress:
            ws = ingest(src, tmp / "workspace", modality=modality, options=IngestOptions(seed=seed),
                        progress=progress)
        out_.info("[bold]3/3[/bold] checking the workspace for planted identifiers")
        planted = json.loads((src / PLANTED_PHI_FILE).read_text())
        needles = sorted({s for entry in planted.values() for s in entry["strings"]})
        leaks = find_strings(tmp / "workspace", needles)
        summary = summarize_workspace(ws)
    summary["workspace"] = str(out / "workspace")
    summary["deidentification"] = {"planted_strings": len(needles), "found_in_workspace": len(leaks)}
    if as_json:
        out_.result_json(summary)
    else:
        render_summary(summary)
        verdict = "none found" if not leaks else f"[red]{len(leaks)} FOUND[/red]"
        click.echo(f"planted identifiers searched in the workspace: {len(needles)}; {verdict}")
        click.echo(f"demo folder: {out}")
    if leaks:
        raise SystemExit(1)
