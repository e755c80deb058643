"""Tests of the ``wgan`` generator (conditional WGAN-GP, StyleGAN-like U-Net) on tiny 16³ data."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from synthrelease.errors import InputError
from synthrelease.generators import available_generators, create_generator
from synthrelease.generators.data import DataSpec, TrainingData, labels_to_onehot
from synthrelease.generators.wgan import WGANConfig, WGANGenerator
from synthrelease.generators.wgan_nets import Critic, StyleUNet, gradient_penalty

TINY: dict[str, Any] = {"channels": [4, 8], "z_dim": 8, "w_dim": 8, "mapping_layers": 2, "mask_source": "train",
                        "steps": 4, "batch_size": 2, "checkpoint_every": 100, "seed": 3}
TINY_MASK: dict[str, Any] = {"steps": 2, "channels": [4, 8], "attention_levels": [False, False],
                             "norm_num_groups": 4, "sample_steps": 2}


def _data(n: int = 5, shape: int = 16, modality: str = "CT") -> TrainingData:
    """Body ellipsoid (soft tissue), a bone slab (+1) and a small tumour per case, shifted a little per case."""
    g = torch.Generator().manual_seed(0)
    z, y, x = torch.meshgrid(*[torch.linspace(-1, 1, shape)] * 3, indexing="ij")
    images, classes = [], []
    for i in range(n):
        dx = 0.1 * (i - n // 2)
        body = (x / 0.8) ** 2 + (y / 0.7) ** 2 + (z / 0.9) ** 2 < 1
        lab = torch.zeros(shape, shape, shape, dtype=torch.long)
        lab[((x - 0.4 - dx).abs() < 0.1) & (y.abs() < 0.4)] = 2
        lab[(x + 0.3 + dx) ** 2 + y**2 + z**2 < 0.08] = 1
        img = torch.where(body, 0.2, -1.0) + 0.05 * torch.randn(lab.shape, generator=g)
        img[lab == 2], img[lab == 1] = 1.0, 0.4
        images.append(img.clamp(-1, 1)[None])
        classes.append(lab)
    labels = {"background": 0, "tumour": 1, "bone": 2} if modality == "CT" else {"background": 0, "NCR": 1,
                                                                                  "SNFH": 2}
    spec = DataSpec(modality=modality, channel_names=("CT",), labels=labels, regions={}, shape=(shape,) * 3,
                    spacing=(2.0, 2.0, 2.5))
    return TrainingData(torch.stack(images), torch.stack(classes), spec, [f"c{i}" for i in range(n)])


@pytest.fixture(scope="module")
def data() -> TrainingData:
    return _data()


@pytest.fixture(scope="module")
def fitted(data: TrainingData) -> WGANGenerator:
    gen = WGANGenerator(TINY)
    gen.fit(data, device="cpu")
    return gen


def _weights(gen: WGANGenerator) -> dict[str, torch.Tensor]:
    nets = {**gen.modules(), "ema": gen._ema.module}
    return {f"{name}.{k}": v.clone() for name, m in nets.items() for k, v in m.state_dict().items()}


def test_registered() -> None:
    assert "wgan" in available_generators()
    assert isinstance(create_generator("wgan", {"mask_source": "train"}), WGANGenerator)


def test_gradient_penalty_of_a_linear_critic() -> None:
    w = torch.tensor([[0.5, -2.0], [1.0, 0.25]]).view(1, 1, 2, 2, 1)  # D(x) = <w, x>: gradient w everywhere

    def critic(image: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return (image * w).flatten(1).sum(1)

    real, fake = torch.randn(3, 1, 2, 2, 1), torch.randn(3, 1, 2, 2, 1)
    gp = gradient_penalty(critic, real, fake, torch.zeros(3, 2, 2, 2, 1))
    expected = 10 * (float(w.norm()) - 1) ** 2
    assert gp.item() == pytest.approx(expected, rel=1e-5)
    assert gradient_penalty(critic, real, fake, real, weight=1.0).item() == pytest.approx(expected / 10, rel=1e-5)
    unit = w / w.norm()
    assert gradient_penalty(lambda im, c: (im * unit).flatten(1).sum(1), real, fake, real).item() < 1e-8


def test_gradient_penalty_trains_the_critic() -> None:
    critic = Critic(2, [2, 4], (4, 4, 4), norm="layer")
    real, fake, cond = torch.randn(2, 1, 4, 4, 4), torch.randn(2, 1, 4, 4, 4), torch.ones(2, 1, 4, 4, 4)
    gradient_penalty(critic, real, fake, cond).backward()
    weights = [m.weight for m in critic.modules() if isinstance(m, torch.nn.Conv3d | torch.nn.Linear)]
    assert all(w.grad is not None and w.grad.abs().sum() > 0 for w in weights)


def test_short_run_lowers_l1(data: TrainingData) -> None:
    l1: list[float] = []
    cfg = {**TINY, "channels": [8, 16], "steps": 25, "lr": 1e-3}
    WGANGenerator(cfg).fit(data, device="cpu", progress=lambda done, total, loss: l1.append(loss["g_l1"]))
    assert len(l1) == 25
    assert np.mean(l1[-5:]) < 0.8 * np.mean(l1[:3])  # about 0.6 vs 0.85


def test_losses_reported(fitted: WGANGenerator) -> None:
    assert {"critic", "wasserstein", "gp", "drift", "generator", "g_adv", "g_l1", "g_tumour_mse"} <= set(
        fitted.final_losses_)
    assert all(math.isfinite(v) for v in fitted.final_losses_.values())


def test_samples_follow_the_training_masks(fitted: WGANGenerator, data: TrainingData) -> None:
    cases = fitted.sample(7, seed=1, batch=3)  # 3 batches: masks continue across them
    values = np.asarray(data.spec.label_values)
    for i, case in enumerate(cases):
        assert case.image.shape == (1, 16, 16, 16)
        assert case.geometry.spacing == data.spec.spacing
        assert np.array_equal(case.labels, values[data.classes[i % len(data)].numpy()])
        assert case.image.min() >= -1 and case.image.max() <= 1
    rest = fitted.sample(4, seed=1, batch=3, offset=3)  # the same request made in pieces
    assert all(np.array_equal(x.image, y.image) for x, y in zip(cases[3:], rest, strict=True))


def test_same_seed_same_samples_other_seed_other(fitted: WGANGenerator) -> None:
    a, b, c = fitted.sample(2, seed=5), fitted.sample(2, seed=5), fitted.sample(2, seed=6)
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0].image, c[0].image)
    assert np.array_equal(a[0].labels, c[0].labels)  # train source: the same mask, another image


def test_save_load_sample(fitted: WGANGenerator, tmp_path: Path) -> None:
    loaded = WGANGenerator.load(fitted.save(tmp_path / "wgan.pt"))
    assert isinstance(loaded, WGANGenerator)
    for x, y in zip(fitted.sample(3, seed=2), loaded.sample(3, seed=2), strict=True):
        assert np.array_equal(x.image, y.image) and np.array_equal(x.labels, y.labels)


def test_resume_equals_uninterrupted(data: TrainingData, tmp_path: Path) -> None:
    cfg = {**TINY, "steps": 6, "checkpoint_every": 3, "n_critic": 2}
    full = WGANGenerator(cfg).fit(data, run_dir=tmp_path / "full", device="cpu")

    def stop(done: int, total: int, losses: dict[str, float]) -> None:
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        WGANGenerator(cfg).fit(data, run_dir=tmp_path / "cut", device="cpu", progress=stop)
    resumed = WGANGenerator(cfg).fit(data, run_dir=tmp_path / "cut", resume=True, device="cpu")
    want, got = _weights(full), _weights(resumed)
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)


def test_samples_come_from_an_ema_of_the_generator_weights(data: TrainingData) -> None:
    history: list[dict[str, torch.Tensor]] = []
    cfg = {**TINY, "steps": 5, "ema_decay": 0.6}
    gen = WGANGenerator(cfg)
    gen.fit(data, device="cpu", progress=lambda *_: history.append(
        {k: v.clone() for k, v in gen._generator.state_dict().items()}))
    assert len(history) == 5
    expected = {k: v.clone() for k, v in history[0].items()}  # first update: decay min(0.6, 1/10)
    for n, weights in enumerate(history[1:], start=1):
        d = min(0.6, (1 + n) / (10 + n))
        expected = {k: d * expected[k] + (1 - d) * weights[k] if v.is_floating_point() else weights[k]
                    for k, v in weights.items()}
    ema = gen._ema.module.state_dict()
    last = gen._generator.state_dict()
    assert all(torch.allclose(ema[k].float(), expected[k].float(), atol=1e-6) for k in expected)
    assert any(not torch.allclose(ema[k], last[k]) for k in last if last[k].is_floating_point())
    before = gen.sample(2, seed=4)
    with torch.no_grad():  # the training weights are not what samples are drawn with
        for p in gen._generator.parameters():
            p.mul_(0.5)
    assert all(np.array_equal(x.image, y.image) for x, y in zip(before, gen.sample(2, seed=4), strict=True))
    with torch.no_grad():
        for p in gen._ema.module.parameters():
            p.mul_(0.5)
    assert not np.array_equal(before[0].image, gen.sample(2, seed=4)[0].image)
    # decay 0: the EMA is the last weights, so samples are those of the generator itself
    plain = WGANGenerator({**TINY, "steps": 3, "ema_decay": 0.0}).fit(data, device="cpu")
    g = torch.Generator().manual_seed(0)
    cond = torch.nn.functional.one_hot(data.classes[:2], 3).permute(0, 4, 1, 2, 3).float()
    z = torch.randn(2, TINY["z_dim"], generator=g)
    with torch.no_grad():
        direct = plain._generator(cond, z, torch.Generator().manual_seed(1)).clamp(-1, 1)
        via_ema = plain._ema.module(cond, z, torch.Generator().manual_seed(1)).clamp(-1, 1)
    assert torch.equal(direct, via_ema)


def test_a_model_saved_without_ema_samples_its_last_weights(fitted: WGANGenerator, tmp_path: Path) -> None:
    path = fitted.save(tmp_path / "wgan.pt")
    state = torch.load(path, weights_only=True)
    del state["extra"]["ema"]
    torch.save(state, path)
    loaded = WGANGenerator.load(path)
    ema, last = loaded._ema.module.state_dict(), loaded._generator.state_dict()
    assert all(torch.equal(ema[k], last[k]) for k in last)


def test_provenance(fitted: WGANGenerator) -> None:
    assert fitted.provenance() == {"mode": "conditioned", "mask_source": "train"}


def test_sampling_options_rejected(fitted: WGANGenerator) -> None:
    with pytest.raises(InputError, match="no sampler"):
        fitted.sample(1, seed=0, sampler="ddim")
    with pytest.raises(InputError, match="no sampler"):
        fitted.sample(1, seed=0, steps=10)
    with pytest.raises(InputError, match="no sampling options"):
        fitted.sample(1, seed=0, temperature=0.5)


@pytest.mark.parametrize("bad", [
    {"channels": []}, {"channels": [8, 0]}, {"critic_channels": [4, -1]}, {"z_dim": 0}, {"mapping_layers": 0},
    {"n_critic": 0}, {"critic_norm": "batch"}, {"lr": 0.0}, {"betas": [0.5]}, {"betas": [0.5, 1.0]},
    {"gp_weight": -1.0}, {"l1_weight": -0.1}, {"mode_seeking_weight": -1.0}, {"ema_decay": 1.0}, {"ema_decay": -0.1},
    {"mask_source": "real"}, {"tumour_classes": [0]},
    {"mask": "big"}, {"channels": "16"}, {"no_such_key": 1},
])
def test_bad_config(bad: dict[str, Any]) -> None:
    with pytest.raises(InputError):
        WGANGenerator(bad)


def _z_spread(gen: WGANGenerator, data: TrainingData) -> float:
    """Mean absolute difference between two draws of z (and voxel noise) for the same label maps."""
    cond = labels_to_onehot(data.classes, data.spec.n_labels)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        a, b = (gen._ema.module(cond, gen._z(len(data), g), g) for _ in range(2))
    return float((a - b).abs().mean())


def test_mode_seeking_makes_the_draws_of_z_differ(data: TrainingData) -> None:
    """The pix2pix L1 term teaches the generator to ignore z; the mode-seeking term (MSGAN) rewards images that differ
    between two draws of z for the same label maps, and reports that ratio."""
    cfg = {**TINY, "steps": 15, "lr": 1e-3, "ema_decay": 0.0}
    plain = WGANGenerator(cfg).fit(data, device="cpu")
    ratios: list[float] = []
    seeking = WGANGenerator({**cfg, "mode_seeking_weight": 1.0}).fit(
        data, device="cpu", progress=lambda done, total, loss: ratios.append(loss["g_mode_seeking_ratio"]))
    assert "g_mode_seeking_ratio" not in plain.final_losses_
    assert len(ratios) == 15 and ratios[-1] > ratios[0]
    assert _z_spread(seeking, data) > 1.5 * _z_spread(plain, data)  # 3.2x here; 2.0-3.2x over seeds 3-5


def test_bad_config_for_the_data(data: TrainingData) -> None:
    with pytest.raises(InputError, match="fewer levels"):
        WGANGenerator({**TINY, "channels": [2, 2, 2, 2, 2]}).build(data.spec)  # 16 -> 1 voxel
    with pytest.raises(InputError, match="not labels"):
        WGANGenerator({**TINY, "tumour_classes": [5]}).build(data.spec)


def test_tumour_classes(data: TrainingData) -> None:
    gen = WGANGenerator(TINY)
    assert gen._tumour_indices(data.spec) == [1]  # CT: the tumour label
    assert gen._tumour_indices(_data(2, modality="MR").spec) == [1, 2]  # MRI: every foreground label
    assert WGANGenerator({**TINY, "tumour_classes": [2]})._tumour_indices(data.spec) == [2]


def test_study_preset_channel_plan() -> None:
    cfg = WGANConfig.preset("study256")
    assert cfg.channels == (16, 32, 64, 128, 256, 512, 1024)
    assert WGANConfig.preset("tiny") == WGANConfig()
    with pytest.raises(InputError):
        WGANConfig.preset("huge")
    with torch.device("meta"):  # parameter count only: nothing is allocated
        gen = StyleUNet(3, 1, cfg.channels, z_dim=cfg.z_dim, w_dim=cfg.w_dim, mapping_layers=cfg.mapping_layers)
        critic = Critic(4, cfg.channels, (256, 256, 256))
    n_gen = sum(p.numel() for p in gen.parameters())
    n_critic = sum(p.numel() for p in critic.parameters())
    assert 50e6 < n_gen < 500e6 and 10e6 < n_critic < 200e6
    assert gen.out.in_channels == 16 and gen.bottleneck[0].conv.out_channels == 1024


@pytest.mark.skipif("mask" not in available_generators(), reason="mask generator not registered")
def test_generated_masks(data: TrainingData, tmp_path: Path) -> None:
    gen = WGANGenerator({**TINY, "mask_source": "generated", "mask": TINY_MASK}).fit(data, device="cpu")
    assert gen.provenance()["mask_source"] == "generated"
    cases = gen.sample(2, seed=0)
    assert set(np.unique(cases[0].labels)) <= set(data.spec.label_values)
    loaded = WGANGenerator.load(gen.save(tmp_path / "g.pt"))
    assert np.array_equal(loaded.sample(2, seed=0)[1].labels, cases[1].labels)


def test_reconstruction_attack_equals_the_plain_forward_latent_search(fitted: WGANGenerator,
                                                                      data: TrainingData) -> None:
    """GAN-Leaks' latent search encodes the condition once; it must give the error that running the whole network
    at every step gives (same starts, same Adam steps, same fixed noise), exactly."""
    from synthrelease.generators.base import derive_seed
    from synthrelease.generators.wgan import RECON_LR, RECON_STARTS, RECON_STEPS

    cond = labels_to_onehot(data.classes[:1], data.spec.n_labels)
    real = data.images[:1].float()
    net = fitted._ema.module.eval()
    z = torch.randn(RECON_STARTS, fitted.config.z_dim,
                    generator=torch.Generator().manual_seed(derive_seed(7, 0x2A7))).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=RECON_LR)
    best = torch.full((RECON_STARTS,), float("inf"))
    conds = cond.expand(RECON_STARTS, *cond.shape[1:])
    first = None
    for step in range(RECON_STEPS + 1):
        noise = torch.Generator().manual_seed(derive_seed(7, 0x2A8))
        err = (net(conds, z, noise).float() - real).pow(2).flatten(1).mean(dim=1)
        best = torch.minimum(best, err.detach())
        first = err.detach() if first is None else first
        if step == RECON_STEPS:
            break
        opt.zero_grad(set_to_none=True)
        err.sum().backward()
        opt.step()
    assert torch.equal(fitted._reconstruction_error(real, cond, 7), best.min())
    assert first is not None and best.min() < first.min()  # the search lowered the starts' error
