"""``synthrelease demo``: the built-in release run on phantom data (every stage that exists, end to end)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from synthrelease_cli.output import Output

# synthrelease.demo's DEMO_CASES and DEMO_SAMPLES (not imported here: the CLI starts without torch; a test checks)
DEMO_CASES, DEMO_SAMPLES = 300, 150


@click.command()
@click.option("--modality", type=click.Choice(["ct", "mri"], case_sensitive=False), default="ct", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("synthrelease-demo"), show_default=True,
              help="Demo folder (a previous demo folder there is replaced).")
@click.option("--cases", "n_cases", type=click.IntRange(min=4), default=DEMO_CASES, show_default=True,
              help="Phantom patients.")
@click.option("--holdout", type=click.IntRange(min=1), default=None,
              help="Unseen patients held out for the audit (default: 150, or half a smaller cohort; the default policy "
                   "fails an audit on fewer than 20).")
@click.option("--samples", "n_samples", type=click.IntRange(min=1), default=DEMO_SAMPLES, show_default=True,
              help="Synthetic cases to sample and audit.")
@click.option("--shape", type=click.IntRange(min=16, max=256), default=32, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--generator", type=click.Choice(["wgan", "ldm"]), default="wgan", show_default=True,
              help="wgan: a conditional WGAN-GP on label maps from a statistical shape model; ldm: latent diffusion.")
@click.option("--train-steps", type=click.IntRange(min=0), default=None,
              help="Generator training steps (default: 400 for wgan, 600 for ldm; 0 skips training and sampling).")
@click.option("--utility-steps", type=click.IntRange(min=1), default=None,
              help="Training steps per arm of the audit's segmentation utility check (default: the check's, 500).")
@click.option("--cpu-bf16/--no-cpu-bf16", default=False, show_default=True,
              help="bf16 autocast for the WGAN and the utility check's models on a CPU with native bf16 (faster; "
                   "elsewhere it falls back to fp32). Off by default: bf16 is not bit-for-bit reproducible, and a "
                   "release verdict must not depend on the CPU's instruction set; fp32 gives the same bytes for the "
                   "same seed. The precision used is printed.")
@click.option("--json", "as_json", is_flag=True, help="Print the demo summary as JSON on stdout.")
@click.pass_obj
def demo(out_: Output, modality: str, out: Path, n_cases: int, holdout: int | None, n_samples: int, shape: int,
         seed: int, generator: str, train_steps: int | None, utility_steps: int | None, cpu_bf16: bool,
         as_json: bool) -> None:
    """Run the built-in demo: phantom patients with fake PHI -> ingest -> PHI search -> train -> sample -> audit
    under the default policy -> export + verify when the gate passes -> the same audit of a copycat control.

    CT phantoms are written as DICOM (+ RTSTRUCT), MRI phantoms in the BraTS layout. Each stage line shows the
    demo's elapsed time and the previous stage's duration; progress goes to stderr (plain lines in a log).

    Exit code 0 only if the demo set passed the gate, its package was exported and verified valid, the gate refused
    the copycat control, and no planted identifier reached the workspace. Exit code 1 if any of that fails, with
    the reason as the last line (on stderr). With --train-steps 0 (no training, no audit: nothing else is claimed)
    the exit code is 0 unless a planted identifier reached the workspace.
    """
    from synthrelease.demo import demo_outcome, run_demo
    from synthrelease_cli.cmd_data import render_summary

    with out_.progress() as progress:
        summary = run_demo(out, modality=modality, cases=n_cases, shape=shape, seed=seed, generator=generator,
                           train_steps=train_steps, n_samples=n_samples, utility_steps=utility_steps,
                           holdout=holdout, cpu_bf16=cpu_bf16, info=out_.line, progress=progress)
    leaks = summary["deidentification"]["found_in_workspace"]
    if as_json:
        out_.result_json(summary)
    else:
        render_summary(summary)
        if "precision" in summary:
            click.echo(f"precision: {summary['precision']['text']}")
        verdict = "none found" if not leaks else f"{leaks} FOUND"
        click.echo(f"planted identifiers searched in the workspace: "
                   f"{summary['deidentification']['planted_strings']}; {verdict}")
        if "synthetic" in summary:
            syn = summary["synthetic"]
            present = ", ".join(f"{k} in {v}/{syn['n_cases']}" for k, v in syn["cases_with_label"].items())
            train = summary["training"]
            click.echo(f"trained {train['generator']} for {train['steps']} steps in {train['seconds']} s "
                       f"({train.get('precision') or 'precision unknown'}); "
                       f"sampled {syn['n_cases']} synthetic cases into {syn['path']} ({present})")
        for set_name, audit in summary.get("audit", {}).items():
            failed = "; ".join(f"{r['metric']} ({r['reason']})" for r in audit["failed_rules"])
            click.echo(f"audit of {set_name}: {audit['verdict'].upper()}" + (f": failed {failed}" if failed else ""))
            if audit.get("utility_precision"):
                used = ", ".join(sorted({str(p) for p in audit["utility_precision"].values() if p}))
                click.echo(f"  utility models' precision: {used}")
            if audit.get("not_run"):
                click.echo(f"  not run once the verdict was decided (--fail-fast): {', '.join(audit['not_run'])}")
            click.echo(f"  report: {audit['report_html']}")
        if "release" in summary:
            rel = summary["release"]
            state = "valid" if rel["verified"] else "INVALID: " + "; ".join(rel["problems"])
            click.echo(f"package: {rel['package']} ({rel['n_files']} files, signed; verify: {state})")
        click.echo(f"demo folder: {summary['demo_folder']}")
    ok, reason = demo_outcome(summary)
    if ok:
        out_.line(f"demo passed: {reason}")
        return
    sys.stdout.flush()
    click.echo(f"demo failed: {reason}", err=True)  # the last line, after everything on stdout
    raise SystemExit(1)
