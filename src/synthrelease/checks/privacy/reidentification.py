"""``privacy.reidentification``: could a synthetic face be matched to a training patient's face?

Head scans show a face (Schwarz et al., NEJM 2019). Each case's skin surface is rendered as a frontal depth map
around the nose tip (``face.face_depth_map``); training faces form the attacker's gallery. A probe is
re-identified when its rank-1 gallery face is more similar than any two distinct gallery patients are to each
other (the attacker's acceptance threshold, calibrated on the gallery). ``rank1_rate`` is that share for the
synthetic faces, ``baseline_rate`` the share for holdout faces, who are in no gallery: the rate of false matches
by chance (about ``2 / (n_gallery + 1)`` for faces as alike as two patients are). Both are estimates: the rank-1
rate carries an exact (Clopper-Pearson) 95% interval, and ``excess_p_value`` is the one-sided p-value that synthetic
faces are accepted more often than holdout faces (Fisher's exact test: exact when synthetic and holdout faces are
exchangeable, although all are judged against one gallery and one threshold). The same linkage in the contrastive
embedding is reported beside it (the generic form, for scans without a face).
Skipped, with the reason, when too few faces are in view.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from synthrelease.checks.base import Check, Direction, Metric, Skip
from synthrelease.checks.context import AuditContext
from synthrelease.checks.privacy.face import FaceMap, face_depth_map, face_similarity, gallery_threshold, rank1_rate
from synthrelease.checks.registry import register
from synthrelease.checks.stats import binomial_ci, excess_rate_p_value
from synthrelease.data.cohort import Cohort

__all__ = ["ReidentificationCheck"]

MIN_FACES = 4


def _faces(cohort: Cohort) -> tuple[list[FaceMap], list[str], dict[str, int]]:
    maps: list[FaceMap] = []
    ids: list[str] = []
    reasons: dict[str, int] = {}
    for case in cohort:
        face = face_depth_map(case)
        if isinstance(face, str):
            reasons[face] = reasons.get(face, 0) + 1
        else:
            maps.append(face)
            ids.append(case.case_id)
    return maps, ids, reasons


def _embedding_rates(ctx: AuditContext) -> tuple[float, float]:
    g = ctx.embeddings("train").numpy()
    gallery = g @ g.T
    threshold = gallery_threshold(gallery)
    syn = rank1_rate(ctx.embeddings("synthetic").numpy() @ g.T, threshold)[0]
    hold = rank1_rate(ctx.embeddings("holdout").numpy() @ g.T, threshold)[0]
    return syn, hold


@register
class ReidentificationCheck(Check):
    name = "privacy.reidentification"
    description = "synthetic faces matched to training faces more often than unseen faces are (rank-1 rate)"

    def compute(self, ctx: AuditContext) -> tuple[dict[str, Metric], dict[str, Any]]:
        gallery, gallery_ids, g_reasons = ctx.memo("faces/train", lambda: _faces(ctx.train))
        if len(gallery) < MIN_FACES:
            raise Skip(f"only {len(gallery)} of {len(ctx.train)} training cases show a face in view "
                       f"({'; '.join(f'{k}: {v}' for k, v in sorted(g_reasons.items()))})",
                       not_applicable=len(gallery) == 0)  # no training face at all: no face to re-identify
        probes, probe_ids, s_reasons = _faces(ctx.synthetic)
        holdout, _, _ = ctx.memo("faces/holdout", lambda: _faces(ctx.holdout))
        if not probes or len(holdout) < 2:
            raise Skip(f"{len(probes)} synthetic and {len(holdout)} holdout cases show a face in view; "
                       "re-identification needs faces on both sides", not_applicable=len(probes) == 0)
        threshold = gallery_threshold(face_similarity(gallery, gallery))
        rate, nearest, sims = rank1_rate(face_similarity(probes, gallery), threshold)
        base, _, base_sims = rank1_rate(face_similarity(holdout, gallery), threshold)
        hits = sims > threshold
        n_hits, n_base_hits = int(hits.sum()), int((base_sims > threshold).sum())
        lo, hi = binomial_ci(n_hits, len(hits))
        emb_rate, emb_base = _embedding_rates(ctx)
        metrics = {
            "rank1_rate": Metric(rate, Direction.LOWER, "synthetic faces accepted as a training patient", lo, hi),
            "baseline_rate": Metric(base, Direction.INFO, "holdout faces accepted as a training patient (chance)"),
            "excess_p_value": Metric(excess_rate_p_value(n_hits, len(hits), n_base_hits, len(holdout)),
                                     Direction.HIGHER, "one-sided p that synthetic faces are accepted more often "
                                     "than holdout faces (Fisher's exact test)"),
            "n_faces": Metric(len(probes), Direction.INFO, "synthetic cases with a face in view"),
            "gallery_size": Metric(len(gallery), Direction.INFO, "training faces in the gallery"),
            "threshold": Metric(threshold, Direction.INFO, "acceptance: highest similarity of two gallery faces"),
            "embedding_rank1_rate": Metric(emb_rate, Direction.LOWER, "the same linkage in the embedding"),
            "embedding_baseline_rate": Metric(emb_base, Direction.INFO, "holdout linkage rate in the embedding"),
        }
        evidence = {
            "matched": [{"synthetic": probe_ids[i], "train": gallery_ids[int(nearest[i])],
                         "similarity": round(float(sims[i]), 4)} for i in np.flatnonzero(hits)],
            "no_face": s_reasons,
            "similarity": "1 / (1 + RMS depth difference in mm) after shift and mirror search",
            "contains_real_data": True,
        }
        return metrics, evidence
