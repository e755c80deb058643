"""White-box membership inference and extraction sampling: attacks that use the model that made the set.

The tool trains the generators, so an audit of a set that synthrelease sampled in this workspace can score every
real case (train = members, holdout = non-members) with the model itself, which is what an insider or anyone the
weights leak to could do; a model can leak membership that its samples alone do not show. ``privacy.mia`` calls
``extra_attack_scores`` (or ``whitebox_status``, which also says why there are none) beside its black-box attacks.

**Which model.** The set's ``provenance.json`` (written by ``generators.sampling``) names the generator, the run and
the sha256 of ``models/<run>/model.pt``. The workspace is the parent of the audit's ``cache_dir`` (``WS/cache``).
The file must hash to the recorded sha256 (else the model is not the one that made the set), load, be the named
generator and share the audit's grid, channels and labels. No scores (and a reason) otherwise: a workspace-free
audit, a set without provenance (not made by synthrelease), a changed or missing checkpoint, a generator with no
white-box attack. The model is loaded on the CPU.

**Inputs.** Each real case enters as training feeds it (``generators.data.TrainingData``): its image on the model
range ``[-1, 1]`` (workspace cases are stored there) and its label map as class indices ``0..L-1``.

**Attacks** (``Generator.membership_scores``; arithmetic in ``generators.membership``), each a score per real case,
higher = more likely a member, named ``whitebox_<attack>``:

- ``diffusion_loss`` (``ddpm``, ``mask``, ``ldm`` in its latent): the loss attack. The training loss of the case
  (mean squared error of the network's prediction target, as the generator trains it) at timesteps 5, 10, 20 and 40%
  into the schedule (50, 100, 200, 400 of 1000), each with one fixed seeded noise draw shared by every case; score =
  minus the loss, the timesteps averaged after each is scaled by its mean over the real cases (so no timestep
  dominates). The threshold attack of Yeom et al. (2018, "Privacy risk in machine learning"), as Carlini et al.
  (2023, "Extracting training data from diffusion models", USENIX Security) run it on diffusion models; their LiRA
  calibrates it with shadow models, which an audit does not train (this is the uncalibrated loss attack).
- ``secmi`` (same generators): SecMI's t-error (Duan et al. 2023, "Are diffusion models vulnerable to membership
  inference attacks?", ICML): the case is carried to timestep 90 of 1000 by deterministic DDIM inversion in steps
  of 10, then one DDIM step forward to 100 and back; minus the squared distance to where it was (members, fitted
  best, should return closest). Small overfitted models can rank members *below* non-members by it; it is kept in
  the paper's direction, which an ideal memoriser follows (the tests check that), and fixed before seeing data.
- ``ae_reconstruction`` (``ldm``): minus the autoencoder's L1 (image) and cross-entropy (labels) reconstruction
  losses, averaged after scaling as above (Hilprecht et al. 2019, "Monte Carlo and reconstruction membership
  inference attacks against generative models", PoPETs). ``ldm`` averages its scores over both left-right
  orientations when it trained with flips.
- ``critic`` (``wgan``): the critic's score of (real image, its label map); LOGAN's white-box attack (Hayes et al.
  2019, "LOGAN: membership inference attacks against generative models", PoPETs), the discriminator-side attack that
  Chen et al. (2020, "GAN-Leaks", CCS) list beside theirs. The critic's last weights (it has no average).
- ``reconstruction`` (``wgan``): GAN-Leaks' white-box attack (Chen et al. 2020): minus the lowest squared error
  between the image and the sampling (EMA) generator's image for the case's label map, over 4 seeded latent codes each
  refined by 20 Adam steps. Its reference-calibrated variant needs a reference model trained on population data,
  which the audit does not have; the black-box side of ``privacy.mia`` calibrates with the holdout.
- ``shape_loglik`` (``shape``): the label map's log-likelihood under the statistical shape model (probabilistic
  PCA of the aligned signed distances, plus its position's normal fit).
- ``nearest_stored`` (``copycat``, the negative control that stores its training cases): minus the distance to the
  closest stored case; a member is stored, so this attack must reach AUC 1.
- ``mask_<attack>``: a conditioned generator (``ddpm`` conditioned, ``wgan``) also scores its mask source: the mask
  generator's own attacks (``mask_diffusion_loss``, ``mask_shape_loglik``, ...), or, with ``mask_source = "train"``,
  ``mask_stored`` (minus the share of voxels that differ from the closest kept training map: the model file holds
  the training masks).

Every random draw is seeded from the audit seed (``ctx.rng("whitebox")``): same seed, same scores.

**Processes.** The real cases are scored ``SCORE_BATCH`` at a time on ``SCORE_THREADS`` (1) torch thread, so the
scores do not depend on the machine's cores. With ``whitebox_workers`` (``AuditSettings``; None: one per usable
core) above 1 and enough batches, the batches are scored in spawned processes that each load the verified model
file themselves (its sha256 checked again), at most two batches per process waiting, and the results are put back
in order: the same scores as one process, byte for byte. Where a process cannot start or dies (a script without an
``if __name__ == "__main__":`` guard, memory), the batches are scored in the audit's process instead.

**Extraction.** ``extraction_cohort(ctx, n)`` samples ``n`` more cases from the same model (seed from
``ctx.rng("extraction")``, the set's sampler and steps), post-processed as ``generators.sampling`` post-processes a
released set (small components dropped, intensities back on the set's scale with its intensity reference, the set's
grid and spacing), named ``ext0000``...: the extraction attack's larger sample for the copy search (Carlini et al.
2023 sample far more cases than are released and search those).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthrelease.checks.context import AuditContext
from synthrelease.data.case import Case
from synthrelease.data.cohort import Cohort
from synthrelease.data.preprocess import from_model_range
from synthrelease.data.workspace import Workspace
from synthrelease.errors import InputError, SynthReleaseError
from synthrelease.generators.base import Generator
from synthrelease.generators.membership import LOSS_FRACTIONS, SECMI_FRACTIONS
from synthrelease.generators.runs import run_dir
from synthrelease.generators.sampling import clean_labels
from synthrelease.runtime.cores import torch_threads, usable_cores
from synthrelease.runtime.fs import sha256_file

__all__ = ["ATTACKS", "WhiteBox", "audited_model", "extra_attack_scores", "extraction_cohort", "scoring_workers",
           "white_box", "whitebox_status"]

PREFIX = "whitebox_"
SCORE_BATCH = 4  # real cases scored at once
SCORE_THREADS = 1  # torch intra-op threads that score a batch: part of the result (fp32 sums are split by thread),
# so fixed, whatever the machine's cores or the number of scoring processes
MIN_PARALLEL_BATCHES = 8  # fewer batches are scored in the audit's process (a spawned worker takes seconds to start)
EXTRACTION_BATCH = 8  # cases sampled at once by extraction_cohort (unless told otherwise)

# what each attack is, for the MIA check's evidence (names as the generators return them, without prefixes)
ATTACKS: dict[str, str] = {
    "diffusion_loss": "minus the denoising training loss at fixed timesteps with fixed noise (loss attack; Yeom et "
                      "al. 2018, Carlini et al. 2023)",
    "secmi": "minus SecMI's t-error of a deterministic DDIM step forth and back at t = 10% of the schedule (Duan et "
             "al. 2023)",
    "ae_reconstruction": "minus the autoencoder's reconstruction losses (Hilprecht et al. 2019)",
    "critic": "the critic's score of the real image with its label map (LOGAN white-box, Hayes et al. 2019)",
    "reconstruction": "minus the generator's best reconstruction error over optimised latent codes (GAN-Leaks "
                      "white-box, Chen et al. 2020)",
    "shape_loglik": "log-likelihood under the statistical shape model (probabilistic PCA and position)",
    "nearest_stored": "minus the distance to the closest case stored in the model (negative control)",
    "stored": "minus the share of voxels differing from the closest training mask stored in the model",
}


@dataclass(frozen=True)
class WhiteBox:
    """White-box attack scores of the real cases (train, then holdout), or why there are none."""

    scores: dict[str, np.ndarray]
    reason: str | None  # None when there are scores
    evidence: dict[str, Any] = field(default_factory=dict)


# -- the model ------------------------------------------------------------------------------------------------------
def _model_path(ctx: AuditContext) -> tuple[Path | None, str | None]:
    """The set's model file in the audit's workspace, or why there is none to use."""
    prov = ctx.provenance
    if not prov:
        return None, "the synthetic set has no provenance.json: it was not sampled by synthrelease"
    run, sha = prov.get("run"), prov.get("checkpoint_sha256")
    if not isinstance(run, str) or not isinstance(sha, str) or not run or not sha:
        return None, "the set's provenance names no run and checkpoint sha256"
    try:
        ws = Workspace(ctx.cache_dir.parent)
    except InputError:
        return None, "the audit has no workspace to hold the set's model (a workspace-free audit)"
    try:
        path = run_dir(ws, run) / "model.pt"
    except InputError as exc:
        return None, f"the set's provenance names no valid run ({exc.one_line()})"
    if not path.is_file():
        return None, f"the workspace has no model file for run {run!r} ({path})"
    if sha256_file(path) != sha:
        return None, (f"the model file of run {run!r} is not the checkpoint that made the set (its sha256 differs "
                      "from provenance checkpoint_sha256)")
    return path, None


def _mismatch(ctx: AuditContext, gen: Generator) -> str | None:
    """Why the loaded model cannot score the audit's cases (None when it can)."""
    named = ctx.provenance.get("generator")
    if named != gen.name:
        return f"the model file holds a {gen.name!r} generator, the set's provenance names {named!r}"
    spec = gen.spec_
    if spec.shape != ctx.grid or spec.channel_names != ctx.train.channel_names or \
            set(spec.labels.items()) != set(ctx.train.schema.labels.items()):
        return "the model was trained on another grid, channels or label schema than the audited cohorts"
    return None


def audited_model(ctx: AuditContext) -> tuple[Generator | None, str | None]:
    """The verified model that made the synthetic set, loaded on the CPU (once per audit), or why there is none."""

    def load() -> tuple[Generator | None, str | None]:
        path, reason = _model_path(ctx)
        if path is None:
            return None, reason
        try:
            gen = Generator.load(path, device="cpu")
        except SynthReleaseError as exc:
            return None, f"the set's model could not be loaded ({exc.one_line()})"
        except (RuntimeError, KeyError, TypeError, ValueError) as exc:  # a state that does not fit its networks
            return None, f"the set's model could not be loaded ({type(exc).__name__}: {exc})"
        reason = _mismatch(ctx, gen)
        if reason is not None:
            return None, reason
        for module in gen.modules().values():
            module.eval()
        return gen, None

    return ctx.memo("whitebox/model", load)


# -- membership scores ----------------------------------------------------------------------------------------------
def _real_batches(ctx: AuditContext, gen: Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Train then holdout cases, ``SCORE_BATCH`` at a time, as training feeds them: model-range images
    ``(B, C, Z, Y, X)`` and class indices ``(B, Z, Y, X)``."""
    lut = np.zeros(256, dtype=np.int64)
    values = list(gen.spec_.label_values)
    lut[values] = np.arange(len(values))
    images: list[torch.Tensor] = []
    classes: list[torch.Tensor] = []
    total, done = len(ctx.train) + len(ctx.holdout), 0
    for cohort in (ctx.train, ctx.holdout):
        for case in cohort:
            images.append(torch.from_numpy(ctx.model_image(case)))
            classes.append(torch.from_numpy(lut[case.labels]))
            done += 1
            if len(images) == SCORE_BATCH or done == total:
                yield torch.stack(images), torch.stack(classes)
                images, classes = [], []


def _progress(ctx: AuditContext) -> Callable[[int], None]:
    """``scored(n)``: ``n`` more real cases scored; reports ``white-box scores`` as done of all."""
    total, done = len(ctx.train) + len(ctx.holdout), [0]

    def scored(n: int) -> None:
        done[0] += n
        ctx.progress("white-box scores", done[0], total)

    return scored


def _combined(components: np.ndarray) -> np.ndarray:
    """``(N,)`` from ``(N, K)`` components of one attack: each scaled by its mean magnitude over the cases, then
    averaged (a ``(N,)`` score is returned as it is)."""
    if components.ndim == 1:
        return components
    scale = np.abs(components).mean(axis=0)
    scale[scale == 0] = 1.0
    return np.asarray((components / scale).mean(axis=1))


def _describe(name: str) -> str:
    if name.startswith("mask_") and name not in ATTACKS:
        return f"mask source: {ATTACKS.get(name[5:], name[5:])}"
    return ATTACKS.get(name, name)


def _batch_scores(gen: Generator, images: torch.Tensor, classes: torch.Tensor, seed: int) -> dict[str, np.ndarray]:
    with torch_threads(SCORE_THREADS):
        out = gen.membership_scores(images, classes, seed)
    return {name: value.detach().double().cpu().numpy() for name, value in out.items()}


_WORKER_MODEL: Generator | None = None  # the model a scoring process loaded (``_start_worker``)


def _start_worker(path: str, sha256: str) -> None:
    """A spawned scoring process's start: load the set's model (the file the parent verified, checked again)."""
    global _WORKER_MODEL
    if sha256_file(Path(path)) != sha256:
        raise SynthReleaseError(f"the model file {path} changed during the audit (its sha256 differs)")
    gen = Generator.load(Path(path), device="cpu")
    for module in gen.modules().values():
        module.eval()
    _WORKER_MODEL = gen


def _worker_batch_scores(images: torch.Tensor, classes: torch.Tensor, seed: int) -> dict[str, np.ndarray]:
    if _WORKER_MODEL is None:
        raise RuntimeError("the scoring process has no model")
    return _batch_scores(_WORKER_MODEL, images, classes, seed)


def scoring_workers(setting: int | None, n_batches: int) -> int:
    """Processes that score the real cases: ``whitebox_workers`` (None: one per usable core), at most one per
    batch; 1 below ``MIN_PARALLEL_BATCHES`` batches or in a daemonic process (which may not start processes). The
    scores do not depend on it: every batch is scored alike on ``SCORE_THREADS`` threads."""
    if setting is not None and (isinstance(setting, bool) or not isinstance(setting, int) or setting < 1):
        raise InputError(f"whitebox_workers {setting!r} is not a positive whole number",
                         fix="use None (one per usable core) or 1 or more")
    if multiprocessing.current_process().daemon or n_batches < MIN_PARALLEL_BATCHES:
        return 1
    return max(1, min(n_batches, usable_cores() if setting is None else setting))


def _scores_in_parallel(ctx: AuditContext, gen: Generator, seed: int, workers: int) -> list[dict[str, np.ndarray]]:
    """Every batch's scores, batches scored in ``workers`` spawned processes (each loads the model itself; at most
    two batches per process wait in line, so a large cohort is never held whole), in the order of the batches."""
    path, _ = _model_path(ctx)
    sha = ctx.provenance.get("checkpoint_sha256")
    if path is None or not isinstance(sha, str):
        raise SynthReleaseError("the set's model file is no longer usable")
    results: dict[int, dict[str, np.ndarray]] = {}
    pending: dict[Future[dict[str, np.ndarray]], int] = {}
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_start_worker, initargs=(str(path), sha)) as pool:
        def collect(block: bool) -> None:
            """Take the finished batches' scores (first waiting for the oldest batch when ``block``)."""
            ready = [f for f in pending if f.done()]
            if block and not ready:
                ready = [min(pending, key=lambda f: pending[f])]
            for future in ready:
                i = pending.pop(future)
                results[i] = future.result()
                scored(sizes[i])

        scored = _progress(ctx)
        sizes: list[int] = []
        for i, (images, classes) in enumerate(_real_batches(ctx, gen)):
            sizes.append(len(images))
            pending[pool.submit(_worker_batch_scores, images, classes, seed)] = i
            while len(pending) >= 2 * workers:
                collect(block=True)
            collect(block=False)
        while pending:
            collect(block=True)
    return [results[i] for i in range(len(results))]


def _score(ctx: AuditContext, gen: Generator) -> WhiteBox:
    seed = int(ctx.rng("whitebox").integers(2**31))
    n_real = len(ctx.train) + len(ctx.holdout)
    workers = scoring_workers(ctx.settings.whitebox_workers, -(-n_real // SCORE_BATCH))
    batches: list[dict[str, np.ndarray]] | None = None
    if workers > 1:
        try:
            batches = _scores_in_parallel(ctx, gen, seed, workers)
        except BrokenProcessPool:  # a worker could not start or died: score here instead (the same scores)
            batches = None
    if batches is None:
        scored = _progress(ctx)
        batches = []
        for images, classes in _real_batches(ctx, gen):
            batches.append(_batch_scores(gen, images, classes, seed))
            scored(len(images))
    parts: dict[str, list[np.ndarray]] = {}
    for out in batches:
        if parts and set(out) != set(parts):
            raise SynthReleaseError(f"{gen.name}'s white-box attacks changed between batches: {sorted(out)}")
        for name, value in out.items():
            parts.setdefault(name, []).append(value)
    evidence: dict[str, Any] = {"generator": gen.name, "run": ctx.provenance.get("run"),
                                "checkpoint_sha256": ctx.provenance.get("checkpoint_sha256"), "seed": seed}
    scores, dropped = {}, []
    for name, chunks in sorted(parts.items()):
        combined = _combined(np.concatenate(chunks))
        if np.isfinite(combined).all():
            scores[PREFIX + name] = combined
        else:
            dropped.append(PREFIX + name)
    evidence["attacks"] = {PREFIX + name: _describe(name) for name in sorted(parts)}
    if any(n in parts for n in ("diffusion_loss", "mask_diffusion_loss")):
        evidence["loss_timestep_fractions"] = list(LOSS_FRACTIONS)
    if any(n in parts for n in ("secmi", "mask_secmi")):
        evidence["secmi_t_and_step_fractions"] = list(SECMI_FRACTIONS)
    if dropped:
        evidence["dropped_non_finite"] = dropped
    if not parts:
        return WhiteBox({}, f"the {gen.name!r} generator has no white-box attack", evidence)
    if not scores:
        return WhiteBox({}, f"every white-box attack on the {gen.name!r} model gave non-finite scores", evidence)
    return WhiteBox(scores, None, evidence)


def white_box(ctx: AuditContext) -> WhiteBox:
    """Scores of every white-box attack on the set's model (computed once per audit), or the reason for none."""

    def compute() -> WhiteBox:
        gen, reason = audited_model(ctx)
        if gen is None:
            return WhiteBox({}, reason)
        try:
            return _score(ctx, gen)
        except (SynthReleaseError, RuntimeError, MemoryError) as exc:  # the black-box attacks still run
            return WhiteBox({}, f"the white-box attacks on the {gen.name!r} model failed ({type(exc).__name__}: "
                                f"{exc})")

    return ctx.memo("whitebox/scores", compute)


def whitebox_status(ctx: AuditContext) -> tuple[dict[str, np.ndarray], str | None]:
    """``(scores, reason)``: per attack (``whitebox_...``) one score per real case, train then holdout, higher = more
    likely a member; ``({}, why)`` when there is no usable model or attack."""
    result = white_box(ctx)
    return dict(result.scores), result.reason


def extra_attack_scores(ctx: AuditContext) -> dict[str, np.ndarray]:
    """The white-box attacks' scores (``whitebox_status`` without the reason); ``{}`` when there are none."""
    return whitebox_status(ctx)[0]


# -- extraction -----------------------------------------------------------------------------------------------------
def _extraction_seed(ctx: AuditContext) -> int:
    """A seed from the audit seed that is not the set's own (which would sample the released cases again)."""
    rng = ctx.rng("extraction")
    while True:
        seed = int(rng.integers(2**31))
        if seed != ctx.provenance.get("seed"):
            return seed


def _intensity_reference(ctx: AuditContext) -> tuple[list[float], list[float]] | None:
    ref = ctx.provenance.get("intensity_reference")
    if isinstance(ref, dict) and "low" in ref and "high" in ref:
        return [float(v) for v in ref["low"]], [float(v) for v in ref["high"]]
    if ctx.intensity_reference is not None:
        return [float(v) for v in ctx.intensity_reference[0]], [float(v) for v in ctx.intensity_reference[1]]
    return None


def extraction_cohort(ctx: AuditContext, n: int, *, batch: int | None = None) -> Cohort | None:
    """``n`` more cases from the set's model, made and post-processed as the set was (see the module docstring),
    in memory, ``batch`` at a time (default ``EXTRACTION_BATCH``); ``None`` when there is no usable model. Same audit
    seed, same cases."""
    if n < 1 or (batch is not None and batch < 1):
        raise InputError(f"cannot sample {n} extraction cases in batches of {batch}", fix="ask for one or more")
    gen, _ = audited_model(ctx)
    reference = _intensity_reference(ctx)
    if gen is None or reference is None:
        return None
    prov, low, high = ctx.provenance, reference[0], reference[1]
    options = {k: prov[k] for k in ("sampler", "steps") if prov.get(k) is not None}
    min_component = int(prov.get("min_component") or 0)
    template = ctx.synthetic[0]
    seed, size = _extraction_seed(ctx), batch or min(n, EXTRACTION_BATCH)
    cases: list[Case] = []
    for first in range(0, n, size):
        for i, case in enumerate(gen.sample(min(size, n - first), seed, batch=size, offset=first, **options)):
            cases.append(case.with_(case_id=f"ext{first + i:04d}", image=from_model_range(case.image, low, high),
                                    labels=clean_labels(case.labels, min_component), geometry=template.geometry,
                                    schema=ctx.synthetic.schema, channel_names=ctx.synthetic.channel_names))
        ctx.progress("extraction samples", len(cases), n)
    return Cohort.from_cases(cases, name="extraction")
