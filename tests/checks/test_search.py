"""Alignment search and the batched nearest-neighbour search against brute force."""

from __future__ import annotations

import pytest
import torch

from synthrelease.checks.align import Alignment
from synthrelease.checks.context import _refined_overlap
from synthrelease.checks.neighbours import best_matches, dice_score, dot_score, overlap_ncc_score


def _views_ncc(align: Alignment, shape: tuple[int, int, int]):  # type: ignore[no-untyped-def]
    masks = align.overlap(shape)

    def views(x: torch.Tensor) -> torch.Tensor:
        return (align.apply(x).flatten(3) * masks[None, :, None, :]).flatten(2)

    return views, overlap_ncc_score(masks, 1)


def test_flipped_and_shifted_copies_score_one_with_the_right_reference() -> None:
    g = torch.Generator().manual_seed(0)
    refs = torch.randn(5, 1, 12, 12, 12, generator=g)
    src = refs[3, 0]
    shifted = torch.full_like(src, float(src.min()))
    shifted[2:, :, 1:] = src[:-2, :, :-1]  # moved 2 voxels in z and 1 in x; the minimum enters the view
    queries = torch.stack([src.flip(-1), shifted])[:, None]
    align = Alignment(shift=2)
    views, score = _views_ncc(align, (12, 12, 12))
    m = best_matches(queries, refs.flatten(1), views=views, score=score, query_batch=1, ref_block=2)
    assert torch.all(m.similarity[:, 0] > 0.999)
    assert m.reference[:, 0].tolist() == [3, 3]
    assert align.describe(int(m.transform[0, 0])) == "flip + identity"
    assert "shift" in align.describe(int(m.transform[1, 0]))


def test_best_matches_equals_brute_force_per_group() -> None:
    g = torch.Generator().manual_seed(1)
    q, r = torch.randn(7, 1, 6, 6, 6, generator=g), torch.randn(9, 216, generator=g)
    align = Alignment(shift=1, rotations_deg=())
    views = lambda x: align.apply(x).flatten(2)  # noqa: E731
    groups = [range(0, 4), [5, 7, 8]]
    m = best_matches(q, r, views=views, score=dot_score, groups=groups, query_batch=3, ref_block=4)
    full = torch.einsum("qtd,nd->qtn", views(q), r).max(dim=1).values  # (Q, N)
    for gi, grp in enumerate(groups):
        idx = torch.tensor(list(grp))
        best, arg = full[:, idx].max(dim=1)
        assert torch.allclose(m.similarity[:, gi], best)
        assert m.reference[:, gi].tolist() == idx[arg].tolist()
    assert m.pairs is None
    kept = best_matches(q, r, views=views, score=dot_score, groups=groups, query_batch=3, ref_block=4,
                        keep_pairs=True)
    assert kept.pairs is not None and torch.allclose(kept.pairs, full)  # every pair, blocks and batches joined


def test_mia_pixel_scores_come_from_the_kept_pairs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The MIA reads each real case's closest-synthetic NCC from the synthetic search's pair matrix: equal to the
    per-group best of that search; copied training cases score 1 as in a search run the other way (real cases
    against the set), and other cases below."""
    from synthrelease.checks import AuditContext, AuditSettings
    from synthrelease.data.cohort import Cohort
    from synthrelease.data.phantoms import make_ct_phantom

    cases = [make_ct_phantom(i, shape=16, seed=0) for i in range(14)]
    syn = Cohort.from_cases([c.with_(case_id=f"syn{i:03d}") for i, c in enumerate(cases[:4] + cases[10:])],
                            name="syn")
    ctx = AuditContext(Cohort.from_cases(cases[:6], name="train"), Cohort.from_cases(cases[6:10], name="holdout"),
                       syn, out_dir=tmp_path, cache_dir=tmp_path / "cache", seed=0, settings=AuditSettings())
    m = ctx.pixel_matches("synthetic", ctx.standard_groups())
    assert m.pairs is not None and m.pairs.shape == (8, 10)
    assert torch.allclose(m.pairs[:, :6].max(dim=1).values, m.similarity[:, 0])
    assert torch.allclose(m.pairs[:, 6:].max(dim=1).values, m.similarity[:, 1])
    from_pairs = m.pairs.max(dim=0).values
    other_way = ctx.pixel_matches("real", (("synthetic", None),)).similarity[:, 0]
    for scores in (from_pairs, other_way):
        assert torch.allclose(scores[:4], torch.ones(4), atol=1e-4) and float(scores[4:].max()) < 0.95


def test_soft_dice_is_one_for_identical_maps_and_ignores_absent_labels() -> None:
    a = torch.zeros(2, 4, 4, 4)
    a[0, :2] = 1  # label 1 present; label 2 absent from both maps
    b = torch.zeros(2, 4, 4, 4)
    b[0, 2:] = 1
    score = dice_score(2)
    rows = torch.stack([a.flatten(), b.flatten()])
    s = score(rows, rows)
    assert torch.allclose(s, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))


def test_sliced_moves_equal_resampled_moves() -> None:
    """Mirrors and shifts by slicing give exactly what affine_grid + grid_sample give (same conventions)."""
    from synthrelease.checks.align import shift_view

    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 1, 6, 7, 8, generator=g)
    align = Alignment(shift=2, rotations_deg=())
    fast = align.apply(x)
    slow = Alignment.apply_thetas(x, align.thetas((6, 7, 8)))
    assert torch.allclose(fast, slow, atol=1e-5)
    moved = shift_view(x, False, (1, 0, -2), -9.0)  # out[i] = in[i + k]: x by +1, z by -2
    assert torch.equal(moved[..., 2:, :, :-1], x[..., :-2, :, 1:])
    assert torch.all(moved[..., :, :, -1] == -9.0) and torch.all(moved[..., :2, :, :] == -9.0)


@pytest.mark.parametrize("flip", [False, True])
def test_polyphase_moves_equal_moving_at_full_resolution(flip: bool) -> None:
    """Refinement below the pooled grid: pooling a case moved by f*k + r native voxels equals moving the pooled
    'rest r' phase by k cells, wherever the field of view still holds data."""
    from synthrelease.checks.align import shift_view
    from synthrelease.checks.features import pool

    x = torch.randn(1, 8, 8, 8, generator=torch.Generator().manual_seed(0))
    ones = torch.ones(1, 8, 8, 8)
    f = 2
    for s in [(1, 0, 0), (-1, 2, -3), (3, -1, 0), (-2, -2, 1)]:
        direct, inside = pool(shift_view(x, flip, s, -5.0), f), pool(shift_view(ones, flip, s, 0.0), f)[0] > 0.999
        eff = (-s[0] if flip else s[0], s[1], s[2])
        rest = tuple(e % f for e in eff)
        cells = tuple((e - r) // f for e, r in zip(eff, rest, strict=True))
        phase_rest = (-rest[0], rest[1], rest[2]) if flip else rest
        poly = shift_view(pool(shift_view(x, flip, phase_rest, -5.0), f), False, cells, -5.0)  # type: ignore[arg-type]
        poly_in = shift_view(pool(shift_view(ones, flip, phase_rest, 0.0), f), False, cells, 0.0)[0] > 0.999  # type: ignore[arg-type]
        assert torch.equal(inside, poly_in) and inside.any()
        assert torch.allclose(direct[0][inside], poly[0][inside])
        assert torch.equal(_refined_overlap(f, (8, 8, 8), flip, eff), inside.float().flatten())  # cached per move


def test_extra_references_get_their_best_transform_in_each_part() -> None:
    """``extra`` references (chosen in another space) are appended to the top references whatever their rank,
    each with its best transform among the unmirrored and among the mirrored moves, as a brute force gives."""
    g = torch.Generator().manual_seed(3)
    q, r = torch.randn(5, 1, 6, 6, 6, generator=g), torch.randn(11, 216, generator=g)
    align = Alignment(shift=1, rotations_deg=())
    views = lambda x: align.apply(x).flatten(2)  # noqa: E731
    plan = align.plan((6, 6, 6))
    parts = [[i for i, mv in enumerate(plan) if mv.flip is fl] for fl in (False, True)]
    extra = torch.tensor([[10, 0], [3, 4], [7, 7], [1, 9], [2, 5]])
    m = best_matches(q, r, views=views, score=dot_score, query_batch=2, ref_block=4, top_k=2, top_parts=parts,
                     extra=extra)
    assert m.top_reference is not None and m.top_transform is not None
    assert m.top_reference.shape == (5, 4) and torch.equal(m.top_reference[:, 2:], extra)
    full = torch.einsum("qtd,nd->qtn", views(q), r)  # (Q, T, N)
    for qi in range(5):
        for j, ref in enumerate(extra[qi].tolist()):
            for pi, idx in enumerate(parts):
                assert int(m.top_transform[qi, 2 + j, pi]) == idx[int(full[qi, idx, ref].argmax())]
    only_extra = best_matches(q, r, views=views, score=dot_score, query_batch=2, ref_block=4, top_parts=parts,
                              extra=extra)
    assert only_extra.top_reference is not None and torch.equal(only_extra.top_reference, extra)


def _exhaustive_native(train, queries, align: Alignment, factor: int):  # type: ignore[no-untyped-def]
    """The reference the check must equal: full resolution, every voxel shift in the range the pooled search covers
    (``shift * factor`` native voxels), the same flips and rotations, every training case, overlap NCC of
    deviations from the training template (one row block per channel)."""
    from synthrelease.checks.features import volume_tensor

    full = torch.stack([volume_tensor(c, 1) for c in train])
    mean = full.mean(dim=0)
    every = Alignment(flip=align.flip, shift=align.shift * factor, rotations_deg=align.rotations_deg)
    masks = every.overlap(tuple(full.shape[2:]))

    def views(x: torch.Tensor) -> torch.Tensor:
        return ((every.apply(x) - mean).flatten(3) * masks[None, :, None, :]).flatten(2)

    return best_matches(torch.stack([volume_tensor(c, 1) for c in queries]), (full - mean).flatten(1), views=views,
                        score=overlap_ncc_score(masks, full.shape[1]), query_batch=1, ref_block=4)


def test_pooled_search_finds_copies_moved_by_odd_voxel_counts(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """On a pooled grid (32^3 cases searched on 16^3 cells) a copy moved by an odd number of voxels sits half a cell
    off its source; the refinement below the cell (candidates from the pooled NCC and from the embedding, scored on
    the native grid) still scores it as an exact copy of the right training case, and a patient never seen stays
    below."""
    from synthrelease.checks import AuditContext, AuditSettings
    from synthrelease.checks.align import shift_view
    from synthrelease.checks.embedding import EmbeddingConfig
    from synthrelease.data.cohort import Cohort
    from synthrelease.data.phantoms import make_ct_phantom

    cases = [make_ct_phantom(i, shape=32, seed=0) for i in range(14)]
    moves = [(False, (1, 0, 0)), (True, (-1, 1, 1)), (False, (3, -1, 2)), (True, (0, 0, -3))]
    syn = []
    for i, (flip, shift) in enumerate(moves):
        img = torch.from_numpy(cases[2 * i].image.copy())
        moved = shift_view(img, flip, shift, float(img.min())).numpy()
        lab = shift_view(torch.from_numpy(cases[2 * i].labels.astype("int64")), flip, shift, 0).numpy()
        syn.append(cases[2 * i].with_(case_id=f"syn{i:03d}", image=moved, labels=lab.astype(cases[0].labels.dtype)))
    syn.append(cases[13].with_(case_id="syn999"))  # a patient neither in train nor in holdout
    settings = AuditSettings(max_size=16, embedding=EmbeddingConfig(steps=20, batch=8))
    ctx = AuditContext(Cohort.from_cases(cases[:9], name="train"), Cohort.from_cases(cases[9:13], name="holdout"),
                       Cohort.from_cases(syn, name="syn"), out_dir=tmp_path, cache_dir=tmp_path / "cache", seed=0,
                       settings=settings)
    assert ctx.factor == 2
    sim, ref, _ = ctx.pixel_matches("synthetic", ctx.standard_groups()).column(0)
    assert torch.all(sim[:4] > 0.99), sim  # not exactly 1: each copy is standardized again after air enters
    assert ref[:4].tolist() == [0, 2, 4, 6]
    assert float(sim[4]) < 0.95
    # the reported NCC is that of the scoring grid (native here): what an exhaustive search gives there, over every
    # voxel shift in the same range, the same flips and rotations, and every training case, for copies and for
    # patients never seen alike (the check's threshold is then the exhaustive one too)
    assert ctx.score_factor == 1
    for query, cohort in (("synthetic", syn), ("holdout", cases[9:13])):
        exhaustive = _exhaustive_native(cases[:9], cohort, settings.alignment, ctx.factor)
        got = ctx.pixel_matches(query, ctx.standard_groups() if query == "synthetic" else (("train", None),))
        assert torch.allclose(got.similarity[:, 0], exhaustive.similarity[:, 0], atol=1e-5), query
        assert torch.equal(got.reference[:, 0], exhaustive.reference[:, 0])


@pytest.mark.parametrize("flip", [False, True])
def test_half_cell_phase_move_is_f_k_plus_half_on_every_axis(flip: bool) -> None:
    """The second phase of the pooled search moves a case f/2 voxels on every axis, pools, then mirrors and moves by
    k cells: the same view as moving it f*k + f/2 native voxels (mirrored or not), which is where the refinement
    centres that phase's candidates."""
    from synthrelease.checks.align import shift_view
    from synthrelease.checks.features import pool

    z = torch.randn(1, 12, 12, 12, generator=torch.Generator().manual_seed(4))
    f, h = 2, 1
    for k in [(0, 0, 0), (1, 0, -1), (-1, 1, 0)]:
        phase = shift_view(pool(shift_view(z, False, (h, h, h), -9.0), f), flip, k, -9.0)
        native = pool(shift_view(z, flip, tuple(f * c + h for c in k), -9.0), f)  # type: ignore[arg-type]
        inside = (phase > -8) & (native > -8)
        assert inside.sum() > 50 and torch.allclose(phase[inside], native[inside], atol=1e-5)


def test_native_scoring_of_multichannel_cases_equals_the_exhaustive_search(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The same property for MRI (four channels, each standardized and compared on its own rows): the refined and
    rescored search gives every query the exhaustive native search's NCC and nearest training case."""
    from synthrelease.checks import AuditContext, AuditSettings
    from synthrelease.checks.align import shift_view
    from synthrelease.checks.embedding import EmbeddingConfig
    from synthrelease.data.cohort import Cohort
    from synthrelease.data.phantoms import make_mri_phantom

    cases = [make_mri_phantom(i, shape=32, seed=0) for i in range(10)]
    syn = []
    for i, (flip, shift) in enumerate([(True, (1, -1, 0)), (False, (0, 3, 1))]):
        img = torch.from_numpy(cases[2 * i].image.copy())
        moved = torch.stack([shift_view(c, flip, shift, float(c.min())) for c in img]).numpy()
        lab = shift_view(torch.from_numpy(cases[2 * i].labels.astype("int64")), flip, shift, 0).numpy()
        syn.append(cases[2 * i].with_(case_id=f"syn{i:03d}", image=moved, labels=lab.astype(cases[0].labels.dtype)))
    syn.append(cases[9].with_(case_id="syn999"))
    settings = AuditSettings(max_size=16, embedding=EmbeddingConfig(steps=10, batch=4))
    ctx = AuditContext(Cohort.from_cases(cases[:6], name="train"), Cohort.from_cases(cases[6:9], name="holdout"),
                       Cohort.from_cases(syn, name="syn"), out_dir=tmp_path, cache_dir=tmp_path / "cache", seed=0,
                       settings=settings)
    assert ctx.factor == 2 and ctx.score_factor == 1
    assert cases[0].image.shape[0] == 4
    exhaustive = _exhaustive_native(cases[:6], syn, settings.alignment, ctx.factor)
    got = ctx.pixel_matches("synthetic", ctx.standard_groups())
    assert torch.allclose(got.similarity[:, 0], exhaustive.similarity[:, 0], atol=1e-5)
    assert torch.equal(got.reference[:, 0], exhaustive.reference[:, 0])
    assert got.reference[:2, 0].tolist() == [0, 2] and torch.all(got.similarity[:2, 0] > 0.99)
