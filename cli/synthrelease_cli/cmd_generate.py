"""Generator commands: ``train`` and ``sample``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from synthrelease_cli.output import Output


@click.command()
@click.argument("workspace", type=click.Path(path_type=Path))
@click.option("--generator", "generator", required=True,
              help="ldm | ddpm | wgan | mask | copycat (copycat is a negative control for testing audits).")
@click.option("--config", "config_file", type=click.Path(path_type=Path), default=None,
              help="TOML config (see examples/configs/); defaults are the tiny CPU config.")
@click.option("--name", default=None, help="Run name under WS/models/ (default: the generator name).")
@click.option("--resume", is_flag=True, help="Continue the run from its latest checkpoint.")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Override the config's steps.")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Override the config's seed.")
@click.option("--device", default=None, help="cpu, cuda or cuda:N (default: CUDA when present).")
@click.pass_obj
def train(out_: Output, workspace: Path, generator: str, config_file: Path | None, name: str | None, resume: bool,
          steps: int | None, seed: int | None, device: str | None) -> None:
    """Train a generator on the workspace's training split (checkpoints under WS/models/RUN).

    Several GPUs: torchrun --nproc_per_node K -m synthrelease_cli train WS --generator NAME ...
    """
    from synthrelease.data.workspace import Workspace
    from synthrelease.generators.registry import get_generator_class
    from synthrelease.generators.runs import train_run

    ws = Workspace(workspace)
    get_generator_class(generator)  # unknown names fail before anything is written
    with out_.progress() as progress:
        def report(done: int, total: int, losses: dict[str, float]) -> None:
            label = " ".join(f"{k}={v:.4g}" for k, v in list(losses.items())[:3])
            progress(f"train {generator} {label}".strip(), done, total)

        info = train_run(ws, generator, name=name, config_file=config_file, resume=resume, steps=steps, seed=seed,
                         device=device, progress=report)
    losses = ", ".join(f"{k} {v:.4g}" for k, v in info.final_losses.items())
    precision = json.loads((info.path / "run.json").read_text()).get("precision", "unknown")
    out_.info(f"trained {info.generator} for {info.steps} steps in {info.seconds:.1f} s, precision {precision} "
              f"({losses})")
    click.echo(str(info.path / "model.pt"))


@click.command()
@click.argument("workspace", type=click.Path(path_type=Path))
@click.option("--model", "run", required=True, help="Run name under WS/models/.")
@click.option("--n", "n", type=click.IntRange(min=1), required=True, help="Number of synthetic cases.")
@click.option("--seed", type=click.IntRange(min=0), required=True)
@click.option("--name", required=True, help="Set name under WS/synthetic/.")
@click.option("--sampler", type=click.Choice(["ddim", "ddpm"]), default=None,
              help="Diffusion sampler (default: the generator's).")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="DDIM steps.")
@click.option("--batch", type=click.IntRange(min=1), default=None, help="Cases generated at once (memory).")
@click.option("--min-component", type=click.IntRange(min=0), default=0, show_default=True,
              help="Drop label components smaller than this many voxels.")
@click.option("--device", default=None, help="cpu, cuda or cuda:N.")
@click.pass_obj
def sample(out_: Output, workspace: Path, run: str, n: int, seed: int, name: str, sampler: str | None,
           steps: int | None, batch: int | None, min_component: int, device: str | None) -> None:
    """Sample a synthetic cohort into WS/synthetic/NAME (nnU-Net raw layout, HU / MR scale, provenance.json)."""
    from synthrelease.data.workspace import Workspace
    from synthrelease.generators.sampling import sample_set

    ws = Workspace(workspace)
    with out_.progress() as progress:
        path = sample_set(ws, run, n=n, seed=seed, name=name, batch=batch, sampler=sampler, steps=steps,
                          min_component=min_component, device=device, progress=progress)
    out_.info(f"sampled {n} cases from run {run!r} into {path}")
    click.echo(str(path))
