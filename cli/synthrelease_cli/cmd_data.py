"""Data commands: ``phantoms``, ``ingest``, ``info``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from synthrelease_cli.output import Output


def _triple(kind: type, name: str) -> Any:
    """Parse ``1.0`` (isotropic) or ``1,1,2.5`` into a 3-tuple."""

    def convert(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[Any, ...] | None:
        if value is None or value == "auto":
            return None
        try:
            parts = [kind(v) for v in value.split(",")]
        except ValueError:
            raise click.BadParameter(f"{value!r} is not a number or three comma-separated numbers") from None
        if len(parts) == 1:
            parts *= 3
        if len(parts) != 3 or any(p <= 0 for p in parts):
            raise click.BadParameter(f"{value!r}: give one positive {name} or three separated by commas")
        return tuple(parts)

    return convert


@click.command()
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--modality", type=click.Choice(["ct", "mri"], case_sensitive=False), required=True)
@click.option("--cases", "n_cases", type=click.IntRange(min=1), default=12, show_default=True)
@click.option("--shape", type=click.IntRange(min=16, max=512), default=32, show_default=True,
              help="Voxels per side of the cube.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["nifti", "nnunet", "brats", "brats2021", "dicom"]),
              default="nifti", show_default=True,
              help="nifti = nnU-Net raw layout for CT, BraTS 2023 layout for MRI.")
@click.option("--dicom-labels", type=click.Choice(["rtstruct", "seg"]), default="rtstruct", show_default=True,
              help="With --format dicom: label maps as RTSTRUCT contours or DICOM-SEG.")
@click.option("--channels", default=None, help="MRI channels, comma-separated subset of t1c,t1n,t2w,t2f.")
@click.pass_obj
def phantoms(out_: Output, out: Path, modality: str, n_cases: int, shape: int, seed: int, fmt: str,
             dicom_labels: str, channels: str | None) -> None:
    """Write a phantom cohort (fake head & neck CT or glioma MRI patients, with planted fake PHI) to OUT."""
    from synthrelease.data.phantoms.cohort import write_phantom_cohort

    chans = tuple(c.strip() for c in channels.split(",")) if channels else None
    with out_.console.status(f"writing {n_cases} {modality.upper()} phantoms"):
        path = write_phantom_cohort(out, modality=modality, cases=n_cases, shape=shape, seed=seed, fmt=fmt,
                                    channels=chans, dicom_labels=dicom_labels)
    out_.info(f"wrote {n_cases} {modality.upper()} phantom patients ({fmt}, {shape}^3, seed {seed}) to {path}")


@click.command()
@click.argument("src", type=click.Path(path_type=Path))
@click.option("--out", "out", type=click.Path(path_type=Path), required=True, help="The new workspace folder.")
@click.option("--modality", type=click.Choice(["ct", "mri"], case_sensitive=False), required=True)
@click.option("--layout", type=click.Choice(["auto", "nnunet", "brats", "dicom"]), default="auto", show_default=True)
@click.option("--holdout", type=float, default=0.2, show_default=True,
              help="Fraction of patients held out (never seen by generators).")
@click.option("--tuning-holdout", type=float, default=0.0, show_default=True,
              help="Fraction of patients for a tuning split, carved from the training patients: never seen by "
                   "generators nor part of the gate holdout; 'audit --on tuning' compares with it (exploratory).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--spacing", callback=_triple(float, "spacing in mm"), default=None,
              help="Target spacing in mm: 1.0 or x,y,z. Default: per-axis median of the source.")
@click.option("--shape", callback=_triple(int, "size in voxels"), default=None,
              help="Target grid: 128 or Z,Y,X. Default: median extent of the source, rounded up to x8.")
@click.option("--ct-window", type=click.Choice(["soft", "wide"]), default="soft", show_default=True,
              help="CT HU window mapped to [-1, 1]: soft [-200, 200], wide [-1000, 1000].")
@click.option("--interpolation", type=click.Choice(["linear", "bspline"]), default="linear", show_default=True,
              help="Image interpolation (label maps are always nearest neighbour).")
@click.option("--channels", default=None, help="Channels to keep, comma-separated (e.g. t1c,t2f).")
@click.option("--roi-map", default=None,
              help="DICOM ROI name patterns per label, e.g. '2=Mandible|Bone*;1=GTV*' (painted in order).")
@click.option("--keep-id-map", is_flag=True, help="Write id_map.json (pseudonym -> source name) in the workspace.")
@click.option("--allow-empty-labels", is_flag=True, help="Accept cases whose label map is all background.")
@click.option("--json", "as_json", is_flag=True, help="Print the workspace summary as JSON on stdout.")
@click.pass_obj
def ingest(out_: Output, src: Path, out: Path, modality: str, layout: str, holdout: float, tuning_holdout: float,
           seed: int, spacing: tuple[float, float, float] | None, shape: tuple[int, int, int] | None, ct_window: str,
           interpolation: str, channels: str | None, roi_map: str | None, keep_id_map: bool,
           allow_empty_labels: bool, as_json: bool) -> None:
    """De-identify, pseudonymize and preprocess the protected source SRC into a new private workspace."""
    from synthrelease.data.ingest import IngestOptions
    from synthrelease.data.ingest import ingest as run_ingest

    parsed_map = None
    if roi_map:
        from synthrelease.data.dicom.rtstruct import parse_roi_map

        parsed_map = parse_roi_map(roi_map)
    options = IngestOptions(
        layout=layout, holdout=holdout, tuning_holdout=tuning_holdout, seed=seed, spacing=spacing, shape=shape,
        ct_window=ct_window, interpolation=interpolation,
        channels=tuple(c.strip() for c in channels.split(",")) if channels else None, roi_map=parsed_map,
        keep_id_map=keep_id_map, allow_empty_labels=allow_empty_labels)
    with out_.progress() as progress:
        ws = run_ingest(src, out, modality=modality, options=options, progress=progress)
    _show_summary(out_, ws, as_json)


@click.command()
@click.argument("workspace", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.pass_obj
def info(out_: Output, workspace: Path, as_json: bool) -> None:
    """Summarize a workspace: splits, grid, intensity reference, label statistics."""
    from synthrelease.data.workspace import Workspace

    _show_summary(out_, Workspace(workspace), as_json)


def _show_summary(out_: Output, ws: Any, as_json: bool) -> None:
    from synthrelease.data.summary import summarize_workspace

    with out_.progress() as progress:
        summary = summarize_workspace(ws, progress=progress)
    if as_json:
        out_.result_json(summary)
        return
    render_summary(summary)


def render_summary(summary: dict[str, Any]) -> None:
    """The summary as rich tables on stdout."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    grid = summary["grid"]
    console.print(f"[bold]workspace[/bold] {summary['workspace']}  modality {summary['modality']}  "
                  f"channels {', '.join(summary['channels'])}")
    console.print(f"grid {tuple(grid['shape_zyx'])} voxels (Z, Y, X) at {tuple(grid['spacing_xyz_mm'])} mm (x, y, z); "
                  f"[-1, 1] <-> {summary['intensity_reference']['low']} .. {summary['intensity_reference']['high']}")
    table = Table(title="real cohort by split")
    table.add_column("split")
    table.add_column("cases", justify="right")
    for name in summary["labels"]:
        if name != "background":
            table.add_column(f"{name} (cases / mean ml)", justify="right")
    for split, s in summary["splits"].items():
        row = [split, str(s["n_cases"])]
        for stats in s["labels"].values():
            mean = "-" if stats["mean_ml"] is None else f"{stats['mean_ml']:.1f}"
            row.append(f"{stats['cases_with_label']} / {mean}")
        table.add_row(*row)
    console.print(table)
