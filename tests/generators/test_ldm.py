"""``ldm`` latent diffusion generator: training phases, sampling, determinism, save/load, resume, config checks."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from synthrelease.data.cohort import Cohort
from synthrelease.data.phantoms import make_ct_phantom
from synthrelease.data.preprocess import PreprocessConfig, preprocess_case
from synthrelease.errors import InputError
from synthrelease.generators.base import Generator
from synthrelease.generators.data import TrainingData
from synthrelease.generators.ldm import LatentDiffusionGenerator, LDMConfig
from synthrelease.generators.registry import available_generators, create_generator

TINY: dict[str, Any] = {
    "steps": 24, "ae_steps": 12, "batch_size": 2, "checkpoint_every": 100, "ae_channels": [8, 16],
    "latent_channels": 3, "norm_groups": 8, "unet_channels": [16, 32], "unet_attention": [False, True],
    "head_channels": 16, "lr_ae": 3e-3, "lr_unet": 2e-3, "ema_decay": 0.9,
}


@pytest.fixture(scope="module")
def tiny_data() -> TrainingData:
    """Six CT phantoms on a 16^3 grid (15 mm voxels), model range."""
    cfg = PreprocessConfig.for_modality("ct", spacing=(15.0, 15.0, 15.0), shape=(16, 16, 16))
    cases = [preprocess_case(make_ct_phantom(i, shape=16, seed=0), cfg)[0] for i in range(6)]
    return TrainingData.from_cohort(Cohort.from_cases(cases))


@pytest.fixture(scope="module")
def trained(tiny_data: TrainingData) -> tuple[LatentDiffusionGenerator, list[dict[str, float]]]:
    torch.set_num_threads(1)
    log: list[dict[str, float]] = []
    gen = create_generator("ldm", TINY)
    gen.fit(tiny_data, progress=lambda done, total, losses: log.append(losses))
    assert isinstance(gen, LatentDiffusionGenerator)
    return gen, log


def _weights(gen: Generator) -> dict[str, torch.Tensor]:
    flat = {f"{m}.{k}": v for m, mod in gen.modules().items() for k, v in mod.state_dict().items()}
    ema = gen.extra_state()["ema"]
    return {**flat, **{f"ema.{k}": v for k, v in ema.items()}}


def test_registered_with_joint_provenance(trained: tuple[LatentDiffusionGenerator, Any]) -> None:
    assert "ldm" in available_generators()
    assert trained[0].provenance() == {"mode": "joint", "mask_source": "joint"}


def test_both_phases_lower_their_loss(trained: tuple[LatentDiffusionGenerator, list[dict[str, float]]]) -> None:
    gen, log = trained
    ae = [s["ae_l1"] + s["ae_roi_l1"] + s["ae_label"] for s in log[: TINY["ae_steps"]]]
    dm = [s["diffusion_mse"] for s in log[TINY["ae_steps"] :]]
    assert len(ae) == TINY["ae_steps"] and len(dm) == TINY["steps"] - TINY["ae_steps"]
    assert np.mean(ae[-3:]) < 0.85 * np.mean(ae[:3])
    assert np.mean(dm[-4:]) < np.mean(dm[:4])
    assert gen.scale_factor_ is not None and gen.scale_factor_ > 0


def test_samples_on_the_training_grid(trained: tuple[LatentDiffusionGenerator, Any], tiny_data: TrainingData) -> None:
    gen = trained[0]
    cases = gen.sample(3, seed=1, steps=5)
    assert len(cases) == 3
    for case in cases:
        assert case.image.shape == (1, 16, 16, 16) and case.labels.shape == (16, 16, 16)
        assert case.geometry.spacing == tiny_data.spec.spacing
        assert set(np.unique(case.labels)) <= set(tiny_data.spec.label_values)
        assert case.image.min() >= -1 and case.image.max() <= 1 and np.isfinite(case.image).all()


def test_sampling_is_deterministic(trained: tuple[LatentDiffusionGenerator, Any]) -> None:
    gen = trained[0]
    for options in ({"sampler": "ddim", "steps": 5}, {"sampler": "ddpm", "steps": 8}):
        a, b = gen.sample(2, seed=3, **options), gen.sample(2, seed=3, **options)
        c = gen.sample(2, seed=4, **options)
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x.image, y.image)
            np.testing.assert_array_equal(x.labels, y.labels)
        assert not np.array_equal(a[0].image, c[0].image)


def test_sampler_options(trained: tuple[LatentDiffusionGenerator, Any]) -> None:
    gen = trained[0]
    ddim = gen.sample(1, seed=5, sampler="ddim", steps=4)[0]
    ddpm = gen.sample(1, seed=5, sampler="ddpm", steps=4)[0]
    eta = gen.sample(1, seed=5, sampler="ddim", steps=4, eta=1.0)[0]
    assert not np.array_equal(ddim.image, ddpm.image) and not np.array_equal(ddim.image, eta.image)
    for bad in ({"sampler": "euler"}, {"steps": 0}, {"steps": 1001}, {"guidance": 2.0}):
        with pytest.raises(InputError):
            gen.sample(1, seed=0, **bad)


def test_save_load_sample_identical(trained: tuple[LatentDiffusionGenerator, Any], tmp_path: Path) -> None:
    gen = trained[0]
    loaded = Generator.load(gen.save(tmp_path / "ldm.pt"))
    assert isinstance(loaded, LatentDiffusionGenerator) and loaded.scale_factor_ == gen.scale_factor_
    for x, y in zip(gen.sample(2, seed=7, steps=5), loaded.sample(2, seed=7, steps=5), strict=True):
        np.testing.assert_array_equal(x.image, y.image)
        np.testing.assert_array_equal(x.labels, y.labels)


def test_resume_equals_uninterrupted_run(tiny_data: TrainingData, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    cfg = {**TINY, "steps": 10, "ae_steps": 4, "checkpoint_every": 3}
    full = create_generator("ldm", cfg).fit(tiny_data, run_dir=tmp_path / "full")
    # resume in the autoencoder phase (after step 3) from the uninterrupted run's checkpoint
    (tmp_path / "ae" / "checkpoints").mkdir(parents=True)
    shutil.copy(tmp_path / "full" / "checkpoints" / "step_0000003.pt", tmp_path / "ae" / "checkpoints" / "latest.pt")
    from_ae = create_generator("ldm", cfg).fit(tiny_data, run_dir=tmp_path / "ae", resume=True)
    # a shorter run that ends in the diffusion phase, continued by a new instance with more steps
    create_generator("ldm", {**cfg, "steps": 6}).fit(tiny_data, run_dir=tmp_path / "half")
    from_dm = create_generator("ldm", cfg).fit(tiny_data, run_dir=tmp_path / "half", resume=True)
    expected = _weights(full)
    for resumed in (from_ae, from_dm):
        assert isinstance(resumed, LatentDiffusionGenerator) and isinstance(full, LatentDiffusionGenerator)
        assert resumed.scale_factor_ == full.scale_factor_
        got = _weights(resumed)
        assert got.keys() == expected.keys()
        for k, v in expected.items():
            torch.testing.assert_close(got[k], v, rtol=0, atol=0, msg=k)


@pytest.mark.parametrize("changes", [
    {"ae_steps": 24}, {"ae_steps": 30}, {"ae_steps": 0}, {"lr_ae": -1e-4}, {"lr_unet": 0.0}, {"kl_weight": -1.0},
    {"ema_decay": 1.0}, {"norm_groups": 5}, {"unet_attention": [False]}, {"ae_channels": [8]},
    {"prediction_type": "sample"}, {"head_channels": 12}, {"lr_min_ratio": 0.0}, {"class_weighting": -0.5},
    {"lr_unet_min_ratio": 0.0}, {"lr_unet_min_ratio": 1.5}, {"diffusion_batch_size": -1},
])
def test_bad_config_is_input_error(changes: dict[str, Any]) -> None:
    with pytest.raises(InputError):
        create_generator("ldm", {**TINY, **changes})


def test_default_config_is_valid_and_grid_must_divide(tiny_data: TrainingData) -> None:
    LDMConfig().validate()
    gen = create_generator("ldm", {**TINY, "ae_channels": [8, 16, 16, 16], "unet_channels": [16, 32, 32],
                                   "unet_attention": [False, False, True]})
    with pytest.raises(InputError):
        gen.fit(tiny_data)  # 16^3 / 8 = 2^3 latent cannot be halved twice


def test_adversarial_option_trains_a_discriminator(tiny_data: TrainingData, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    log: list[dict[str, float]] = []
    gen = create_generator("ldm", {**TINY, "steps": 4, "ae_steps": 2, "adv_weight": 0.1, "disc_channels": 8})
    gen.fit(tiny_data, progress=lambda done, total, losses: log.append(losses))
    assert "disc" in gen.modules() and "disc" in gen.optimizers()
    assert np.isfinite([log[0]["ae_adv"], log[0]["disc"]]).all()
    loaded = Generator.load(gen.save(tmp_path / "adv.pt"))
    np.testing.assert_array_equal(gen.sample(1, seed=0, steps=3)[0].image, loaded.sample(1, seed=0, steps=3)[0].image)


def test_diffusion_options_decay_the_rate_and_draw_their_own_batch(tiny_data: TrainingData,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """lr_unet_min_ratio ends the diffusion phase at that fraction of lr_unet; diffusion_batch_size sets the number
    of latents per step; latent_noise changes what the U-Net learns (and so the latent scale)."""
    from monai.networks.nets import DiffusionModelUNet

    torch.set_num_threads(1)
    cfg = {**TINY, "steps": 6, "ae_steps": 2}
    seen: list[int] = []
    forward = DiffusionModelUNet.forward

    def spy(self: DiffusionModelUNet, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        seen.append(int(x.shape[0]))
        return forward(self, x, *args, **kwargs)

    monkeypatch.setattr(DiffusionModelUNet, "forward", spy)
    decayed = create_generator("ldm", {**cfg, "lr_unet_min_ratio": 0.1, "diffusion_batch_size": 3}).fit(tiny_data)
    assert seen == [3] * 4  # four diffusion steps of three latents (batch_size is 2)
    assert decayed.optimizers()["unet"].param_groups[0]["lr"] == pytest.approx(0.1 * TINY["lr_unet"])
    seen.clear()
    plain = create_generator("ldm", cfg).fit(tiny_data)
    assert seen == [2] * 4 and plain.optimizers()["unet"].param_groups[0]["lr"] == TINY["lr_unet"]
    noisy = create_generator("ldm", {**cfg, "latent_noise": True}).fit(tiny_data)
    assert isinstance(noisy, LatentDiffusionGenerator) and isinstance(plain, LatentDiffusionGenerator)
    assert noisy.scale_factor_ is not None and plain.scale_factor_ is not None
    assert noisy.scale_factor_ < plain.scale_factor_  # mu + sigma * noise spreads wider than mu alone


def test_labels_only_models_the_label_maps_alone(tiny_data: TrainingData, tmp_path: Path) -> None:
    """labels_only: the autoencoder sees one-hot labels only (no image channels, no image loss), samples carry blank
    images (-1) and valid label maps, and it serves as a conditioned generator's mask source."""
    from synthrelease.generators.wgan import WGANGenerator

    torch.set_num_threads(1)
    log: list[dict[str, float]] = []
    gen = create_generator("ldm", {**TINY, "steps": 8, "ae_steps": 4, "labels_only": True})
    gen.fit(tiny_data, progress=lambda done, total, losses: log.append(losses))
    assert isinstance(gen, LatentDiffusionGenerator)
    assert gen.provenance() == {"mode": "labels"}
    assert gen._ae.encoder.blocks[0].conv.in_channels == tiny_data.spec.n_labels  # no image channel in
    assert all(s["ae_l1"] == 0.0 and s["ae_roi_l1"] == 0.0 for s in log[:4]) and log[0]["ae_label"] > 0
    images, classes = gen.generate(2, torch.Generator().manual_seed(0), steps=3)
    assert images.shape == (2, tiny_data.spec.n_channels, *tiny_data.spec.shape) and bool((images == -1).all())
    assert classes.shape == (2, *tiny_data.spec.shape) and int(classes.max()) < tiny_data.spec.n_labels
    wgan = WGANGenerator({"steps": 2, "batch_size": 2, "channels": [8, 16], "mask_generator": "ldm",
                          "mask": {**TINY, "steps": 4, "ae_steps": 2, "labels_only": True}}).fit(tiny_data)
    assert wgan.provenance()["mask_generator"] == "ldm"
    cases = wgan.sample(2, seed=0)
    assert set(np.unique(cases[0].labels)) <= set(tiny_data.spec.label_values)
    loaded = Generator.load(wgan.save(tmp_path / "w.pt"))
    assert np.array_equal(loaded.sample(2, seed=0)[1].labels, cases[1].labels)
