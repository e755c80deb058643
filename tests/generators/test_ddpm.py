"""``ddpm`` generator: training, sampling (DDIM / DDPM), determinism, save/load, resume, modes, provenance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from synthrelease.data.cohort import Cohort
from synthrelease.errors import InputError
from synthrelease.generators import create_generator
from synthrelease.generators.base import Generator
from synthrelease.generators.ddpm import DDPMGenerator

TINY: dict[str, Any] = {"channels": [8, 16], "attention_levels": [False, False], "norm_num_groups": 4,
                        "num_train_timesteps": 20, "sample_steps": 4, "steps": 4, "batch_size": 2, "seed": 3}
MASK = {k: TINY[k] for k in ("channels", "attention_levels", "norm_num_groups", "num_train_timesteps")}
MASK = {**MASK, "steps": 3, "sample_steps": 3}


@pytest.fixture(scope="module")
def joint(cohort: Cohort) -> Generator:
    return create_generator("ddpm", TINY).fit(cohort, device="cpu")


@pytest.fixture(scope="module")
def conditioned(cohort: Cohort) -> Generator:
    cfg = {**TINY, "mode": "conditioned", "mask": MASK}
    return create_generator("ddpm", cfg).fit(cohort, device="cpu")


def _same(a: list[Any], b: list[Any]) -> bool:
    pairs = zip(a, b, strict=True)
    return all(np.array_equal(x.image, y.image) and np.array_equal(x.labels, y.labels) for x, y in pairs)


def test_training_lowers_the_loss(cohort: Cohort) -> None:
    losses: list[float] = []
    cfg = {**TINY, "steps": 40, "lr": 2e-3, "num_train_timesteps": 1000}
    create_generator("ddpm", cfg).fit(cohort, device="cpu", progress=lambda d, t, loss: losses.append(loss["loss"]))
    assert len(losses) == 40
    assert np.mean(losses[-8:]) < 0.7 * np.mean(losses[:8])


def test_samples_are_cases_on_the_training_grid(joint: Generator, cohort: Cohort) -> None:
    cases = joint.sample(3, seed=0)
    real = next(iter(cohort))
    assert len(cases) == 3
    for case in cases:
        assert case.image.shape == (1, 16, 16, 16) and case.labels.shape == (16, 16, 16)
        assert case.geometry.spacing == real.geometry.spacing
        assert set(np.unique(case.labels)) <= {0, 1, 2}
        assert case.image.min() >= -1 and case.image.max() <= 1


def test_sampling_is_deterministic(joint: Generator) -> None:
    a, b, c = joint.sample(2, seed=5), joint.sample(2, seed=5), joint.sample(2, seed=6)
    assert _same(a, b)
    assert not np.array_equal(a[0].image, c[0].image)


def test_save_load_samples_identically(joint: Generator, tmp_path: Path) -> None:
    loaded = Generator.load(joint.save(tmp_path / "ddpm.pt"))
    assert isinstance(loaded, DDPMGenerator)
    assert _same(joint.sample(2, seed=1), loaded.sample(2, seed=1))


def test_ddpm_and_ddim_samplers(joint: Generator) -> None:
    ddpm = joint.sample(1, seed=2, sampler="ddpm")  # all 20 training timesteps
    ddim = joint.sample(1, seed=2, sampler="ddim", steps=3)
    assert not np.array_equal(ddpm[0].image, ddim[0].image)
    assert ddim[0].image.shape == ddpm[0].image.shape
    assert _same(ddim, joint.sample(1, seed=2, steps=3))  # ddim is the configured default
    with pytest.raises(InputError):
        joint.sample(1, seed=2, sampler="ddpm", steps=5)
    with pytest.raises(InputError):
        joint.sample(1, seed=2, sampler="euler")
    with pytest.raises(InputError):
        joint.sample(1, seed=2, guidance=2.0)


@pytest.mark.parametrize("extra", [{}, {"mode": "conditioned", "mask": MASK}])
def test_resume_equals_uninterrupted_run(cohort: Cohort, tmp_path: Path, extra: dict[str, Any]) -> None:
    cfg = {**TINY, **extra, "steps": 4, "checkpoint_every": 2}
    whole = create_generator("ddpm", cfg).fit(cohort, device="cpu")

    class Stop(Exception):
        pass

    def stop(done: int, total: int, losses: dict[str, float]) -> None:
        if done == 2:
            raise Stop

    with pytest.raises(Stop):
        create_generator("ddpm", cfg).fit(cohort, device="cpu", run_dir=tmp_path, progress=stop)
    resumed = create_generator("ddpm", cfg).fit(cohort, device="cpu", run_dir=tmp_path, resume=True)
    assert isinstance(whole, DDPMGenerator) and isinstance(resumed, DDPMGenerator)
    for key, value in whole.unet_.state_dict().items():
        assert torch.equal(value, resumed.unet_.state_dict()[key]), key
    for key, value in whole.ema_.state_dict().items():
        assert torch.equal(value, resumed.ema_.state_dict()[key]), key
    assert _same(whole.sample(2, seed=4), resumed.sample(2, seed=4))


def test_conditioned_on_training_masks_in_order(cohort: Cohort) -> None:
    gen = create_generator("ddpm", {**TINY, "mode": "conditioned", "mask_source": "train"}).fit(cohort, device="cpu")
    cases = gen.sample(4, seed=0)
    for case, real in zip(cases, list(cohort)[:4], strict=True):
        assert np.array_equal(case.labels, real.labels)
    assert gen.provenance() == {"mode": "conditioned", "mask_source": "train"}
    shifted = gen.sample(2, seed=0, batch=1, offset=5)  # samples 5 and 6: maps 5 and 0 of six
    assert np.array_equal(shifted[1].labels, next(iter(cohort)).labels)


def test_conditioned_on_generated_masks(conditioned: Generator, tmp_path: Path) -> None:
    assert isinstance(conditioned, DDPMGenerator) and conditioned.mask_source_ is not None
    images, classes = conditioned.generate(2, torch.Generator().manual_seed(7))
    masks = conditioned.mask_source_.draw(2, torch.Generator().manual_seed(7))
    assert torch.equal(classes, masks)
    assert images.shape == (2, 1, 16, 16, 16)
    assert conditioned.provenance() == {"mode": "conditioned", "mask_source": "generated", "mask_generator": "mask"}
    loaded = Generator.load(conditioned.save(tmp_path / "cond.pt"))
    assert _same(conditioned.sample(2, seed=1), loaded.sample(2, seed=1))


def test_joint_provenance(joint: Generator) -> None:
    assert joint.provenance() == {"mode": "joint", "mask_source": "joint"}


@pytest.mark.parametrize("bad", [{"mode": "inpaint"}, {"mask_source": "atlas"}, {"lr": 0.0}, {"lr": -1e-4},
                                 {"mask": {"factr": 2}}, {"attention_levels": [False]}, {"channels": [8, 10]},
                                 {"ema_decay": 1.0}, {"schedule": "quadratic"}, {"prediction_type": "noise"},
                                 {"sample_steps": 30}])
def test_bad_configs_raise(bad: dict[str, Any]) -> None:
    with pytest.raises(InputError):
        create_generator("ddpm", {**TINY, **bad})


def test_grid_too_small_for_the_unet_raises(cohort: Cohort) -> None:
    deep = {**TINY, "channels": [4] * 6, "attention_levels": [False] * 6}
    with pytest.raises(InputError):
        create_generator("ddpm", deep).fit(cohort, device="cpu")
