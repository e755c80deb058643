"""``synthrelease utility``: the segmentation utility check alone (train on real / synthetic / both, test on real)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from synthrelease_cli.output import Output

ENGINES = ("auto", "monai", "nnunet")
NETWORKS = ("dynunet", "unet")  # synthrelease.segmentation.base.NETWORKS (not imported: the CLI starts without torch)
NETWORK_HELP = "Network of the monai engine (default dynunet: nnU-Net's; unet: cheaper, misses small structures)."


def _render(out_: Output, report: dict[str, Any]) -> None:
    if out_.quiet:
        return
    from rich.table import Table

    from synthrelease.checks.utility.summary import arm_key

    check = report["checks"]["utility.segmentation"]
    if check["status"] != "ok":
        out_.info(f"[yellow]utility.segmentation {check['status']}: {check.get('reason', '')}[/yellow]")
        return
    metrics, evidence = check["metrics"], check["evidence"]
    table = Table(title=f"segmentation utility of {report['synthetic_set']['name']} "
                        f"({evidence['engine']}, {evidence['config']['steps']} steps per arm; real holdout "
                        f"of {evidence['n_cases']['holdout']})")
    names = evidence["structures"]
    for col in ("arm", "Dice", *names, "HD95 mm"):
        table.add_column(col)
    for arm in evidence["arms"]:
        key = arm_key(arm)

        def cell(name: str) -> str:
            m = metrics.get(name)
            return "-" if m is None else f"{m['value']:.3f}"

        table.add_row(arm, cell(f"dice_{key}"), *[cell(f"dice_{arm_key(n)}_{key}") for n in names], cell(f"hd95_{key}"))
    out_.console.print(table)
    used = sorted({str(p) for p in evidence.get("precision", {}).values() if p})
    if used:
        out_.info(f"precision: {', '.join(used)}")
    ratio = metrics.get("dice_ratio")
    if ratio:
        ci = ratio.get("ci95")
        out_.info(f"dice_ratio (synthetic / real): [bold]{ratio['value']:.3f}[/bold]"
                  + (f"  95% CI [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""))
    for note in evidence.get("notes", []):
        out_.info(f"[yellow]{note}[/yellow]")


@click.command()
@click.argument("workspace", type=click.Path(path_type=Path))
@click.option("--synthetic", required=True, help="Set name under WS/synthetic/, or an nnU-Net raw folder.")
@click.option("--engine", type=click.Choice(ENGINES), default="auto", show_default=True,
              help="Segmentation engine; auto: nnunet with a CUDA GPU and nnunetv2, else monai.")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Optimisation steps per arm, the same for every arm (default 500).")
@click.option("--network", type=click.Choice(NETWORKS), default=None, help=NETWORK_HELP)
@click.option("--arms", default="real,synthetic,real+synthetic", show_default=True,
              help="Comma-separated training arms, each tested on the real holdout.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of weights, patches and bootstrap.")
@click.option("--json", "as_json", is_flag=True, help="Print report.json to stdout.")
@click.pass_obj
def utility(out_: Output, workspace: Path, synthetic: str, engine: str, steps: int | None, network: str | None,
            arms: str, seed: int, as_json: bool) -> None:
    """Segmentation utility of a synthetic set: train on real, synthetic and both; test on the real holdout.

    Writes WS/audits/SET+utility/report.json (metrics only, no verdict: the gate judges a full 'audit', which
    runs this check too). Cost with the monai engine (dynunet) on one CPU thread: about 2.5 minutes per arm at
    32^3 and 8x that at 64^3 (unet: about 1 and 7).
    """
    from dataclasses import replace

    from synthrelease.audit import audit_workspace
    from synthrelease.checks import AuditSettings
    from synthrelease.checks.utility.segmentation import check_arms
    from synthrelease.data.workspace import Workspace
    from synthrelease.segmentation import create_engine

    ws = Workspace(workspace)
    create_engine(engine)  # an engine that cannot run here fails before any work
    settings = replace(AuditSettings(), utility_engine=engine, utility_arms=check_arms(arms.split(",")))
    if steps is not None:
        settings = replace(settings, utility_steps=steps)
    if network is not None:
        settings = replace(settings, utility_network=network)
    name = Path(synthetic).name if "/" in synthetic else synthetic
    with out_.progress() as progress:
        outcome = audit_workspace(ws, synthetic, only=["utility.segmentation"], seed=seed, settings=settings,
                                  progress=progress, policy=None, out=ws.dir("audits") / f"{name}+utility")
    _render(out_, outcome.report)
    if as_json:
        out_.result_json(outcome.report)
    else:
        click.echo(str(outcome.path / "report.json"))
    if outcome.report["summary"]["error"]:
        from synthrelease.errors import SynthReleaseError

        reason = outcome.report["checks"]["utility.segmentation"].get("reason", "")
        raise SynthReleaseError(f"the utility check failed: {reason}", where=outcome.path / "report.json")
