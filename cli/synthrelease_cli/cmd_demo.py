"""``synthrelease demo``: the built-in release run on phantom data (every stage that exists, end to end)."""

from __future__ import annotations

from pathlib import Path

import click

from synthrelease_cli.output import Output


@click.command()
@click.option("--modality", type=click.Choice(["ct", "mri"], case_sensitive=False), default="ct", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("synthrelease-demo"), show_default=True,
              help="Demo folder (a previous demo folder there is replaced).")
@click.option("--cases", "n_cases", type=click.IntRange(min=4), default=12, show_default=True)
@click.option("--shape", type=click.IntRange(min=16, max=256), default=32, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--train-steps", type=click.IntRange(min=0), default=600, show_default=True,
              help="Latent diffusion training steps (0 skips training and sampling).")
@click.option("--json", "as_json", is_flag=True, help="Print the demo summary as JSON on stdout.")
@click.pass_obj
def demo(out_: Output, modality: str, out: Path, n_cases: int, shape: int, seed: int, train_steps: int,
         as_json: bool) -> None:
    """Run the built-in demo: phantom patients with fake PHI -> ingest -> PHI search -> train -> sample -> audit.

    CT phantoms are written as DICOM (+ RTSTRUCT), MRI phantoms in the BraTS layout. The sampled set is audited
    for privacy beside a copycat negative control (copies of training patients). Gate and export join as they land.
    """
    from synthrelease.demo import run_demo
    from synthrelease_cli.cmd_data import render_summary

    with out_.progress() as progress:
        summary = run_demo(out, modality=modality, cases=n_cases, shape=shape, seed=seed, train_steps=train_steps,
                           info=out_.info, progress=progress)
    leaks = summary["deidentification"]["found_in_workspace"]
    if as_json:
        out_.result_json(summary)
    else:
        render_summary(summary)
        verdict = "none found" if not leaks else f"{leaks} FOUND"
        click.echo(f"planted identifiers searched in the workspace: "
                   f"{summary['deidentification']['planted_strings']}; {verdict}")
        if "synthetic" in summary:
            syn = summary["synthetic"]
            present = ", ".join(f"{k} in {v}/{syn['n_cases']}" for k, v in syn["cases_with_label"].items())
            click.echo(f"trained ldm for {summary['training']['steps']} steps in {summary['training']['seconds']} s; "
                       f"sampled {syn['n_cases']} synthetic cases into {syn['path']} ({present})")
        for set_name, metrics in summary.get("audit", {}).items():
            shown = ", ".join(f"{k.removeprefix('privacy.')} {v:.3g}" for k, v in metrics.items() if v is not None)
            click.echo(f"privacy audit of {set_name}: {shown}")
        click.echo(f"demo folder: {summary['demo_folder']}")
    if leaks:
        raise SystemExit(1)
