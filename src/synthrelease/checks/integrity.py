"""``integrity.cohort``: how much evidence the audit stands on.

Every other check compares the synthetic set with the training and holdout patients; their numbers mean little
when the holdout is tiny (tau is the maximum of a handful of similarities, the AUC's interval spans most of [0, 1]).
The counts are reported as metrics so that a policy can demand enough of them (``n_holdout >= 20`` in ``default``):
thin evidence is not a pass. Also: the share of synthetic cases that carry every foreground label, and of those
that carry none (a set of images without masks is not a segmentation dataset).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from synthrelease.checks.base import Check, Direction, Metric
from synthrelease.checks.context import AuditContext
from synthrelease.checks.registry import register

__all__ = ["CohortCheck"]


@register
class CohortCheck(Check):
    name = "integrity.cohort"
    description = "cohort sizes behind the audit and label coverage of the synthetic set"

    def compute(self, ctx: AuditContext) -> tuple[dict[str, Metric], dict[str, Any]]:
        values = list(ctx.train.schema.foreground.values())
        present = np.array([[bool(np.any(np.asarray(c.labels) == v)) for v in values] for c in ctx.synthetic])
        metrics = {
            "n_train": Metric(len(ctx.train), Direction.HIGHER, "training patients (members)"),
            "n_holdout": Metric(len(ctx.holdout), Direction.HIGHER, "unseen patients: the privacy baseline"),
            "n_synthetic": Metric(len(ctx.synthetic), Direction.HIGHER, "synthetic cases audited"),
            "all_labels_fraction": Metric(float(present.all(axis=1).mean()), Direction.HIGHER,
                                          "share of synthetic cases with every foreground label"),
            "no_label_fraction": Metric(float((~present).all(axis=1).mean()), Direction.LOWER,
                                        "share of synthetic cases without any foreground label"),
        }
        per_label = {name: float(present[:, i].mean()) for i, name in enumerate(ctx.train.schema.foreground)}
        return metrics, {"label_presence": per_label, "grid_zyx": list(ctx.grid)}
