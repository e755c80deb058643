"""Vectorized nearest-neighbour search with an alignment search on the query side.

For each query and each group of references: the highest similarity over (every transform of the query) x
(every reference in the group), which reference and which transform gave it. Queries are processed in batches and
references in blocks, so memory is bounded by ``query_batch * n_transforms * ref_block``, not by cohort size.
Similarities are matrix products (BLAS), e.g. the NCC of unit rows or a soft Dice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

__all__ = ["Matches", "best_matches", "dice_score", "dot_score", "overlap_ncc_score"]

Score = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (m, D), (n, D) -> (m, n)
Views = Callable[[torch.Tensor], torch.Tensor]  # (b, ...) -> (b, T, D)


def dot_score(q: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Dot products (the NCC when rows are centred unit vectors; the cosine for unit embeddings)."""
    return q @ r.T


def overlap_ncc_score(masks: torch.Tensor, channels: int) -> Score:
    """NCC restricted to where the query's transformed view holds data (what a shift or rotation moved out of the
    field of view is not held against a copy). Query rows are transform views, ``T`` per query in order, zero
    outside their overlap mask; ``masks`` is ``(T, V)`` over voxels, repeated for each of ``channels``."""
    m = masks if channels == 1 else masks.repeat(1, channels)  # (T, D)
    n = m.sum(dim=1)[None, :, None]  # (1, T, 1)

    def score(q: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        t = m.shape[0]
        b = q.shape[0] // t
        a = (q @ r.T).view(b, t, -1)  # sum over the overlap of q * r (q is zero outside it)
        s_r, s_rr = (m @ r.T)[None], (m @ (r * r).T)[None]  # (1, T, n)
        qv = q.view(b, t, -1)
        s_q = qv.sum(-1, keepdim=True)  # (b, T, 1)
        s_qq = torch.linalg.vector_norm(qv, dim=-1, keepdim=True).square()
        cov = a - s_q * s_r / n
        var = (s_qq - s_q * s_q / n).clamp_min(1e-8) * (s_rr - s_r * s_r / n).clamp_min(1e-8)
        return (cov / var.sqrt()).view(b * t, -1)

    return score


def dice_score(n_labels: int) -> Score:
    """Mean soft Dice ``2 sum(ab) / (sum(a^2) + sum(b^2))`` over labels, for rows that concatenate ``n_labels``
    equal blocks of soft one-hot maps (a map scores 1 with itself). A label absent from both maps is left out of
    the mean; two maps with no foreground at all score 0.
    """

    def score(q: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        qs, rs = q.view(q.shape[0], n_labels, -1), r.view(r.shape[0], n_labels, -1)
        inter = torch.bmm(qs.transpose(0, 1).contiguous(), rs.permute(1, 2, 0).contiguous())  # (L, m, n)
        den = qs.pow(2).sum(-1).T[:, :, None] + rs.pow(2).sum(-1).T[:, None, :]  # (L, m, n)
        present = den > 1e-6
        dice = torch.where(present, 2 * inter / den.clamp_min(1e-6), torch.zeros_like(den))
        count = present.sum(0)
        return torch.where(count > 0, dice.sum(0) / count.clamp_min(1), torch.zeros_like(dice[0]))

    return score


@dataclass(frozen=True)
class Matches:
    """Per query (rows) and group (columns): best similarity, the reference index (into ``refs``), the transform."""

    similarity: torch.Tensor  # (Q, G) float
    reference: torch.Tensor  # (Q, G) long
    transform: torch.Tensor  # (Q, G) long
    top_reference: torch.Tensor | None = None  # (Q, k + e): the k best references over all groups, then ``extra``
    top_transform: torch.Tensor | None = None  # (Q, k + e, P): each one's best transform in each of P parts
    pairs: torch.Tensor | None = None  # (Q, N): best similarity over the transforms of every (query, reference)
    top_phase: torch.Tensor | None = None  # (Q, k + e): native voxels the query was moved on every axis before
    # pooling in the search that found each top reference (0 when None; see ``AuditContext.pixel_matches``)

    def column(self, g: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.similarity[:, g], self.reference[:, g], self.transform[:, g]


def best_matches(queries: torch.Tensor, refs: torch.Tensor, *, views: Views, score: Score = dot_score,
                 groups: Sequence[Sequence[int]] | None = None, query_batch: int = 8, ref_block: int = 512,
                 top_k: int = 0, top_parts: Sequence[Sequence[int]] | None = None, keep_pairs: bool = False,
                 extra: torch.Tensor | None = None, progress: Callable[[int, int], None] | None = None) -> Matches:
    """Best match of each query in each group of ``refs`` (``(N, D)`` rows already in the score's form); with
    ``top_k``, also the ``top_k`` best references over all of ``refs`` (ranked by their best transform, any part or
    none: on a pooled grid a small rotation can outscore a copy's half-cell-off shift) with their best transform in
    each of ``top_parts`` (lists of transform indices, e.g. the unmirrored and the mirrored shifts; default: every
    transform as one part), so a near-symmetric case keeps both mirror states; with
    ``keep_pairs``, the whole ``(Q, N)`` matrix of best similarities over the transforms (``Q * N`` floats). ``extra``
    (``(Q, e)`` reference indices chosen by the caller, e.g. nearest in another space) are appended to the top
    references whatever their rank here, with their best transform in each part."""
    n_q, n_r = queries.shape[0], refs.shape[0]
    group_list = [list(range(n_r))] if groups is None else [list(g) for g in groups]
    member = torch.zeros(len(group_list), n_r, dtype=torch.bool)
    for gi, g in enumerate(group_list):
        member[gi, g] = True
    sim = torch.full((n_q, len(group_list)), float("-inf"))
    ref_idx = torch.full((n_q, len(group_list)), -1, dtype=torch.long)
    tr_idx = torch.zeros((n_q, len(group_list)), dtype=torch.long)
    parts = [torch.as_tensor(list(p), dtype=torch.long) for p in top_parts] if top_parts is not None else None
    n_parts = 1 if parts is None else len(parts)
    k = min(top_k, n_r)
    top_sim = torch.full((n_q, k), float("-inf"))
    top_ref = torch.full((n_q, k), -1, dtype=torch.long)
    top_tr = torch.zeros((n_q, k, n_parts), dtype=torch.long)
    extra = torch.zeros((n_q, 0), dtype=torch.long) if extra is None else extra.long()
    extra_tr = torch.zeros((n_q, extra.shape[1], n_parts), dtype=torch.long)
    tops = bool(k or extra.shape[1])  # whether the top lists are kept at all
    pairs = torch.full((n_q, n_r), float("-inf")) if keep_pairs else None
    with torch.no_grad():
        for q0 in range(0, n_q, query_batch):
            v = views(queries[q0:q0 + query_batch])  # (b, T, D)
            b, t = v.shape[:2]
            flat = v.reshape(b * t, -1)
            for r0 in range(0, n_r, ref_block):
                s = score(flat, refs[r0:r0 + ref_block]).view(b, t, -1)  # (b, T, n)
                best_t_sim, best_t = s.max(dim=1)  # (b, n)
                if pairs is not None:
                    pairs[q0:q0 + b, r0:r0 + s.shape[2]] = best_t_sim
                if tops:
                    n_blk = s.shape[2]
                    if parts is None:
                        part_t = best_t[:, None]  # (b, 1, n)
                    else:
                        found = [s[:, idx].max(dim=1).indices for idx in parts]
                        part_t = torch.stack([idx[f] for idx, f in zip(parts, found, strict=True)], dim=1)
                if extra.shape[1]:
                    e = extra[q0:q0 + b]  # (b, e)
                    here = (e >= r0) & (e < r0 + n_blk)
                    got = part_t.gather(2, (e - r0).clamp(0, n_blk - 1)[:, None, :].expand(-1, n_parts, -1))
                    extra_tr[q0:q0 + b] = torch.where(here[:, :, None], got.transpose(1, 2), extra_tr[q0:q0 + b])
                if k:
                    cand_sim = torch.cat([top_sim[q0:q0 + b], best_t_sim], dim=1)
                    cols = torch.arange(r0, r0 + n_blk).expand(b, -1)
                    cand_ref = torch.cat([top_ref[q0:q0 + b], cols], dim=1)
                    cand_tr = torch.cat([top_tr[q0:q0 + b], part_t.transpose(1, 2)], dim=1)  # (b, k + n, P)
                    top_sim[q0:q0 + b], pick = cand_sim.topk(k, dim=1)
                    top_ref[q0:q0 + b] = cand_ref.gather(1, pick)
                    top_tr[q0:q0 + b] = cand_tr.gather(1, pick[:, :, None].expand(-1, -1, n_parts))
                for gi in range(len(group_list)):
                    cols = member[gi, r0:r0 + ref_block]
                    if not bool(cols.any()):
                        continue
                    masked = best_t_sim.masked_fill(~cols[None, :], float("-inf"))
                    top, arg = masked.max(dim=1)  # (b,)
                    better = top > sim[q0:q0 + b, gi]
                    sim[q0:q0 + b, gi] = torch.where(better, top, sim[q0:q0 + b, gi])
                    ref_idx[q0:q0 + b, gi] = torch.where(better, arg + r0, ref_idx[q0:q0 + b, gi])
                    chosen_t = best_t.gather(1, arg[:, None])[:, 0]
                    tr_idx[q0:q0 + b, gi] = torch.where(better, chosen_t, tr_idx[q0:q0 + b, gi])
            if progress:
                progress(min(q0 + query_batch, n_q), n_q)
    if not tops:
        return Matches(sim, ref_idx, tr_idx, pairs=pairs)
    return Matches(sim, ref_idx, tr_idx, torch.cat([top_ref, extra], dim=1), torch.cat([top_tr, extra_tr], dim=1),
                   pairs)
