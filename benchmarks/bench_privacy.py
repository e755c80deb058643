"""Privacy-family cost at scale: time and peak memory of every privacy check, against a brute-force search.

Run: ``python benchmarks/bench_privacy.py [--n 400] [--shape 64] [--threads 2] [--brute-subset 20]`` (the target:
400 synthetic x 400 training cases at 64^3 on 2 cores), or ``--smoke`` (12 cases at 32^3, under a minute).

Cohorts are phantom head-and-neck CTs (``make_ct_phantom`` + ``preprocess_case`` at ``--shape``^3, spacing
240/shape mm): ``n`` training, ``--holdout`` (default ``n``) holdout and ``n`` other real patients. Two control sets
are audited: ``copycat`` (the negative control: ``n`` perturbed copies of training cases) and ``others`` (the
unseen patients, renamed; a sound audit flags none). Each set is written as an nnU-Net folder so that
``privacy.metadata`` has files to scan. ``--cache-dir`` keeps the phantoms (one ``.npz`` per case) between runs.

Per set, the shared features are timed first (volumes, embedding, the pixel NCC searches of the memorization
check), then each check's ``run`` on the warm context: a check's row is what it adds to those. ``--cold`` runs the
checks on a fresh context instead (the first check that needs a feature pays for it). The embedding encoder is
trained on the first set's context and loaded from the (per-run) cache by the second, as in a workspace.
Peak memory: the process's resident set, sampled every 2 ms during each row, and ``ru_maxrss`` at the end.

Brute force: the memorization check's pixel search without its shortcuts: full resolution (no pooling), the same
alignment search (the same transforms with the same physical shifts, i.e. ``shift * factor`` voxels at full
resolution), the same overlap NCC of deviations from the training template, one (synthetic, training) pair at a
time (each query's transformed views are made once per query and reused over the training cases, chunked to bound
memory). It is timed on ``--brute-subset`` synthetic cases of each set and as many holdout cases, against every
training case, and extrapolated to the full searches. Its shifts step by ``factor`` voxels like the fast
search's coarse grid, so it misses copies moved by an odd number of voxels that the fast search's refinement finds.

Flags are therefore compared with an exhaustive reference (``--exhaustive-subset`` rows of holdout and each set):
full resolution, every whole-voxel shift in the same physical range, the same flips and rotations, against every
training case, scored with matrix products (untimed: it is the reference, not a contender). One rule on both
sides: flagged when above tau = the highest similarity of the subset's holdout cases to the training set, each
search with its own tau. ``--exhaustive-boundary M`` adds the rows the verdict hinges on: the M cases of each
set whose fast score is nearest the check's tau, and the M highest-scoring holdout cases (those that set tau). The
MIA's pixel attack reads the synthetic search's (synthetic, real) pair matrix, so
the family's pixel searches are synthetic x (train + holdout) and holdout x train, on both sides of the ratio.

``--json PATH`` also writes the headline figures as a flat JSON object (name -> number or string).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from benchlib import print_table
from threadpoolctl import threadpool_limits

from synthrelease.checks import AuditContext, AuditSettings
from synthrelease.checks.align import Alignment
from synthrelease.checks.embedding import EmbeddingConfig
from synthrelease.checks.features import stack_cohort, volume_tensor
from synthrelease.checks.neighbours import best_matches, overlap_ncc_score
from synthrelease.checks.registry import select_checks
from synthrelease.data.case import Case, Geometry
from synthrelease.data.cohort import Cohort
from synthrelease.data.nnunet import write_nnunet
from synthrelease.data.phantoms import make_ct_phantom
from synthrelease.data.preprocess import PreprocessConfig, preprocess_case
from synthrelease.generators import create_generator

MIB = 1024 * 1024


# -- memory ------------------------------------------------------------------------------------------------------
def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: the lifetime peak is all there is
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


@contextmanager
def rss_peak(interval: float = 0.002) -> Iterator[list[int]]:
    """Peak resident set during the block (sampled by a thread; heavy torch ops release the GIL)."""
    peak = [rss_bytes()]
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(interval):
            peak[0] = max(peak[0], rss_bytes())

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()
        peak[0] = max(peak[0], rss_bytes())


@dataclass
class Row:
    name: str
    seconds: float
    peak: int
    note: str = ""


@dataclass
class Timer:
    rows: list[Row] = field(default_factory=list)

    def __call__(self, name: str, fn: Callable[[], Any], note: str = "") -> Any:
        with rss_peak() as peak:
            t0 = time.perf_counter()
            out = fn()
            dt = time.perf_counter() - t0
        self.rows.append(Row(name, dt, peak[0], note))
        return out

    def seconds(self, name: str) -> float:
        return sum(r.seconds for r in self.rows if r.name == name)


# -- cohorts -----------------------------------------------------------------------------------------------------
def _preprocess_config(shape: int) -> PreprocessConfig:
    return PreprocessConfig.for_modality("ct", spacing=(240.0 / shape,) * 3, shape=(shape,) * 3)


def _phantom(index: int, shape: int, cache: str | None) -> Case:
    path = Path(cache) / f"ct{shape}_seed0_{index:05d}.npz" if cache else None
    if path is not None and path.is_file():
        with np.load(path) as z:
            return _REFERENCE[shape].with_(case_id=str(z["case_id"]), image=z["image"], labels=z["labels"],
                                           geometry=Geometry(tuple(z["spacing"]), tuple(z["origin"]),
                                                             tuple(z["direction"])))
    case = preprocess_case(make_ct_phantom(index, shape=shape, seed=0), _preprocess_config(shape))[0]
    if path is not None:
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.npz")
        g = case.geometry
        np.savez(tmp, case_id=case.case_id, image=case.image, labels=case.labels, spacing=g.spacing,
                 origin=g.origin, direction=g.direction)
        os.replace(tmp, path)
    return case


_REFERENCE: dict[int, Case] = {}  # per shape: a phantom whose schema, modality and channels cached cases share


def _worker_init(shape: int) -> None:
    torch.set_num_threads(1)
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    _REFERENCE.setdefault(shape, _phantom(0, shape, None))


def _phantom_chunk(indices: Sequence[int], shape: int, cache: str | None) -> list[Case]:
    return [_phantom(i, shape, cache) for i in indices]


def make_phantoms(count: int, shape: int, cache: Path | None, workers: int) -> list[Case]:
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    c = str(cache) if cache else None
    if workers <= 1 or count < 40:
        _REFERENCE.setdefault(shape, _phantom(0, shape, None))
        return _phantom_chunk(range(count), shape, c)
    chunks = [list(range(i, count, workers * 8)) for i in range(workers * 8)]
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init, initargs=(shape,)) as pool:
        parts = list(pool.map(_phantom_chunk, chunks, [shape] * len(chunks), [c] * len(chunks)))
    by_index = {i: case for chunk, part in zip(chunks, parts, strict=True) for i, case in zip(chunk, part, strict=True)}
    return [by_index[i] for i in range(count)]


def renamed(cases: Sequence[Case]) -> Cohort:
    return Cohort.from_cases([c.with_(case_id=f"syn{i:04d}") for i, c in enumerate(cases)], name="synthetic")


# -- brute force -------------------------------------------------------------------------------------------------
class BruteForce:
    """Full-resolution aligned overlap NCC, one (query, training case) pair at a time."""

    def __init__(self, train_full: torch.Tensor, align: Alignment, working_grid: tuple[int, ...], chunk: int = 32):
        self.template = train_full.mean(dim=0)  # (C, Z, Y, X)
        self.refs = (train_full - self.template).flatten(1)  # (N, C*V)
        self.thetas = align.thetas(working_grid)  # normalized: the same physical shifts at full resolution
        self.chunk = chunk
        shape = tuple(self.template.shape[1:])
        channels = self.template.shape[0]
        masks = []
        for t0 in range(0, len(self.thetas), chunk):
            th = self.thetas[t0:t0 + chunk]
            grid = F.affine_grid(th, [len(th), 1, *shape], align_corners=False)
            inside = F.grid_sample(torch.ones(len(th), 1, *shape), grid, mode="bilinear", padding_mode="zeros",
                                   align_corners=False)
            masks.append((inside > 0.999).float().flatten(1))
        self.masks = torch.cat(masks).repeat(1, channels)  # (T, C*V)
        self.count = self.masks.sum(dim=1)  # (T,)

    def views(self, volume: torch.Tensor) -> torch.Tensor:
        """``(C, Z, Y, X)`` -> ``(T, C*V)``: deviations from the template of every transform, zero off the overlap."""
        out = torch.empty_like(self.masks)
        for t0 in range(0, len(self.thetas), self.chunk):
            th = self.thetas[t0:t0 + self.chunk]
            v = Alignment.apply_thetas(volume[None], th)[0] - self.template  # (t, C, Z, Y, X)
            out[t0:t0 + len(th)] = v.flatten(1) * self.masks[t0:t0 + len(th)]
        return out

    def best(self, volume: torch.Tensor) -> tuple[float, int, int, float, float]:
        """Best (similarity, training index, transform) of one query; seconds making views and scoring pairs."""
        t0 = time.perf_counter()
        v = self.views(volume)
        s_q, s_qq = v.sum(dim=1), (v * v).sum(dim=1)
        t1 = time.perf_counter()
        best, ref, tr = float("-inf"), -1, 0
        for j in range(self.refs.shape[0]):  # one pair at a time
            r = self.refs[j]
            a, s_r, s_rr = v @ r, self.masks @ r, self.masks @ (r * r)
            cov = a - s_q * s_r / self.count
            var = (s_qq - s_q * s_q / self.count).clamp_min(1e-8) * (s_rr - s_r * s_r / self.count).clamp_min(1e-8)
            ncc = cov / var.sqrt()
            k = int(ncc.argmax())
            if float(ncc[k]) > best:
                best, ref, tr = float(ncc[k]), j, k
        return best, ref, tr, t1 - t0, time.perf_counter() - t1


@dataclass
class BruteRows:
    sim: np.ndarray
    ref: np.ndarray
    view_s: list[float]
    pair_s: list[float]


def brute_rows(bf: BruteForce, cohort: Cohort, rows: int) -> BruteRows:
    out = [bf.best(volume_tensor(cohort[i], 1)) for i in range(rows)]
    return BruteRows(np.array([o[0] for o in out]), np.array([o[1] for o in out]), [o[3] for o in out],
                     [o[4] for o in out])


def exhaustive_rows(train: Cohort, queries: dict[str, Cohort], rows: dict[str, np.ndarray], align: Alignment,
                    factor: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The memorization search without any shortcut, for the flag comparison: full resolution, every whole-voxel
    shift in the fast search's physical range (``shift * factor`` voxels per axis, in steps of one voxel, where
    the fast search steps by ``factor`` and refines only its best candidates), the same flips and rotations and the
    same overlap NCC of deviations from the training template, against every training case. Scored with matrix
    products (``best_matches``): the result is what a pair-at-a-time loop over these transforms would give."""
    full = stack_cohort(train, lambda c: volume_tensor(c, 1))
    mean = full.mean(dim=0)
    refs = (full - mean).flatten(1)
    del full
    every = Alignment(flip=align.flip, shift=align.shift * factor, rotations_deg=align.rotations_deg)
    masks = every.overlap(tuple(mean.shape[1:]))

    def views(x: torch.Tensor) -> torch.Tensor:
        v = (every.apply(x) - mean).flatten(3)  # (b, T, C, V)
        return (v * masks[None, :, None, :]).flatten(2)

    out = {}
    for name, cohort in queries.items():
        q = torch.stack([volume_tensor(cohort[int(i)], 1) for i in rows[name]])
        m = best_matches(q, refs, views=views, score=overlap_ncc_score(masks, mean.shape[0]), query_batch=1,
                         ref_block=64)
        out[name] = (m.similarity[:, 0].numpy(), m.reference[:, 0].numpy())
    return out


# -- main --------------------------------------------------------------------------------------------------------
def fmt_mib(b: int) -> str:
    return f"{b / MIB:,.0f} MiB"


def audit_set(label: str, train: Cohort, holdout: Cohort, syn: Cohort, work: Path, settings: AuditSettings,
              only: Sequence[str], cold: bool) -> tuple[Timer, AuditContext, dict[str, Any]]:
    timer = Timer()
    set_dir = work / label / "set"
    case = train[0]
    timer("write set (nnU-Net, not timed in the family)", lambda: write_nnunet(
        syn, set_dir, name=label, schema=case.schema, modality=case.modality, channel_names=case.channel_names))
    ctx = AuditContext(train, holdout, syn, out_dir=work / label / "audit", cache_dir=work / "cache", seed=0,
                       synthetic_dir=set_dir, settings=settings)
    if not cold:
        timer("features: load volumes", lambda: [ctx.volumes(w) for w in ("train", "holdout", "synthetic")])
        timer("features: embedding (train or load encoder, embed)",
              lambda: [ctx.embeddings(w) for w in ("train", "holdout", "synthetic")])
        timer("features: pixel NCC synthetic vs train+holdout",
              lambda: ctx.pixel_matches("synthetic", ctx.standard_groups()))
        timer("features: pixel NCC holdout vs train", lambda: ctx.pixel_matches("holdout", (("train", None),)))
    results = {}
    for check in select_checks(only):
        res = timer(check.name, lambda c=check: c.run(ctx))
        results[check.name] = res
        if res.status.value != "ok":
            timer.rows[-1].note = f"{res.status.value}: {res.reason}"
    return timer, ctx, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=400, help="training cases = synthetic cases per set")
    parser.add_argument("--holdout", type=int, default=None, help="holdout cases (default: --n)")
    parser.add_argument("--shape", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--brute-subset", type=int, default=20, help="synthetic (and holdout) rows brute-forced")
    parser.add_argument("--exhaustive-subset", type=int, default=8,
                        help="synthetic (and holdout) rows searched exhaustively for the flag comparison")
    parser.add_argument("--exhaustive-boundary", type=int, default=0,
                        help="also search exhaustively the M cases of each set whose fast score is nearest the "
                             "check's tau, and the M highest-scoring holdout cases (the ones that set tau)")
    parser.add_argument("--embedding-steps", type=int, default=None, help="encoder steps (default: the check's)")
    parser.add_argument("--n-boot", type=int, default=None, help="bootstrap draws (default: the check's)")
    parser.add_argument("--max-size", type=int, default=None,
                        help="the checks' working grid: pool to at most this per axis (default: the check's, 32)")
    parser.add_argument("--only", nargs="+", default=["privacy"], help="checks or families to time")
    parser.add_argument("--sets", nargs="+", default=["copycat", "others"], choices=["copycat", "others"])
    parser.add_argument("--cache-dir", type=Path, default=None, help="keep phantoms here (.npz per case)")
    parser.add_argument("--cold", action="store_true", help="no feature warm-up: each check pays what it uses first")
    parser.add_argument("--smoke", action="store_true",
                        help="12 cases at 32^3 pooled to 16^3, 2 brute rows, 2 encoder steps")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here (flat JSON object)")
    args = parser.parse_args()
    if args.smoke:
        args.n, args.shape, args.brute_subset, args.max_size = 12, 32, 2, args.max_size or 16
        args.exhaustive_subset = min(args.exhaustive_subset, 4)
        args.embedding_steps = args.embedding_steps or 2
        args.n_boot = args.n_boot or 100
    n, n_hold = args.n, args.holdout or args.n
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    emb = EmbeddingConfig() if args.embedding_steps is None else EmbeddingConfig(steps=args.embedding_steps)
    extra: dict[str, Any] = {} if args.n_boot is None else {"n_boot": args.n_boot}
    if args.max_size is not None:
        extra["max_size"] = args.max_size
    settings = AuditSettings(embedding=emb, **extra)
    print(f"# privacy family: n_train = n_synthetic = {n}, n_holdout = {n_hold}, {args.shape}^3, "
          f"{args.threads} thread(s), working grid <= {settings.max_size}, embedding steps {emb.steps}, "
          f"n_boot {settings.n_boot}\n", flush=True)

    prep = Timer()
    phantoms = prep(f"phantoms ({2 * n + n_hold} x {args.shape}^3, {args.threads} workers)",
                    lambda: make_phantoms(2 * n + n_hold, args.shape, args.cache_dir, args.threads),
                    note="cached" if args.cache_dir and any(args.cache_dir.glob(f"ct{args.shape}_*.npz")) else "")
    train = Cohort.from_cases(phantoms[:n], name="train")
    holdout = Cohort.from_cases(phantoms[n:n + n_hold], name="holdout")
    sets: dict[str, Cohort] = {}
    if "copycat" in args.sets:
        def copycat() -> Cohort:
            gen = create_generator("copycat", {})
            gen.fit(train)
            return renamed(gen.sample(n, seed=7))

        sets["copycat"] = prep("copycat set (fit + sample)", copycat)
    if "others" in args.sets:
        sets["others"] = renamed(phantoms[n + n_hold:])
    baseline = rss_bytes()
    print_table(("step", "seconds", "peak RSS", "note"),
                [(r.name, f"{r.seconds:.1f}", fmt_mib(r.peak), r.note) for r in prep.rows])

    timers: dict[str, Timer] = {}
    fast: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # per set: syn sim, syn nearest, holdout sim
    factor, results = 1, {}
    with tempfile.TemporaryDirectory(prefix="bench_privacy_") as tmp:
        for label, syn in sets.items():
            timer, ctx, results[label] = audit_set(label, train, holdout, syn, Path(tmp), settings, args.only,
                                                   args.cold)
            timers[label] = timer
            syn_m = ctx.pixel_matches("synthetic", ctx.standard_groups()).column(0)
            hold_sim = ctx.pixel_matches("holdout", (("train", None),)).column(0)[0]
            fast[label] = (syn_m[0].numpy(), syn_m[1].numpy(), hold_sim.numpy())
            factor = ctx.factor
            del ctx

    labels = list(sets)
    family = {lb: sum(r.seconds for r in timers[lb].rows if not r.name.startswith("write")) for lb in labels}
    names = [r.name for r in timers[labels[0]].rows]
    table = []
    for name in names:
        cells = [name]
        for lb in labels:
            r = next(r for r in timers[lb].rows if r.name == name)
            cells += [f"{r.seconds:.2f}", fmt_mib(r.peak)]
        notes = "; ".join(f"{lb}: {r.note}" for lb in labels for r in timers[lb].rows if r.name == name and r.note)
        table.append((*cells, notes))
    table.append(("**privacy family total**", *[c for lb in labels for c in (f"{family[lb]:.2f}", "")], ""))
    print(f"## privacy family ({n} synthetic x {n} train, {n_hold} holdout, {args.shape}^3, pooling factor {factor}, "
          f"{args.threads} thread(s); RSS before the checks {fmt_mib(baseline)})\n")
    print_table(("check", *[h for lb in labels for h in (f"{lb} s", f"{lb} peak RSS")], "note"), table)
    figures: dict[str, float | str] = {"n": n, "n_holdout": n_hold, "shape": args.shape, "pooling_factor": factor}
    for lb in labels:
        figures[f"{lb}_family_s"] = round(family[lb], 2)
        figures[f"{lb}_family_peak_rss_mib"] = round(
            max((r.peak for r in timers[lb].rows if not r.name.startswith("write")), default=0) / MIB)
        mem = results[lb].get("privacy.memorization")
        if mem is not None and mem.status.value == "ok":
            m = mem.metrics
            figures[f"{lb}_memorization_flagged"] = f"{int(m['n_flagged'].value)}/{n}"
            figures[f"{lb}_memorization_tau"] = round(m["tau"].value, 4)
            print(f"{lb}: memorization flagged {int(m['n_flagged'].value)}/{n}, tau {m['tau'].value:.4f}, "
                  f"max {m['max_similarity'].value:.4f}, median {m['median_similarity'].value:.4f}")
    print(flush=True)

    # -- brute force ---------------------------------------------------------------------------------------------
    k = min(args.brute_subset, n, n_hold)
    bt = Timer()
    working = tuple(-(-s // factor) for s in train[0].shape)
    bf = bt("brute: full-resolution training volumes, template, overlap masks", lambda: BruteForce(
        stack_cohort(train, lambda c: volume_tensor(c, 1)), settings.alignment, working))
    brute = {"holdout": bt(f"brute: {k} holdout x {n} train", lambda: brute_rows(bf, holdout, k))}
    for lb, syn in sets.items():
        brute[lb] = bt(f"brute: {k} {lb} x {n} train", lambda s=syn: brute_rows(bf, s, k))
    print_table(("step", "seconds", "peak RSS"), [(r.name, f"{r.seconds:.1f}", fmt_mib(r.peak)) for r in bt.rows])

    view_s = float(np.mean([t for b in brute.values() for t in b.view_s]))
    pair_s = float(np.mean([t / n for b in brute.values() for t in b.pair_s]))
    print(f"brute force: {view_s:.3f} s per query for its {settings.alignment.n_transforms()} views, "
          f"{pair_s * 1e3:.2f} ms per (query, training case) pair at {args.shape}^3\n")

    def brute_cost(rows: int, refs: int) -> float:
        return rows * (view_s + refs * pair_s)

    # the memorization search (syn x train, holdout x train) and every pixel search the family makes (memorization,
    # dcr and the mia's pixel attack share syn x (train + holdout); holdout x train)
    memo_brute = brute_cost(n, n) + brute_cost(n_hold, n)
    fam_brute = brute_cost(n, n + n_hold) + brute_cost(n_hold, n)
    out = []
    for lb in labels:
        memo_fast = timers[lb].seconds("features: pixel NCC synthetic vs train+holdout") + timers[lb].seconds(
            "features: pixel NCC holdout vs train")
        if memo_fast > 0:
            out.append((f"memorization pixel search ({lb})", f"{memo_brute:,.0f}", f"{memo_fast:.1f}",
                        f"{memo_brute / memo_fast:,.0f}x"))
        out.append((f"privacy family total ({lb})", f"{fam_brute:,.0f}", f"{family[lb]:.1f}",
                    f"{fam_brute / family[lb]:,.0f}x"))
        if memo_fast > 0:
            figures[f"{lb}_memorization_search_s"] = round(memo_fast, 2)
            figures[f"{lb}_memorization_brute_over_fast_x"] = round(memo_brute / memo_fast, 1)
        figures[f"{lb}_family_brute_over_fast_x"] = round(fam_brute / family[lb], 1)
    figures.update(brute_view_s=round(view_s, 4), brute_pair_s=round(pair_s, 6),
                   memorization_brute_s=round(memo_brute), family_brute_s=round(fam_brute))
    print(f"## brute force (extrapolated from {k} rows per set) vs fast\n")
    print_table(("search", "brute s (extrapolated)", "fast s", "brute / fast"), out)

    # -- flags on a subset: one rule on both sides --------------------------------------------------------------
    # brute force (same transforms as the fast search): its shifts step by ``factor`` voxels, so a copy moved by an
    # odd number of voxels escapes it; the exhaustive search tries every voxel shift and is the reference.
    ke = min(args.exhaustive_subset, n, n_hold)
    mb = min(args.exhaustive_boundary, n, n_hold)

    def with_boundary(order: np.ndarray) -> np.ndarray:
        """The first ``ke`` rows, then the first ``mb`` of ``order`` not already among them."""
        extra = [int(i) for i in order if i >= ke][:mb]
        return np.array(list(range(ke)) + extra, dtype=np.int64)

    h_fast_all = fast[labels[0]][2]
    tau_check = float(h_fast_all.max())
    rows = {"holdout": with_boundary(np.argsort(-h_fast_all, kind="stable"))}
    for lb in labels:
        rows[lb] = with_boundary(np.argsort(np.abs(fast[lb][0] - tau_check), kind="stable"))
    exh = bt(f"exhaustive: {ke} + {mb} boundary rows of holdout and each set x {n} train (untimed reference)",
             lambda: exhaustive_rows(train, {"holdout": holdout, **sets}, rows, settings.alignment, factor))
    tau_b, tau_e = float(brute["holdout"].sim.max()), float(exh["holdout"][0].max())
    flag_rows = []
    for lb in labels:
        s_fast, near_fast, h_fast = fast[lb]
        rs, rh = rows[lb], rows["holdout"]
        tau_f = float(h_fast[rh].max())
        fe, ff_e = exh[lb][0] > tau_e, s_fast[rs] > tau_f
        fb, ff_b = brute[lb].sim > tau_b, s_fast[:k] > float(h_fast[:k].max())
        ff_full = s_fast[rs] > float(h_fast.max())
        r = float(np.corrcoef(exh[lb][0], s_fast[rs])[0, 1]) if len(rs) > 1 else float("nan")
        nr = len(rs)
        flag_rows.append((lb, f"{int(fe.sum())}/{nr}", f"{int(ff_e.sum())}/{nr}",
                          "yes" if np.array_equal(fe, ff_e) else f"NO ({int((fe != ff_e).sum())} differ)",
                          f"{float(np.mean(exh[lb][1] == near_fast[rs])):.2f}", f"{r:.3f}",
                          f"{tau_e:.4f} / {tau_f:.4f}", f"{int(ff_full.sum())}/{nr}",
                          f"{int(fb.sum())}/{k} vs {int(ff_b.sum())}/{k}"))
        figures[f"{lb}_subset_flags_identical"] = f"{'yes' if np.array_equal(fe, ff_e) else 'NO'} ({nr} cases)"
        figures[f"{lb}_subset_flags_exhaustive"] = f"{int(fe.sum())}/{nr}"
        figures[f"{lb}_subset_flags_fast"] = f"{int(ff_e.sum())}/{nr}"
    figures["exhaustive_rows"] = f"first {ke} + {mb} boundary"
    print(f"## memorization flags on {ke} + {mb} cases of each set (the first {ke}, and the {mb} whose fast score is "
          f"nearest the check's tau {tau_check:.4f}): exhaustive full-resolution search vs the check, each with tau "
          f"from its own search of the same holdout rows (the first {ke} and the {mb} highest-scoring)\n")
    print_table(("set", "exhaustive flagged", "fast flagged", "identical", "same nearest case", "corr(NCC)",
                 "tau exhaustive / fast", "fast flagged (check's tau, all holdout)",
                 f"brute (same transforms) vs fast, first {k}"), flag_rows)
    print(f"peak RSS of the process (ru_maxrss): {fmt_mib(max_rss_bytes())}")
    if args.json is not None:
        figures["peak_rss_mib"] = round(max_rss_bytes() / MIB)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
