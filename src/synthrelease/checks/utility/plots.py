"""The utility check's figure: per-case Dice on the real holdout, one box per arm, grouped by class and region.

The boxes summarize scores of real holdout patients: the check lists the figure with ``contains_real_data = true``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = ["dice_boxplot"]

COLOURS = ("#1f77b4", "#d62728", "#9467bd", "#2ca02c", "#ff7f0e")


def dice_boxplot(path: Path, tables: Mapping[str, np.ndarray], structures: Sequence[str]) -> Path:
    """``tables[arm]``: ``(cases, structures)`` Dice (NaN = undefined, left out)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    arms = list(tables)
    width = 0.8 / max(len(arms), 1)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(structures) * max(len(arms), 1) * 0.6 + 1.5), 3.2))
    for a, arm in enumerate(arms):
        data = [tables[arm][:, j][np.isfinite(tables[arm][:, j])] for j in range(len(structures))]
        pos = [j + (a - (len(arms) - 1) / 2) * width for j in range(len(structures))]
        keep = [k for k, d in enumerate(data) if d.size]
        if not keep:
            continue
        box = ax.boxplot([data[k] for k in keep], positions=[pos[k] for k in keep], widths=width * 0.9,
                         patch_artist=True, showfliers=True)
        for patch in box["boxes"]:
            patch.set_facecolor(COLOURS[a % len(COLOURS)])
            patch.set_alpha(0.6)
        ax.plot([], [], color=COLOURS[a % len(COLOURS)], linewidth=6, alpha=0.6, label=arm)
    ax.set_xticks(range(len(structures)), list(structures))
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("Dice (real holdout)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
