"""``AuditContext``: the cohorts an audit compares and the features its checks share (computed once, lazily).

``train`` are the members (the generator saw them), ``holdout`` real patients it never saw (the privacy baseline),
``synthetic`` the set under audit. Shared features: standardized volumes and soft label maps on small cubes, the
contrastive embedding (trained on train and holdout, cached under ``cache_dir``), the aligned nearest-neighbour
matches that several checks read and the registered copy search (``copysearch``). Everything derived from real
data is written only under ``out_dir`` and ``cache_dir``, both inside the workspace (or the folder the steward named
for a workspace-free audit).
"""

from __future__ import annotations

import bisect
import functools
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from synthrelease.checks.align import Alignment, shift_view
from synthrelease.checks.copysearch import (
    CopyScores,
    CopySearchSettings,
    centred_shortlists,
    registered_templates,
    search_copies,
)
from synthrelease.checks.embedding import EmbeddingConfig, cached_encoder
from synthrelease.checks.features import (
    fingerprint,
    label_tensor,
    pool,
    stack_cohort,
    standardized,
    to_cube,
    volume_tensor,
    working_factor,
)
from synthrelease.checks.neighbours import Matches, best_matches, dice_score, overlap_ncc_score
from synthrelease.checks.rois import IntensityReference, body_from_model, model_image
from synthrelease.data.case import Case
from synthrelease.data.cohort import Cohort
from synthrelease.errors import InputError

__all__ = ["AuditContext", "AuditSettings", "Group"]

T = TypeVar("T")
# a cohort name ("train", "holdout", "synthetic", "real") and indices (None: all)
Group = tuple[str, tuple[int, ...] | None]
REFINE_TOP_K = 32  # references per query refined below the pooled grid, from each of the two pooled phases and
# from the embedding (each in both mirror states)
RESCORE_TOP_K = 8  # references per query and group scored on the scoring grid (the best after refinement)
SCORE_CHUNK = 64  # views on the scoring grid held at once per query (64 MB at 64^3)
MAX_PAIRS_KEPT = 25_000_000  # (query, reference) similarities kept per search (100 MB): the MIA reuses them


def shift_parts(align: Alignment, shape: tuple[int, ...]) -> list[list[int]]:
    """The refinement's candidate parts: the unmirrored and the mirrored shifts (transform indices). Rotations are
    left out: the refinement moves by whole native voxels, so a rotation candidate would not be refined, and on the
    pooled grid a small rotation can outscore the half-cell-off shift of a copy's own source."""
    plan = align.plan(shape)
    return [idx for flip in (False, True) if (idx := [i for i, m in enumerate(plan)
                                                      if m.flip is flip and m.shift_xyz is not None])]


Progress = Callable[[str, int, int], None]


def _merge(a: Matches, b: Matches, b_phase: int) -> Matches:
    """Two searches of the same queries against the same references, ``b`` with the queries moved by ``b_phase``
    native voxels on every axis before pooling: the best of both per group and per pair, and both lists of
    refinement candidates, each with its phase."""
    better = b.similarity > a.similarity
    assert a.top_reference is not None and b.top_reference is not None
    assert a.top_transform is not None and b.top_transform is not None
    pairs = None if a.pairs is None or b.pairs is None else torch.maximum(a.pairs, b.pairs)
    phase = torch.cat([torch.zeros_like(a.top_reference), torch.full_like(b.top_reference, b_phase)], dim=1)
    return Matches(torch.where(better, b.similarity, a.similarity), torch.where(better, b.reference, a.reference),
                   torch.where(better, b.transform, a.transform),
                   torch.cat([a.top_reference, b.top_reference], dim=1),
                   torch.cat([a.top_transform, b.top_transform], dim=1), pairs, phase)


Vec3 = tuple[int, int, int]


def _polyphase(f: int, flip: bool, eff: Vec3) -> tuple[Vec3, Vec3]:
    """Split the native move ``eff`` (as ``shift_view`` makes it after the mirror) into the phase to move the case
    by at full resolution before pooling by ``f`` (in ``shift_view``'s convention for ``flip``) and the whole cells
    to move the pooled phase by afterwards."""
    rest = (eff[0] % f, eff[1] % f, eff[2] % f)
    cells = ((eff[0] - rest[0]) // f, (eff[1] - rest[1]) // f, (eff[2] - rest[2]) // f)
    return ((-rest[0], rest[1], rest[2]) if flip else rest), cells


def _floor(z: torch.Tensor) -> torch.Tensor:
    """``(C, 1, 1, 1)``: each channel's minimum, what enters the view when a standardized case is moved."""
    return z.flatten(1).min(dim=1).values[:, None, None, None]


@functools.lru_cache(maxsize=4096)
def _refined_overlap(f: int, shape: Vec3, flip: bool, shift_xyz: Vec3) -> torch.Tensor:
    """Flat ``(V,)`` mask of the pooled grid: the cells wholly inside the field of view after a grid of ``shape``
    native voxels is mirrored (``flip``) and moved by ``shift_xyz`` native voxels (as ``shift_view`` moves it), then
    pooled by ``f``. The same for every case, so built once per move."""
    phase, cells = _polyphase(f, flip, shift_xyz)
    inside = pool(shift_view(torch.ones(1, *shape), flip, phase, 0.0), f)
    return (shift_view(inside, False, cells, 0.0)[0] > 0.999).float().flatten()


class _Candidates:
    """One query's refinement: the native shifts to score (one row each) and, per candidate reference, the rows
    it keeps the max over. The case moved by ``rest`` (< factor) native voxels, then pooled by the factor: a shift
    factor*k + rest is that phase moved by k cells (polyphase), so the full-resolution work is done once per
    (factor, mirror, rest)."""

    def __init__(self, native: torch.Tensor, f: int, reach: int) -> None:
        self.native, self.f, self.reach = native, f, reach
        self.floor = _floor(native)
        self.shape: Vec3 = (native.shape[1], native.shape[2], native.shape[3])
        half = f // 2
        self.offsets = list(itertools.product((-half, 0, half), repeat=3))
        self.phases: dict[tuple[int, bool, Vec3], torch.Tensor] = {}
        self.row_of: dict[tuple[bool, Vec3], int] = {}
        self.specs: list[tuple[bool, Vec3]] = []
        self.rows: dict[int, set[int]] = {}

    def around(self, flip: bool, eff: Vec3) -> list[tuple[bool, Vec3]]:
        """The moves at offsets of ``{-f/2, 0, f/2}`` native voxels per axis around ``eff`` (as ``shift_view``
        makes it after the mirror), within the search's range of ``reach`` native voxels per axis."""
        out = []
        for ox, oy, oz in self.offsets:
            e = (eff[0] + ox, eff[1] + oy, eff[2] + oz)
            if max(map(abs, e)) <= self.reach:
                out.append((flip, e))
        return out

    def add(self, r: int, flip: bool, cells: tuple[int, ...], h: int) -> None:
        """Reference ``r`` at the coarse shift ``cells`` found with the query moved ``h`` voxels on every axis
        before pooling (mirrored or not, the native shift f*k + h per axis), and the moves ``around`` it."""
        s = tuple(self.f * k + h for k in cells)
        rows = self.rows.setdefault(r, set())
        for spec in self.around(flip, (-s[0] if flip else s[0], s[1], s[2])):  # shift_view mirrors x first
            if spec not in self.row_of:
                self.row_of[spec] = len(self.specs)
                self.specs.append(spec)
            rows.add(self.row_of[spec])

    def overlap_rows(self, specs: list[tuple[bool, Vec3]], factor: int, mean: torch.Tensor) -> tuple[torch.Tensor,
                                                                                              torch.Tensor]:
        """Rows for ``overlap_ncc_score`` of the case moved by each of ``specs`` and pooled by ``factor``:
        deviations from ``mean``, zero off each view's overlap, each view written straight into its row; and the
        ``(N, V)`` overlap masks."""
        phases = []
        for flip, eff in specs:
            phase, cells = _polyphase(factor, flip, eff)
            if (factor, flip, phase) not in self.phases:
                self.phases[(factor, flip, phase)] = pool(shift_view(self.native, flip, phase, self.floor), factor)
            phases.append((self.phases[(factor, flip, phase)], cells))
        out = torch.empty(len(specs), *mean.shape)
        for i, (x, cells) in enumerate(phases):
            shift_view(x, False, cells, self.floor, out=out[i])
        m = torch.stack([_refined_overlap(factor, self.shape, flip, eff) for flip, eff in specs])
        return _masked(out.sub_(mean), m), m


def _masked(q: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``(N, C, ...)`` deviations -> ``(N, C*V)`` rows, zeroed in place off each row's ``(N, V)`` overlap mask."""
    return q.flatten(2).mul_(m[:, None, :]).flatten(1)


@dataclass(frozen=True)
class AuditSettings:
    max_size: int = 32  # pixel and label-map comparisons pool the grid by a whole factor to at most this per axis
    # the pixel search's refined candidates are scored on the grid pooled to at most this per axis (>= max_size; the
    # native grid up to 64^3): the reported NCC is that of this grid, the coarse grid only chooses the candidates
    score_max_size: int = 64
    alignment: Alignment = field(default_factory=Alignment)
    copies: CopySearchSettings = field(default_factory=CopySearchSettings)  # the registered copy search
    # extraction: this many more cases sampled from the set's model (when the workspace holds it) are searched for
    # copies as well, as extraction attacks do (``privacy.memorization.n_copies_extraction``); 0: none
    extraction_samples: int = 0
    # white-box attacks: processes that score the real cases with the set's model, each on one torch thread (None:
    # one per usable core; 1: in the audit's process). The scores do not depend on it
    whitebox_workers: int | None = None
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    n_boot: int = 1000
    query_batch: int = 8
    ref_block: int = 512
    max_figures: int = 6
    workers: int = 1  # processes for per-case feature extraction (radiomics)
    diversity_max_size: int = 64  # MS-SSIM diversity pools the grid by a whole factor to at most this per axis
    max_pairs: int = 1000  # diversity: all pairs up to this many, a seeded random subsample (with a CI) above
    # utility.segmentation: engine (auto: nnunet with a CUDA GPU and nnunetv2, else monai), the MONAI engine's
    # network (dynunet, nnU-Net's architecture; unet, MONAI's UNet: cheaper, but it downsamples at its first layer
    # and misses small tumours), optimisation steps per arm (the same for every arm; MONAI dynunet on one CPU
    # thread: ~0.3 s a step at 32^3, 8x that at 64^3), and the arms
    utility_engine: str = "auto"
    utility_network: str = "dynunet"
    utility_steps: int = 500
    utility_arms: tuple[str, ...] = ("real", "synthetic", "real+synthetic")
    # bf16 autocast for the MONAI engine on a CPU with native bf16: 1.7x faster per step there, but not bit-for-bit
    # reproducible in every shape (runtime.precision), so off by default
    utility_cpu_bf16: bool = False
    # the MONAI engine on CPU: arms trained at once, each in its own process on one torch thread (None: one per usable
    # core, at most one per arm, in sequence under 100 steps; 1: in sequence in the audit's process, on one thread
    # each). The results do not depend on it
    utility_workers: int | None = None


class AuditContext:
    """What every check reads. Cohorts must share grid shape, channels and label schema."""

    def __init__(self, train: Cohort, holdout: Cohort, synthetic: Cohort, *, out_dir: Path, cache_dir: Path,
                 seed: int = 0, synthetic_dir: Path | None = None, identifiers: tuple[str, ...] = (),
                 provenance: dict[str, Any] | None = None, settings: AuditSettings | None = None,
                 progress: Progress | None = None, intensity_reference: IntensityReference | None = None) -> None:
        self.train, self.holdout, self.synthetic = train, holdout, synthetic
        self.out_dir, self.cache_dir = Path(out_dir), Path(cache_dir)
        self.seed = seed
        self.synthetic_dir = synthetic_dir
        self.identifiers = tuple(sorted({i for i in identifiers if i}))
        self.provenance = dict(provenance or {})
        self.settings = settings or AuditSettings()
        # per-channel values that the model range [-1, 1] maps to (the workspace's); None: modality defaults
        self.intensity_reference = intensity_reference
        self._progress = progress
        self._memo: dict[str, Any] = {}
        self._validate()
        self.grid: tuple[int, int, int] = self.train[0].shape
        self.factor = working_factor(self.grid, self.settings.max_size)
        # the grid the pixel NCC is finally scored on (pooled by ``score_factor`` <= ``factor``)
        self.score_factor = min(self.factor, working_factor(self.grid, max(self.settings.score_max_size,
                                                                           self.settings.max_size)))

    # -- validation -------------------------------------------------------------------------------------------
    def _validate(self) -> None:
        for name, cohort, minimum in (("train", self.train, 2), ("holdout", self.holdout, 2),
                                      ("synthetic", self.synthetic, 1)):
            if len(cohort) < minimum:
                raise InputError(f"the {name} cohort has {len(cohort)} cases; an audit needs at least {minimum}",
                                 fix="hold out more patients at ingest (--holdout)" if name == "holdout" else None)
        ref = self.train
        for name, cohort in (("holdout", self.holdout), ("synthetic", self.synthetic)):
            if cohort.channel_names != ref.channel_names or cohort.modality is not ref.modality:
                raise InputError(f"the {name} cohort has channels {list(cohort.channel_names)} "
                                 f"({cohort.modality.value}); train has {list(ref.channel_names)} "
                                 f"({ref.modality.value})", fix="audit sets of the same modality and channels")
            if set(cohort.schema.labels.items()) != set(ref.schema.labels.items()):
                raise InputError(f"the {name} cohort's labels {cohort.schema.labels} differ from train's "
                                 f"{ref.schema.labels}", fix="map both to one label schema")
        shapes = {self.train[0].shape, self.holdout[0].shape, self.synthetic[0].shape}
        if len(shapes) != 1:
            raise InputError(f"train, holdout and synthetic cases lie on different grids {sorted(shapes)}",
                             fix="sample onto the workspace grid, or resample the set before auditing")

    # -- helpers for checks -----------------------------------------------------------------------------------
    def memo(self, key: str, compute: Callable[[], T]) -> T:
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]  # type: ignore[no-any-return,unused-ignore]

    def progress(self, task: str, done: int, total: int) -> None:
        if self._progress:
            self._progress(task, done, total)

    def cohort(self, which: str) -> Cohort:
        if which not in ("train", "holdout", "synthetic"):
            raise ValueError(f"no cohort {which!r}")
        return {"train": self.train, "holdout": self.holdout, "synthetic": self.synthetic}[which]

    def figure_dir(self) -> Path:
        path = self.out_dir / "figures"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def rng(self, salt: str) -> np.random.Generator:
        """A generator seeded by the audit seed and a per-use salt (independent streams, same bytes each run)."""
        return np.random.default_rng([self.seed, *salt.encode()])

    def model_image(self, case: Case) -> np.ndarray:
        """The case's image on the model range ``[-1, 1]`` (``rois.model_image``)."""
        return model_image(case, self.intensity_reference)

    def model_cases(self, which: str) -> Iterator[tuple[Case, np.ndarray, np.ndarray]]:
        """``(case, model-range image, body mask)`` of each case of ``train``, ``holdout`` or ``synthetic``,
        loaded one at a time."""
        cohort = self.cohort(which)
        for i, case in enumerate(cohort):
            image = self.model_image(case)
            yield case, image, body_from_model(image)
            self.progress(f"read {which}", i + 1, len(cohort))

    # -- shared features --------------------------------------------------------------------------------------
    def _features(self, which: str) -> dict[str, Any]:
        """Every per-case feature of a cohort, from one pass that loads each case once: pooled standardized
        volumes, soft label maps, the embedding's input cubes and volume fingerprints."""

        def compute() -> dict[str, Any]:
            cohort, f, g, size = self.cohort(which), self.factor, self.score_factor, self.settings.embedding.size
            # references of the refinement (train, holdout) keep their volumes on the scoring grid too
            keep_fine = which != "synthetic" and f > 1
            vols, halves, fines, labs, cubes, prints = [], [], [], [], [], []
            for i, case in enumerate(cohort):
                z = standardized(case)
                vols.append(pool(z, f).contiguous())
                if keep_fine:
                    fines.append(vols[-1] if g == f else pool(z, g).contiguous())
                if f > 1:  # the case moved by half a cell on every axis, then pooled (the search's second phase)
                    halves.append(pool(shift_view(z, False, (f // 2,) * 3, _floor(z)), f).contiguous())
                labs.append(label_tensor(case, f))
                cubes.append(to_cube(z, size))
                prints.append(fingerprint(z))
                self.progress(f"load {which}", i + 1, len(cohort))
            return {"vol": torch.stack(vols), "half": torch.stack(halves) if halves else None,
                    "fine": torch.stack(fines) if fines else None, "lab": torch.stack(labs),
                    "cube": torch.stack(cubes), "print": prints}

        return self.memo(f"features/{which}", compute)

    def volumes(self, which: str) -> torch.Tensor:
        """Standardized volumes ``(N, C, z, y, x)`` pooled by ``factor`` (``real`` = train then holdout)."""
        if which == "real":
            return self.memo("vol/real", lambda: torch.cat([self.volumes("train"), self.volumes("holdout")]))
        return self._features(which)["vol"]

    def half_cell_volumes(self, which: str) -> torch.Tensor:
        """As ``volumes``, each case first moved by half a cell (``factor // 2`` native voxels) on every axis; only
        when ``factor`` > 1."""
        if self.factor == 1:
            raise ValueError("half-cell volumes exist only on a pooled grid")
        if which == "real":
            return self.memo("half/real", lambda: torch.cat([self.half_cell_volumes("train"),
                                                             self.half_cell_volumes("holdout")]))
        return self._features(which)["half"]

    def scoring_volumes(self, which: str) -> torch.Tensor:
        """Standardized ``train`` or ``holdout`` volumes ``(N, C, z, y, x)`` on the scoring grid (pooled by
        ``score_factor``); only when ``factor`` > 1."""
        fine = self._features(which)["fine"]
        if fine is None:
            raise ValueError("scoring volumes exist for train and holdout on a pooled grid")
        return fine

    def scoring_template(self) -> torch.Tensor:
        """The mean standardized training volume on the scoring grid."""
        return self.memo("template/fine", lambda: self.scoring_volumes("train").mean(dim=0))

    def label_maps(self, which: str) -> torch.Tensor:
        """Soft one-hot foreground label maps ``(N, L, z, y, x)`` (``real`` = train then holdout)."""
        if which == "real":
            return self.memo("lab/real", lambda: torch.cat([self.label_maps("train"), self.label_maps("holdout")]))
        return self._features(which)["lab"]

    def fingerprints(self, which: str) -> list[str]:
        """``features.fingerprint`` of each case's standardized voxels."""
        return list(self._features(which)["print"])

    def embeddings(self, which: str) -> torch.Tensor:
        """Unit embeddings ``(N, d)`` from the contrastive encoder trained on the real cases, members and non-members
        alike (train and holdout: a space learnt from members only would place them apart from unseen patients and
        hand the membership attacks an edge the release does not give), centred on the real mean before scaling
        (cosines then compare what is patient-specific); ``real`` = train, then holdout."""
        if which == "real":
            return self.memo("emb/real", lambda: torch.cat([self.embeddings("train"), self.embeddings("holdout")]))

        def compute() -> torch.Tensor:
            real_in = torch.cat([self._features("train")["cube"], self._features("holdout")["cube"]])
            encoder = self.memo("encoder", lambda: cached_encoder(
                real_in, self.cache_dir, self.settings.embedding,
                lambda d, t: self.progress("train embedding", d, t)))
            centre = self.memo("emb-centre", lambda: encoder.embed(real_in).mean(dim=0))
            return torch.nn.functional.normalize(encoder.embed(self._features(which)["cube"]) - centre, dim=1)

        return self.memo(f"emb/{which}", compute)

    def n(self, which: str) -> int:
        return len(self.train) + len(self.holdout) if which == "real" else len(self.cohort(which))

    def standard_groups(self) -> tuple[Group, ...]:
        """Reference groups of the synthetic set's searches: train, holdout, and equal-size subsamples of both
        (the distance-to-closest-record comparison), drawn once with the audit seed."""

        def draw() -> tuple[Group, ...]:
            m = min(len(self.train), len(self.holdout))
            rng = self.rng("dcr-subsample")
            t = tuple(sorted(int(i) for i in rng.choice(len(self.train), m, replace=False)))
            h = tuple(sorted(int(i) for i in rng.choice(len(self.holdout), m, replace=False)))
            return (("train", None), ("holdout", None), ("train", t), ("holdout", h))

        return self.memo("groups", draw)

    def _refs(self, groups: tuple[Group, ...],
              rows: Callable[[str], torch.Tensor]) -> tuple[torch.Tensor, list[range | list[int]]]:
        cohorts = list(dict.fromkeys(g[0] for g in groups))
        offsets, start = {}, 0
        for c in cohorts:
            offsets[c] = start
            start += self.n(c)
        index: list[range | list[int]] = [
            range(offsets[c], offsets[c] + self.n(c)) if idx is None else [offsets[c] + i for i in idx]
            for c, idx in groups]
        return torch.cat([rows(c) for c in cohorts]), index

    def template(self) -> torch.Tensor:
        """The mean standardized training volume: what every patient shares (body outline, typical anatomy)."""
        return self.memo("template", lambda: self.volumes("train").mean(dim=0))

    def pixel_matches(self, query: str, groups: tuple[Group, ...]) -> Matches:
        """Aligned NCC of deviations from the training template: best match of each ``query`` case in each
        reference group (one column per group). Subtracting the template keeps what is patient-specific, so two
        different patients score lower and a copy near 1, where raw NCC gives both above 0.9. The NCC is taken over the
        overlap of the transformed view with the field of view (``overlap_ncc_score``)."""

        def compute() -> Matches:
            mean = self.template()
            ref_rows, index = self._refs(groups, lambda c: (self.volumes(c) - mean).flatten(1))
            align = self.settings.alignment
            shape = tuple(mean.shape[1:])
            masks = align.overlap(shape)  # (T, V)
            channels = mean.shape[0]

            def views(x: torch.Tensor) -> torch.Tensor:
                v = (align.apply(x) - mean).flatten(3)  # (b, T, C, V)
                return (v * masks[None, :, None, :]).flatten(2)

            pooled = self.factor > 1

            def search(volumes: torch.Tensor, extra: torch.Tensor | None, task: str) -> Matches:
                return best_matches(volumes, ref_rows, views=views, score=overlap_ncc_score(masks, channels),
                                    groups=index, query_batch=self.settings.query_batch,
                                    ref_block=self.settings.ref_block, top_k=REFINE_TOP_K if pooled else 0,
                                    top_parts=shift_parts(align, shape), extra=extra,
                                    keep_pairs=self.n(query) * ref_rows.shape[0] <= MAX_PAIRS_KEPT,
                                    progress=lambda d, t: self.progress(task, d, t))

            if not pooled:
                return search(self.volumes(query), None, f"align {query} cases")
            # two phases on the pooled grid: as pooled, and moved half a cell on every axis first. A copy moved by
            # an odd number of voxels on some axes then sits at most half a cell off its source on one axis in one
            # of them, which keeps the source among its best candidates against many look-alike patients
            first = search(self.volumes(query), self._embedding_candidates(query, groups), f"align {query} cases")
            second = search(self.half_cell_volumes(query), None, f"align {query} cases, half-cell phase")
            group_phase = torch.where(second.similarity > first.similarity, self.factor // 2, 0)
            return self._refine(query, _merge(first, second, self.factor // 2), ref_rows, groups, index,
                                group_phase)

        return self.memo(f"pix/{query}/{groups}", compute)

    def _embedding_candidates(self, query: str, groups: tuple[Group, ...]) -> torch.Tensor:
        """``(Q, REFINE_TOP_K)``: each query's nearest references by embedding cosine (indices into the rows of
        ``_refs(groups, ...)``). The refinement takes them beside the best references on the pooled grid: the encoder
        is trained to map a shifted or mirrored case near itself, so a copy moved half a cell off its source, which
        can rank below look-alike patients on the pooled grid, still ranks its source near the top here."""
        emb_rows, _ = self._refs(groups, self.embeddings)
        cos = self.embeddings(query) @ emb_rows.T
        return cos.topk(min(REFINE_TOP_K, emb_rows.shape[0]), dim=1).indices

    def _native_cases(self, query: str) -> Iterator[Case]:
        if query == "real":
            yield from self.train
            yield from self.holdout
        else:
            yield from self.cohort(query)

    def _scoring_rows(self, groups: tuple[Group, ...]) -> Callable[[list[int]], torch.Tensor]:
        """Rows of ``_refs(groups, ...)`` on the scoring grid, as deviations from its template: ``rows(indices)``
        gives ``(len(indices), C*V)``, gathered per query so only the candidates are held at that resolution."""
        cohorts = list(dict.fromkeys(c for c, _ in groups))
        stacks = [self.scoring_volumes(c) if c != "synthetic" else self.memo(
            "fine/synthetic", lambda: stack_cohort(self.synthetic, lambda case: volume_tensor(case, self.score_factor)))
            for c in cohorts]
        starts = list(itertools.accumulate(len(v) for v in stacks))
        mean = self.scoring_template()

        def rows(indices: list[int]) -> torch.Tensor:
            out = []
            for r in indices:
                j = bisect.bisect_right(starts, r)
                out.append(stacks[j][r - (starts[j - 1] if j else 0)])
            return (torch.stack(out) - mean).flatten(1)

        return rows

    def _rotation_overlap(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The alignment's rotations on the scoring grid: ``(R, 3, 4)`` thetas and ``(R, V)`` overlap masks."""

        def compute() -> tuple[torch.Tensor, torch.Tensor]:
            shape = tuple(self.scoring_template().shape[1:])
            plan = self.settings.alignment.plan(shape)
            rot = [i for i, m in enumerate(plan) if m.shift_xyz is None]
            thetas = torch.stack([plan[i].theta for i in rot]) if rot else torch.zeros(0, 3, 4)
            return thetas, self.settings.alignment.overlap(shape, rot)

        return self.memo("rotation-overlap/fine", compute)

    def _refine(self, query: str, coarse: Matches, ref_rows: torch.Tensor, groups: tuple[Group, ...],
                index: list[range | list[int]], group_phase: torch.Tensor) -> Matches:
        """Refinement and scoring when the search grid is pooled by ``f`` > 1: the coarse search only tries shifts
        by whole cells (``f`` native voxels) on a grid too coarse to measure a patient's likeness faithfully.

        1. Below the cell, on the pooled grid: per query, the ``REFINE_TOP_K`` best references in each of the two
           pooled phases, its ``REFINE_TOP_K`` nearest in the embedding and each group's best are tried at native
           offsets of ``{-f/2, 0, f/2}`` voxels per axis around their best unmirrored and best mirrored coarse shift
           (a near-symmetric head can make the wrong mirror state win on the coarse grid), moved at full resolution
           and pooled; the pair matrix takes these scores.
        2. On the scoring grid (pooled by ``score_factor`` <= ``f``; the native grid up to 64^3): the
           ``RESCORE_TOP_K`` best of those per group, at the same offsets around their best refined move and under
           every rotation. A query's similarity to a group is the best of these: the NCC an exhaustive search at
           that resolution reports when its best reference and move are among them, so a copy moved by any whole
           number of native voxels scores as if found exactly and tau is the exhaustive one.

        Moves stay within the search's shift range (``shift`` cells, ``shift * f`` native voxels)."""
        assert coarse.top_reference is not None and coarse.top_transform is not None
        f, g, align = self.factor, self.score_factor, self.settings.alignment
        mean, fine_mean = self.template(), self.scoring_template()
        channels = mean.shape[0]
        shape = tuple(mean.shape[1:])
        rot_thetas, rot_masks = self._rotation_overlap()
        fine_rows = self._scoring_rows(groups)
        sim, refs = coarse.similarity.clone(), coarse.reference.clone()
        pairs = None if coarse.pairs is None else coarse.pairs.clone()
        members = [set(gr) for gr in index]
        for qi, case in enumerate(self._native_cases(query)):
            cands = _Candidates(standardized(case), f, align.shift * f)
            phase_of = [0] * coarse.top_reference.shape[1] if coarse.top_phase is None else \
                coarse.top_phase[qi].tolist()
            for r, ts, h in zip(coarse.top_reference[qi].tolist(), coarse.top_transform[qi].tolist(), phase_of,
                                strict=True):
                for t in ts:
                    move = align.move(t, shape)
                    if r >= 0 and move.shift_xyz is not None:
                        cands.add(r, move.flip, move.shift_xyz, h)
            for r, t, h in zip(coarse.reference[qi].tolist(), coarse.transform[qi].tolist(),
                               group_phase[qi].tolist(), strict=True):
                if r >= 0:  # each group's coarse best, at its shift (a rotation: its mirror state, unshifted)
                    move = align.move(t, shape)
                    cands.add(r, move.flip, move.shift_xyz or (0, 0, 0), h)
            if not cands.rows:
                continue
            # 1. every candidate against every row in one product on the pooled grid; each keeps its own rows' max
            used = sorted(cands.rows)
            sel = torch.zeros(len(cands.specs), len(used), dtype=torch.bool)
            for j, r in enumerate(used):
                sel[sorted(cands.rows[r]), j] = True
            q_rows, m = cands.overlap_rows(cands.specs, f, mean)
            scores = overlap_ncc_score(m, channels)(q_rows, ref_rows[used])  # (rows, used references)
            best, arg = torch.where(sel, scores, float("-inf")).max(dim=0)
            pooled = dict(zip(used, best.tolist(), strict=True))
            best_move = {r: cands.specs[a] for r, a in zip(used, arg.tolist(), strict=True)}
            if pairs is not None:
                for r, v in pooled.items():
                    pairs[qi, r] = max(float(pairs[qi, r]), v)
            # 2. the best few of each group, scored on the scoring grid around their best move and rotated
            chosen = sorted({r for group in members for r in sorted(
                (r for r in used if r in group), key=lambda r: -pooled[r])[:RESCORE_TOP_K]})
            reference = fine_rows(chosen)
            # every rotation against every chosen reference in one product
            fine = torch.full((len(chosen),), float("-inf"))
            if len(rot_thetas):
                turned = Alignment.apply_thetas(pool(cands.native, g)[None], rot_thetas)[0]  # (R, C, ...)
                q_rot = _masked(turned.sub_(fine_mean), rot_masks)
                fine = overlap_ncc_score(rot_masks, channels)(q_rot, reference).max(dim=0).values
            # then the moves around each reference's best refined move: views shared by several references are
            # made once, in chunks of SCORE_CHUNK views scored against every chosen reference
            around = {r: cands.around(*best_move[r]) for r in chosen}
            specs = list(dict.fromkeys(s for r in chosen for s in around[r]))
            row = {s: i for i, s in enumerate(specs)}
            own = torch.zeros(len(specs), len(chosen), dtype=torch.bool)
            for j, r in enumerate(chosen):
                own[[row[s] for s in around[r]], j] = True
            for start in range(0, len(specs), SCORE_CHUNK):
                part = specs[start:start + SCORE_CHUNK]
                q_fine, m_fine = cands.overlap_rows(part, g, fine_mean)
                moved = overlap_ncc_score(m_fine, channels)(q_fine, reference)  # (views, chosen)
                moved = torch.where(own[start:start + len(part)], moved, float("-inf"))
                fine = torch.maximum(fine, moved.max(dim=0).values)
            fine_of = dict(zip(chosen, fine.tolist(), strict=True))
            for gi, group in enumerate(members):
                inside = [r for r in chosen if r in group]
                if inside:
                    r = max(inside, key=lambda r: fine_of[r])
                    sim[qi, gi], refs[qi, gi] = fine_of[r], r
        return Matches(sim, refs, coarse.transform, pairs=pairs)

    def copy_scores(self, query: str) -> CopyScores:
        """The registered copy search (``copysearch``) of the ``synthetic`` or ``holdout`` cases against the training
        patients, on the search grid (pooled by ``factor``). Candidates: each query's nearest training patients by
        the dense pixel search, after centring on the centre of mass in every mirror state, and by the embedding."""

        def compute() -> CopyScores:
            n_train, k = len(self.train), min(self.settings.copies.candidates, len(self.train))
            groups = self.standard_groups() if query == "synthetic" else (("train", None),)
            dense = self.pixel_matches(query, groups)
            # the pair matrix's columns start with the training patients (``_refs``)
            pixel = dense.pairs[:, :n_train].topk(k, dim=1).indices if dense.pairs is not None \
                else dense.reference[:, :1]
            embedded = (self.embeddings(query) @ self.embeddings("train").T).topk(k, dim=1).indices
            queries, references = self.volumes(query).numpy(), self.volumes("train").numpy()
            centred = torch.from_numpy(centred_shortlists(queries, references, k))
            candidates = torch.cat([pixel, centred, embedded], dim=1).tolist()
            return search_copies(list(queries), list(references), candidates, self.template().numpy(),
                                 self.settings.copies, lambda d, t: self.progress(f"register {query} cases", d, t),
                                 templates=self.copy_templates())

        return self.memo(f"copies/{query}", compute)

    def copy_templates(self) -> np.ndarray:
        """The template registered to each training patient (``copysearch.registered_templates``), shared by every
        copy search of the audit (holdout, set, extraction samples)."""
        return self.memo("copies/templates", lambda: registered_templates(
            list(self.volumes("train").numpy()), self.template().numpy(), iterations=self.settings.copies.iterations,
            progress=lambda d, t: self.progress("register the template to training patients", d, t)))

    def extraction_copy_scores(self, cohort: Cohort) -> CopyScores:
        """The registered copy search of an extra cohort (cases sampled beyond the release) against the training
        patients; its shortlist is the centred search's and the embedding's (the dense search is the set's)."""
        k = min(self.settings.copies.candidates, len(self.train))
        z = [standardized(case) for case in cohort]
        queries = torch.stack([pool(v, self.factor) for v in z]).numpy()
        references = self.volumes("train").numpy()
        self.embeddings("train")  # trains or loads the encoder and its centre
        encoder, centre = self._memo["encoder"], self._memo["emb-centre"]
        cubes = torch.stack([to_cube(v, self.settings.embedding.size) for v in z])
        emb = torch.nn.functional.normalize(encoder.embed(cubes) - centre, dim=1)
        embedded = (emb @ self.embeddings("train").T).topk(k, dim=1).indices
        centred = torch.from_numpy(centred_shortlists(queries, references, k))
        return search_copies(list(queries), list(references), torch.cat([centred, embedded], dim=1).tolist(),
                             self.template().numpy(), self.settings.copies,
                             lambda d, t: self.progress("register extraction samples", d, t),
                             templates=self.copy_templates())

    def mask_matches(self, query: str, ref: str) -> Matches:
        """Aligned soft Dice (mean over foreground labels): best match of each ``query`` label map in ``ref``."""

        def compute() -> Matches:
            q, r = self.label_maps(query), self.label_maps(ref)
            n_labels = q.shape[1]
            align = self.settings.alignment

            def views(x: torch.Tensor) -> torch.Tensor:
                return align.apply(x).reshape(x.shape[0], align.n_transforms(), -1)

            return best_matches(q, r.reshape(r.shape[0], -1), views=views, score=dice_score(n_labels),
                                query_batch=self.settings.query_batch, ref_block=self.settings.ref_block)

        return self.memo(f"mask/{query}/{ref}", compute)

    def mask_group_matches(self, query: str, groups: tuple[Group, ...]) -> Matches:
        """``mask_matches`` against reference groups (one column per group), e.g. halves of the holdout."""

        def compute() -> Matches:
            q = self.label_maps(query)
            ref_rows, index = self._refs(groups, lambda c: self.label_maps(c).flatten(1))
            align = self.settings.alignment

            def views(x: torch.Tensor) -> torch.Tensor:
                return align.apply(x).reshape(x.shape[0], align.n_transforms(), -1)

            return best_matches(q, ref_rows, views=views, score=dice_score(q.shape[1]), groups=index,
                                query_batch=self.settings.query_batch, ref_block=self.settings.ref_block)

        return self.memo(f"mask-groups/{query}/{groups}", compute)

    def embedding_matches(self, query: str, groups: tuple[Group, ...]) -> Matches:
        """Cosine similarity in the embedding: best match of each ``query`` case in each reference group."""

        def compute() -> Matches:
            ref_rows, index = self._refs(groups, self.embeddings)
            return best_matches(self.embeddings(query), ref_rows, views=lambda x: x[:, None, :], groups=index,
                                query_batch=1024, ref_block=self.settings.ref_block)

        return self.memo(f"emb-match/{query}/{groups}", compute)
