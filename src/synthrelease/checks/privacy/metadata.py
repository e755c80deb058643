"""``privacy.metadata``: no identifier and no duplicated real volume in the synthetic set.

Findings, each counted once:

- a real-cohort identifier (case pseudonyms, source names and patient keys the workspace knows, extra strings the
  steward supplies) in any file name or file content of the set, compressed NIfTI decompressed (``leakscan``);
- a synthetic volume identical to a real case (same standardized voxels, i.e. a copy up to an intensity rescaling);
- a near-identical volume: NCC of the standardized downsampled volumes above ``near_duplicate_ncc`` without any
  alignment (a copy plus noise). Shifted or flipped copies are the memorization check's job.

The report names the file and the kind of identifier found, never the identifier itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from synthrelease.checks.base import Check, Direction, Metric, Skip
from synthrelease.checks.context import AuditContext
from synthrelease.checks.features import unit_rows
from synthrelease.checks.neighbours import best_matches
from synthrelease.checks.registry import register
from synthrelease.data.leakscan import find_strings

__all__ = ["MetadataCheck"]

MIN_IDENTIFIER_LENGTH = 4  # shorter strings (e.g. "001") match by chance


@register
class MetadataCheck(Check):
    name = "privacy.metadata"
    description = "identifiers of the real cohort in file names or headers; copied or near-copied real volumes"

    def __init__(self, near_duplicate_ncc: float = 0.995) -> None:
        self.near_duplicate_ncc = near_duplicate_ncc

    def compute(self, ctx: AuditContext) -> tuple[dict[str, Metric], dict[str, Any]]:
        if ctx.synthetic_dir is None:
            raise Skip("the synthetic set has no files on disk to inspect")
        real_ids = {*ctx.train.case_ids, *ctx.holdout.case_ids}
        needles = {s for s in (*real_ids, *ctx.identifiers) if len(s) >= MIN_IDENTIFIER_LENGTH}
        findings: list[dict[str, Any]] = []
        for f in find_strings(ctx.synthetic_dir, needles):
            findings.append({"kind": "real case id" if f.needle in real_ids else "real-cohort identifier",
                             "file": f.path.relative_to(ctx.synthetic_dir).as_posix(), "compressed": f.inside_gzip})
        real_prints = {*ctx.fingerprints("train"), *ctx.fingerprints("holdout")}
        exact: set[int] = set()
        for i, (case_id, print_) in enumerate(zip(ctx.synthetic.case_ids, ctx.fingerprints("synthetic"), strict=True)):
            if print_ in real_prints:
                exact.add(i)
                findings.append({"kind": "volume identical to a real case", "synthetic": case_id})
        real = unit_rows(ctx.volumes("real"))
        near = best_matches(ctx.volumes("synthetic"), real, views=lambda x: unit_rows(x)[:, None, :],
                            ref_block=ctx.settings.ref_block).column(0)[0].numpy()
        syn_ids = ctx.synthetic.case_ids
        for k in np.flatnonzero(near >= self.near_duplicate_ncc).tolist():
            if k not in exact:
                findings.append({"kind": "volume near-identical to a real case", "synthetic": syn_ids[k],
                                 "ncc": round(float(near[k]), 5)})
        n_strings = sum(1 for f in findings if "file" in f)
        metrics = {
            "n_findings": Metric(len(findings), Direction.LOWER, "identifiers found plus copied volumes"),
            "n_identifier_findings": Metric(n_strings, Direction.LOWER, "(file, identifier) pairs found"),
            "n_duplicate_volumes": Metric(len(findings) - n_strings, Direction.LOWER,
                                          "synthetic volumes identical or near-identical to a real case"),
            "max_unaligned_ncc": Metric(float(near.max()), Direction.LOWER,
                                        "highest NCC of a synthetic volume to a real one, no alignment"),
        }
        evidence = {"findings": findings, "identifiers_searched": len(needles),
                    "near_duplicate_ncc": self.near_duplicate_ncc}
        return metrics, evidence
