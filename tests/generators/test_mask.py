"""``mask`` generator: stand-alone label maps (pooled one-hot diffusion, calibrated upsampling, largest component)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scipy import ndimage

from synthrelease.data.cohort import Cohort
from synthrelease.errors import InputError
from synthrelease.generators import create_generator
from synthrelease.generators.base import Generator
from synthrelease.generators.data import TrainingData
from synthrelease.generators.mask import MaskDiffusionGenerator, _keep_largest_component

TINY: dict[str, Any] = {"channels": [8, 16], "attention_levels": [False, False], "norm_num_groups": 4,
                        "num_train_timesteps": 20, "sample_steps": 4, "steps": 4, "batch_size": 2, "seed": 1}


@pytest.fixture(scope="module")
def model(cohort: Cohort) -> MaskDiffusionGenerator:
    gen = create_generator("mask", TINY).fit(cohort, device="cpu")
    assert isinstance(gen, MaskDiffusionGenerator)
    return gen


def _same(a: list[Any], b: list[Any]) -> bool:
    pairs = zip(a, b, strict=True)
    return all(np.array_equal(x.image, y.image) and np.array_equal(x.labels, y.labels) for x, y in pairs)


def test_training_lowers_the_loss(cohort: Cohort) -> None:
    losses: list[float] = []
    cfg = {**TINY, "steps": 40, "lr": 2e-3, "num_train_timesteps": 1000}
    create_generator("mask", cfg).fit(cohort, device="cpu", progress=lambda d, t, loss: losses.append(loss["loss"]))
    assert np.mean(losses[-8:]) < 0.7 * np.mean(losses[:8])


def test_samples_are_label_maps_with_blank_images(model: MaskDiffusionGenerator) -> None:
    cases = model.sample(3, seed=0)
    for case in cases:
        assert case.image.shape == (1, 16, 16, 16) and np.all(case.image == -1)
        assert case.labels.shape == (16, 16, 16) and set(np.unique(case.labels)) <= {0, 1, 2}
    assert model.provenance() == {"mode": "mask"}


def test_sampling_is_deterministic(model: MaskDiffusionGenerator) -> None:
    a, b = model.sample(2, seed=3), model.sample(2, seed=3)
    assert _same(a, b)
    _, x = model.generate(2, torch.Generator().manual_seed(3))
    _, y = model.generate(2, torch.Generator().manual_seed(4))
    assert not torch.equal(x, y)


def test_save_load_samples_identically(model: MaskDiffusionGenerator, tmp_path: Path) -> None:
    loaded = Generator.load(model.save(tmp_path / "mask.pt"))
    assert isinstance(loaded, MaskDiffusionGenerator)
    assert torch.equal(loaded.offsets_, model.offsets_)
    assert _same(model.sample(2, seed=1), loaded.sample(2, seed=1))
    assert _same(model.sample(1, seed=1, sampler="ddpm"), loaded.sample(1, seed=1, sampler="ddpm"))


def test_resume_equals_uninterrupted_run(cohort: Cohort, tmp_path: Path) -> None:
    cfg = {**TINY, "steps": 4, "checkpoint_every": 2}
    whole = create_generator("mask", cfg).fit(cohort, device="cpu")

    class Stop(Exception):
        pass

    def stop(done: int, total: int, losses: dict[str, float]) -> None:
        if done == 2:
            raise Stop

    with pytest.raises(Stop):
        create_generator("mask", cfg).fit(cohort, device="cpu", run_dir=tmp_path, progress=stop)
    resumed = create_generator("mask", cfg).fit(cohort, device="cpu", run_dir=tmp_path, resume=True)
    assert isinstance(whole, MaskDiffusionGenerator) and isinstance(resumed, MaskDiffusionGenerator)
    for key, value in whole.unet_.state_dict().items():
        assert torch.equal(value, resumed.unet_.state_dict()[key]), key
    for key, value in whole.ema_.state_dict().items():
        assert torch.equal(value, resumed.ema_.state_dict()[key]), key
    assert torch.equal(whole.offsets_, resumed.offsets_)
    assert _same(whole.sample(2, seed=2), resumed.sample(2, seed=2))


def test_calibration_keeps_class_volumes(model: MaskDiffusionGenerator, cohort: Cohort) -> None:
    classes = TrainingData.from_cohort(cohort).classes
    decoded = model.upsample(model.encode(classes)).argmax(1)
    plain = torch.nn.functional.interpolate(model.encode(classes), scale_factor=2, mode="trilinear").argmax(1)
    for k in (1, 2):
        real, ours = float((classes == k).sum()), float((decoded == k).sum())
        assert abs(ours - real) < 0.25 * real
        assert float((plain == k).sum()) < ours  # a plain argmax loses thin / small structures
    assert model.offsets_[0] == 0 and bool((model.offsets_[1:] > 0).all())


def test_full_grid_model_needs_no_calibration(cohort: Cohort) -> None:
    gen = create_generator("mask", {**TINY, "factor": 1, "steps": 1}).fit(cohort, device="cpu")
    assert isinstance(gen, MaskDiffusionGenerator)
    assert torch.equal(gen.offsets_, torch.zeros(3))
    assert gen.sample(1, seed=0)[0].labels.shape == (16, 16, 16)


def test_largest_component_keeps_one_tumour(model: MaskDiffusionGenerator) -> None:
    for case in model.sample(4, seed=5):
        assert ndimage.label(case.labels == 1, structure=np.ones((3, 3, 3)))[1] <= 1


def test_removed_voxels_take_the_next_best_class() -> None:
    classes = torch.zeros(1, 8, 8, 8, dtype=torch.long)
    classes[0, 1:4, 1:4, 1:4] = 1  # 27 voxels: kept
    classes[0, 6, 6, 6] = 1  # a 1-voxel island: goes to the next best class
    scores = torch.zeros(1, 3, 8, 8, 8)
    scores[0, 2, 6, 6, 6] = 0.5
    _keep_largest_component(classes, scores, 1)
    assert int((classes == 1).sum()) == 27 and int(classes[0, 6, 6, 6]) == 2


@pytest.mark.parametrize("bad", [{"factor": 0}, {"largest_component": [1]}, {"lr": 0.0}, {"sampler": "dpm"},
                                 {"beta_start": 0.1, "beta_end": 0.01}])
def test_bad_configs_raise(bad: dict[str, Any]) -> None:
    with pytest.raises(InputError):
        create_generator("mask", {**TINY, **bad})


def test_factor_must_divide_the_grid(cohort: Cohort) -> None:
    with pytest.raises(InputError):
        create_generator("mask", {**TINY, "factor": 3}).fit(cohort, device="cpu")
