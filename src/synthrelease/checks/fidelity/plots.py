"""Report figures of the fidelity family (matplotlib, Agg backend, PNG). Figures that show real cases or
distributions of real intensities are derived from protected data: the checks list them with
``contains_real_data = true`` so that export leaves them out of a package."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = ["intensity_histograms", "label_statistics_figure", "mosaic"]

COLOURS = {"train": "#1f77b4", "holdout": "#2ca02c", "synthetic": "#d62728"}


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def intensity_histograms(path: Path, samples: Mapping[str, Mapping[str, np.ndarray]], rois: Sequence[str]) -> Path:
    """One panel per ROI: density histograms of model-range intensities of each cohort (``samples[cohort][roi]``)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(rois), figsize=(3.2 * len(rois), 2.8), squeeze=False)
    bins = np.linspace(-1, 1, 65)
    for ax, roi in zip(axes[0], rois, strict=True):
        for cohort, by_roi in samples.items():
            v = by_roi.get(roi)
            if v is not None and len(v):
                ax.hist(v, bins=bins, density=True, histtype="step", label=cohort, color=COLOURS.get(cohort))
        ax.set_title(roi)
        ax.set_xlabel("intensity (model range)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def label_statistics_figure(path: Path, tables: Mapping[str, Mapping[str, np.ndarray]], lesion: str) -> Path:
    """Tumour volume and component count histograms and the tumour centroid (y, x) of each cohort."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(10, 3))
    for cohort, t in tables.items():
        c = COLOURS.get(cohort)
        axes[0].hist(t["tumour_volume"], bins=15, histtype="step", density=True, label=cohort, color=c)
        axes[1].hist(t["tumour_count"], bins=np.arange(-0.5, max(6.5, float(np.nanmax(t["tumour_count"])) + 1)),
                     histtype="step", density=True, color=c)
        axes[2].scatter(t["tumour_centroid_x"], t["tumour_centroid_y"], s=8, alpha=0.6, color=c)
    axes[0].set_title(f"{lesion} volume (ml)")
    axes[1].set_title(f"{lesion} components")
    axes[2].set_title(f"{lesion} centroid (x, y; grid fraction)")
    axes[2].set_xlim(0, 1)
    axes[2].set_ylim(1, 0)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def mosaic(path: Path, rows: Mapping[str, Sequence[np.ndarray]]) -> Path:
    """Axial mid slices, one row per cohort (``rows[cohort]``: ``(Z, Y, X)`` model-range volumes)."""
    plt = _pyplot()
    n = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(rows), n, figsize=(1.4 * n, 1.5 * len(rows)), squeeze=False)
    for r, (cohort, vols) in enumerate(rows.items()):
        for c in range(n):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(vols):
                ax.imshow(vols[c][vols[c].shape[0] // 2], cmap="gray", vmin=-1, vmax=1)
        axes[r][0].set_title(cohort, fontsize=8, loc="left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
