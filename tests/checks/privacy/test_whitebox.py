"""White-box membership attacks and extraction sampling (``privacy.whitebox``) on a tiny workspace.

The workspace holds eight 16^3 CT phantoms, four in train (members) and four in holdout. Generators are trained
through ``train_run`` and sampled through ``sample_set`` as the CLI does, so the model is found the way an audit
finds it: from the set's provenance, in ``WS/models/<run>/model.pt``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomli_w
import torch
from monai.networks.schedulers import DDPMScheduler
from sklearn.metrics import roc_auc_score

from synthrelease.checks.context import AuditContext, AuditSettings
from synthrelease.checks.privacy import whitebox as whitebox_module
from synthrelease.checks.privacy.whitebox import (
    extra_attack_scores,
    extraction_cohort,
    scoring_workers,
    white_box,
    whitebox_status,
)
from synthrelease.data.ingest import IngestOptions, ingest
from synthrelease.data.nnunet import read_nnunet
from synthrelease.data.phantoms.cohort import write_phantom_cohort
from synthrelease.data.workspace import Workspace
from synthrelease.errors import InputError
from synthrelease.generators import create_generator
from synthrelease.generators.base import Generator
from synthrelease.generators.copycat import CopycatGenerator
from synthrelease.generators.data import TrainingData
from synthrelease.generators.membership import denoising_scores, secmi_scores
from synthrelease.generators.runs import train_run
from synthrelease.generators.sampling import sample_set

N_TRAIN = 4
# a latent diffusion model small enough to overfit four patients in a few hundred steps (8^3 x 3 latent)
LDM: dict[str, Any] = {
    "steps": 350, "ae_steps": 50, "batch_size": 4, "checkpoint_every": 10_000, "ae_channels": [8, 16],
    "latent_channels": 3, "norm_groups": 8, "unet_channels": [8, 16], "unet_attention": [False, False],
    "head_channels": 8, "lr_ae": 3e-3, "lr_unet": 3e-3, "ema_decay": 0.9, "flip": False, "seed": 1,
}
WGAN: dict[str, Any] = {"channels": [4, 8], "z_dim": 8, "w_dim": 8, "mapping_layers": 2, "mask_source": "train",
                        "steps": 4, "batch_size": 2, "checkpoint_every": 100, "seed": 3}
DIFFUSION: dict[str, Any] = {"channels": [8, 16], "attention_levels": [False, False], "norm_num_groups": 4,
                             "num_train_timesteps": 20, "sample_steps": 2, "steps": 2, "batch_size": 2, "seed": 3}


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    """Set before the module's fixtures compute anything (``one_torch_thread``)."""


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    root = tmp_path_factory.mktemp("whitebox")
    src = write_phantom_cohort(root / "src", modality="ct", cases=2 * N_TRAIN, shape=16, seed=0, fmt="nnunet")
    workspace = ingest(src, root / "ws", modality="ct", options=IngestOptions(seed=0, holdout=0.5))
    assert len(workspace.splits.train) == N_TRAIN and len(workspace.splits.holdout) == N_TRAIN
    return workspace


def _train_and_sample(ws: Workspace, generator: str, run: str, config: dict[str, Any]) -> Path:
    """Train ``run`` in the workspace and sample a two-case set from it (as ``synthrelease train`` / ``sample``)."""
    path = ws.root.parent / f"{run}.toml"
    path.write_text(tomli_w.dumps(config))
    train_run(ws, generator, name=run, config_file=path)
    return sample_set(ws, run, n=2, seed=0, name=f"{run}-set")


def _context(ws: Workspace, set_dir: Path, out: Path, *, seed: int = 0, cache_dir: Path | None = None,
             provenance: dict[str, Any] | None = None) -> AuditContext:
    """A fresh audit context (nothing memoised) of ``set_dir`` against the workspace's train and holdout."""
    prov = json.loads((set_dir / "provenance.json").read_text()) if provenance is None else provenance
    return AuditContext(ws.train(), ws.holdout(), read_nnunet(set_dir, name="synthetic"), out_dir=out / "audit",
                        cache_dir=cache_dir or ws.dir("cache"), seed=seed, provenance=prov,
                        intensity_reference=ws.intensity_reference)


def _auc(scores: np.ndarray) -> float:
    truth = np.r_[np.ones(N_TRAIN), np.zeros(len(scores) - N_TRAIN)]
    return float(roc_auc_score(truth, scores))


@pytest.fixture(scope="module")
def copycat_set(ws: Workspace) -> Path:
    return _train_and_sample(ws, "copycat", "cc", {})


@pytest.fixture(scope="module")
def ldm_set(ws: Workspace) -> Path:
    return _train_and_sample(ws, "ldm", "ld", LDM)


# -- attacks on the workspace's models ------------------------------------------------------------------------------
def test_copycat_attack_finds_every_member(ws: Workspace, copycat_set: Path, tmp_path: Path) -> None:
    scores, reason = whitebox_status(_context(ws, copycat_set, tmp_path))
    assert reason is None and set(scores) == {"whitebox_nearest_stored"}
    s = scores["whitebox_nearest_stored"]
    assert s.shape == (2 * N_TRAIN,)
    assert np.all(s[:N_TRAIN] == 0) and np.all(s[N_TRAIN:] < 0)  # members are stored verbatim
    assert _auc(s) > 0.95


def test_ldm_loss_attack_scores_members_higher(ws: Workspace, ldm_set: Path, tmp_path: Path) -> None:
    scores = extra_attack_scores(_context(ws, ldm_set, tmp_path))
    assert set(scores) == {"whitebox_diffusion_loss", "whitebox_secmi", "whitebox_ae_reconstruction"}
    for s in scores.values():
        assert s.shape == (2 * N_TRAIN,) and np.isfinite(s).all() and len(np.unique(s)) == len(s)
    loss = scores["whitebox_diffusion_loss"]
    assert loss[:N_TRAIN].mean() > loss[N_TRAIN:].mean()
    assert _auc(loss) >= 0.9  # at most one of the sixteen member / non-member pairs out of order


def test_scores_depend_only_on_the_audit_seed(ws: Workspace, ldm_set: Path, tmp_path: Path) -> None:
    a = extra_attack_scores(_context(ws, ldm_set, tmp_path / "a", seed=0))
    b = extra_attack_scores(_context(ws, ldm_set, tmp_path / "b", seed=0))
    c = extra_attack_scores(_context(ws, ldm_set, tmp_path / "c", seed=1))
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert not np.array_equal(a["whitebox_diffusion_loss"], c["whitebox_diffusion_loss"])  # other noise draws
    np.testing.assert_array_equal(a["whitebox_secmi"], c["whitebox_secmi"])  # deterministic: no draws at all


def test_scores_from_worker_processes_equal_those_of_the_audits_process(
        ws: Workspace, ldm_set: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two spawned processes (each loading the model itself) give the scores of one process, byte for byte: every
    batch is scored alike, on one thread, whoever scores it. Progress counts every real case once, in order."""
    monkeypatch.setattr(whitebox_module, "MIN_PARALLEL_BATCHES", 1)  # two batches here: score them in parallel
    lines: list[tuple[str, int, int]] = []
    here = {"batches": 0}  # batches scored in this process (a broken pool would fall back to scoring them here)
    batch_scores = whitebox_module._batch_scores

    def counted(*args: Any) -> dict[str, np.ndarray]:
        here["batches"] += 1
        return batch_scores(*args)

    monkeypatch.setattr(whitebox_module, "_batch_scores", counted)

    def scores(workers: int, out: Path) -> dict[str, np.ndarray]:
        ctx = _context(ws, ldm_set, out)
        ctx.settings = AuditSettings(whitebox_workers=workers)
        ctx._progress = lambda task, done, total: lines.append((task, done, total))
        found, reason = whitebox_status(ctx)
        assert reason is None, reason
        return found

    alone = scores(1, tmp_path / "one")
    assert here["batches"] == 2
    parallel = scores(2, tmp_path / "two")
    assert here["batches"] == 2  # the second run's batches were scored by the workers
    assert set(alone) == set(parallel) and alone
    for name in alone:
        np.testing.assert_array_equal(alone[name], parallel[name])
    done = [d for task, d, t in lines if task == "white-box scores"]
    assert done == [4, 8, 4, 8]  # 8 real cases in batches of 4, once per run


def test_scoring_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    assert scoring_workers(3, 100) == 3 and scoring_workers(3, 2) == 1  # under MIN_PARALLEL_BATCHES: in process
    assert scoring_workers(16, 10) == 10  # at most one per batch
    monkeypatch.setattr(whitebox_module, "usable_cores", lambda: 6)
    assert scoring_workers(None, 100) == 6 and scoring_workers(None, 9) == 6  # None: one per usable core
    monkeypatch.setattr(whitebox_module.multiprocessing, "current_process", lambda: type("P", (), {"daemon": True}))
    assert scoring_workers(4, 100) == 1  # a daemonic process may not start processes
    for bad in (0, -1, True, 1.5):
        with pytest.raises(InputError, match="whitebox_workers"):
            scoring_workers(bad, 100)  # type: ignore[arg-type]


def test_evidence_names_the_model_and_its_attacks(ws: Workspace, ldm_set: Path, tmp_path: Path) -> None:
    result = white_box(_context(ws, ldm_set, tmp_path))
    prov = json.loads((ldm_set / "provenance.json").read_text())
    assert result.evidence["generator"] == "ldm" and result.evidence["run"] == "ld"
    assert result.evidence["checkpoint_sha256"] == prov["checkpoint_sha256"]
    assert set(result.evidence["attacks"]) == set(result.scores)


def test_a_changed_checkpoint_gives_no_scores(ws: Workspace, tmp_path: Path) -> None:
    set_dir = _train_and_sample(ws, "copycat", "cc-changed", {})
    model = ws.dir("models") / "cc-changed" / "model.pt"
    gen = Generator.load(model)
    assert isinstance(gen, CopycatGenerator)
    gen._images = gen._images.flip(-1)  # a valid model, but not the one that made the set
    gen.save(model)
    ctx = _context(ws, set_dir, tmp_path)
    scores, reason = whitebox_status(ctx)
    assert scores == {} and reason is not None and "sha256" in reason
    assert extraction_cohort(ctx, 2) is None


@pytest.mark.parametrize(("change", "expected"), [
    ("no provenance", "no provenance.json"),
    ("no workspace", "workspace-free"),
    ("unknown run", "no model file"),
    ("bad run name", "no valid run"),
    ("other generator", "provenance names 'ddpm'"),
])
def test_no_usable_model_gives_a_reason(ws: Workspace, copycat_set: Path, tmp_path: Path, change: str,
                                        expected: str) -> None:
    prov = json.loads((copycat_set / "provenance.json").read_text())
    cache_dir = None
    if change == "no provenance":
        prov = {}
    elif change == "no workspace":  # a workspace-free audit keeps its cache in its own folder
        (tmp_path / "out").mkdir()
        cache_dir = tmp_path / "out" / "cache"
    elif change == "unknown run":
        prov["run"] = "ghost"
    elif change == "bad run name":
        prov["run"] = "../models/cc"
    else:
        prov["generator"] = "ddpm"
    ctx = _context(ws, copycat_set, tmp_path, cache_dir=cache_dir, provenance=prov)
    scores, reason = whitebox_status(ctx)
    assert scores == {} and extra_attack_scores(ctx) == {}
    assert reason is not None and expected in reason, reason
    assert extraction_cohort(ctx, 1) is None


def test_a_generator_without_attack_says_so(ws: Workspace, copycat_set: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(CopycatGenerator, "membership_scores", lambda self, images, classes, seed: {})
    scores, reason = whitebox_status(_context(ws, copycat_set, tmp_path))
    assert scores == {} and reason is not None and "no white-box attack" in reason


# -- extraction -----------------------------------------------------------------------------------------------------
def test_extraction_samples_more_cases_like_the_set(ws: Workspace, ldm_set: Path, tmp_path: Path) -> None:
    ctx = _context(ws, ldm_set, tmp_path / "a")
    ext = extraction_cohort(ctx, 5, batch=2)
    assert ext is not None and ext.case_ids == [f"ext{i:04d}" for i in range(5)]
    released = ctx.synthetic[0]
    low, high = (np.asarray(v) for v in ws.intensity_reference)
    for case in ext:
        assert case.shape == released.shape and case.geometry == released.geometry
        assert case.channel_names == released.channel_names and case.schema == released.schema
        assert case.image.min() >= low.min() - 1e-3 and case.image.max() <= high.max() + 1e-3
        assert case.image.max() > 1.0  # back on the set's (HU) scale, not the model range
        assert set(np.unique(case.labels)) <= set(released.schema.values)
    again = extraction_cohort(_context(ws, ldm_set, tmp_path / "b"), 5, batch=2)
    other = extraction_cohort(_context(ws, ldm_set, tmp_path / "c", seed=1), 5, batch=2)
    assert again is not None and other is not None
    for x, y in zip(ext, again, strict=True):
        np.testing.assert_array_equal(x.image, y.image)
        np.testing.assert_array_equal(x.labels, y.labels)
    assert not np.array_equal(ext[0].image, other[0].image)
    assert not any(np.array_equal(ext[0].image, s.image) for s in ctx.synthetic)  # not the released draws


# -- the attacks' arithmetic and the other generators ---------------------------------------------------------------
def test_extraction_samples_are_searched_for_copies(ws: Workspace, copycat_set: Path, tmp_path: Path) -> None:
    """``extraction_samples``: more cases drawn from the set's model go through the copy search; the copycat's
    are its training patients moved and mirrored, so most are copies (the released two need not be)."""
    from dataclasses import replace

    from synthrelease.checks import AuditSettings
    from synthrelease.checks.embedding import EmbeddingConfig
    from synthrelease.checks.privacy.memorization import MemorizationCheck

    ctx = _context(ws, copycat_set, tmp_path)
    ctx.settings = replace(AuditSettings(embedding=EmbeddingConfig(size=16, steps=20, batch=8)), extraction_samples=8)
    result = MemorizationCheck().run(ctx)
    assert result.status.value == "ok", result.reason
    assert result.metrics["n_extraction_samples"].value == 8
    found = result.evidence["extraction"]["copies"]
    assert result.metrics["n_copies_extraction"].value == len(found) >= 4
    assert {c["nearest_train"] for c in found} <= set(ws.splits.train)
    ctx = _context(ws, copycat_set, tmp_path / "none")  # without the setting nothing is sampled
    assert "n_copies_extraction" not in MemorizationCheck().run(ctx).metrics


def _memoriser(members: torch.Tensor, alphas: torch.Tensor) -> Any:
    """The noise prediction of the ideal model of ``members`` (the posterior mean of a mixture of points)."""

    def predict(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = alphas[t].view(-1, 1, 1, 1, 1)
        d = ((x[:, None] - a.sqrt()[:, None] * members[None]) ** 2).flatten(2).sum(2)
        w = torch.softmax(-d / (2 * (1 - a.view(-1, 1))), dim=1)
        x0 = (w[:, :, None, None, None, None] * members[None]).sum(1)
        return (x - a.sqrt() * x0) / (1 - a).sqrt()

    return predict


def test_loss_and_secmi_rank_an_ideal_memorisers_members_first() -> None:
    g = torch.Generator().manual_seed(0)
    members, others = torch.randn(4, 2, 4, 4, 4, generator=g), torch.randn(4, 2, 4, 4, 4, generator=g)
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    predict = _memoriser(members, scheduler.alphas_cumprod)
    x = torch.cat([members, others])
    loss = denoising_scores(predict, x, scheduler, "epsilon", seed=0).mean(dim=1)
    secmi = secmi_scores(predict, x, scheduler.alphas_cumprod, "epsilon")
    for s in (loss, secmi):
        assert s[:4].min() > s[4:].max()


@pytest.fixture(scope="module")
def real(ws: Workspace) -> tuple[TrainingData, torch.Tensor, torch.Tensor]:
    """The training data, and every real case (train, then holdout) as tensors."""
    train, holdout = TrainingData.from_cohort(ws.train()), TrainingData.from_cohort(ws.holdout())
    return train, torch.cat([train.images, holdout.images]), torch.cat([train.classes, holdout.classes])


def test_shape_model_likelihood_separates_members(real: tuple[TrainingData, torch.Tensor, torch.Tensor]) -> None:
    train, images, classes = real
    gen = create_generator("shape", {"modes": N_TRAIN - 1}).fit(train)
    s = gen.membership_scores(images, classes, seed=0)["shape_loglik"].numpy()
    assert np.isfinite(s).all() and _auc(s) == 1.0  # with N - 1 modes the members span the model exactly


def test_wgan_attacks_and_its_stored_masks(real: tuple[TrainingData, torch.Tensor, torch.Tensor]) -> None:
    train, images, classes = real
    gen = create_generator("wgan", WGAN).fit(train, device="cpu")
    a, b = gen.membership_scores(images, classes, seed=0), gen.membership_scores(images, classes, seed=0)
    assert set(a) == {"critic", "reconstruction", "mask_stored"}
    for name, s in a.items():
        assert s.shape == (2 * N_TRAIN,) and torch.isfinite(s).all()
        assert torch.equal(s, b[name])
    assert torch.all(a["mask_stored"][:N_TRAIN] == 0) and torch.all(a["mask_stored"][N_TRAIN:] < 0)
    assert torch.all(a["reconstruction"] < 0)


def test_conditioned_ddpm_also_scores_its_mask_generator(
        real: tuple[TrainingData, torch.Tensor, torch.Tensor]) -> None:
    train, images, classes = real
    mask = {k: DIFFUSION[k] for k in ("channels", "attention_levels", "norm_num_groups", "num_train_timesteps",
                                      "steps", "sample_steps")}
    gen = create_generator("ddpm", {**DIFFUSION, "mode": "conditioned", "mask": mask}).fit(train, device="cpu")
    out = gen.membership_scores(images, classes, seed=0)
    assert set(out) == {"diffusion_loss", "secmi", "mask_diffusion_loss", "mask_secmi"}
    assert out["diffusion_loss"].shape == out["mask_diffusion_loss"].shape == (2 * N_TRAIN, 4)  # four timesteps
    assert all(torch.isfinite(v).all() for v in out.values())
