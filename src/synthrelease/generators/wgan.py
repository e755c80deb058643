"""``wgan``: conditional WGAN-GP with a StyleGAN-like U-Net generator (the study's CT/MRI generator), image from a mask.

Losses as in Ferreira et al. (2025):

- critic: ``D(fake) - D(real) + gp_weight · GP + drift_weight · E[D(real)²]`` (10 and 0.001), GP on interpolates of
  real and fake images with the condition fixed, in fp32;
- generator: ``-D(fake) + l1_weight · |fake - real| (volume mean) + tumour_weight · MSE inside the tumour``
  (tumour = label ``tumour`` for CT, every foreground label otherwise, or ``tumour_classes``);
- with ``mode_seeking_weight`` > 0 (MSGAN, Mao et al. 2019; off by default), the generator draws the first half
  of each batch's label maps (at least one) a second time with another z and adds
  ``weight / (mean|G(c, z1) - G(c, z2)| / mean|z1 - z2| + 1e-5)``. Without it the L1 term pulls every draw towards
  the one real image of its mask, so a short run learns to ignore z (on the demo's phantoms
  after 300 steps two draws for one mask had MS-SSIM 0.985, and the set was more alike than real patients are:
  ``fidelity.diversity``'s excess 0.09-0.10). With weight 1 that excess fell to 0.00-0.03 (benchmarks/RESULTS.md).
  The extra draws cost about 25% more time per step at batch 2;
- AdamW, lr 2e-4, betas (0.5, 0.999) for both; each step runs ``n_critic`` critic updates (same real batch, fresh
  z) then one generator update.
- samples come from an exponential moving average of the generator's weights (``ema_decay``, 0.995, ramped up over
  the first steps), as StyleGAN samples from its ``G_ema``. A short CPU run's last weights sit at a random phase of
  the adversarial game: on the quality bar's phantoms (1,000 steps, ``shape`` masks) the mean HU inside sampled
  tumours was +36, -75 and +40 HU off the real mean over three training seeds with the last weights, and +9, +11
  and +15 with the average (benchmarks/RESULTS.md).

Label maps for sampling come from a ``MaskSource``: ``generated`` (default; a stand-alone mask generator trained in
``prepare``) or ``train`` (the study's way: sample ``i`` of a ``sample`` call uses training mask ``i mod N``).
``mask_generator`` names the registered generator that makes the generated masks (``mask``, the pixel-space label
diffusion, by default; ``shape``, the statistical shape model fitted in about a second; ``ldm``, joint or
``labels_only``, whose label maps it takes) and ``mask`` is its config. The masks decide the samples' segmentation
utility: on the demo's phantoms (benchmarks/RESULTS.md) the same WGAN (300 steps) reached dice_ratio 0.81 on real
training masks, 0.61-0.75 on the ``shape`` model's (three runs), 0.72 on the joint ``ldm``'s (after 15 minutes of
training) and 0.44 on the ``mask`` generator's. The ``shape`` model's masks sit nearer the training patients' than
unseen patients' (``privacy.mia``'s label-map attack: AUC 0.69, upper bound 0.84), so its sets fail the default
policy there.

Sizes: ``channels`` is the width of each U-Net level (the grid halves per level). The default ``(16, 32, 64)`` is a
CPU-sized 32³ model; ``WGANConfig.preset("study256")`` is the study's 256³ plan (16 → 1024 over 7 levels).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from synthrelease.errors import InputError
from synthrelease.generators.base import Generator, StepLosses, derive_seed, ema_model
from synthrelease.generators.config import GeneratorConfig, config_from_dict
from synthrelease.generators.data import DataSpec, TrainingData, labels_to_onehot
from synthrelease.generators.mask_source import MASK_SOURCES, MaskSource
from synthrelease.generators.wgan_nets import CRITIC_NORMS, Critic, StyleUNet, gradient_penalty, level_shapes

__all__ = ["WGANConfig", "WGANGenerator", "gradient_penalty"]

# GAN-Leaks' white-box reconstruction (``membership_scores``): latent starts, Adam steps on z, and its rate
RECON_STARTS = 4
RECON_STEPS = 20
RECON_LR = 0.05


@dataclass(frozen=True)
class WGANConfig(GeneratorConfig):
    """Settings of the ``wgan`` generator (defaults: a 32³ CPU model; see ``PRESETS`` for the study's 256³ plan)."""

    steps: int = 1000
    channels: tuple[int, ...] = (16, 32, 64)  # generator width per U-Net level
    critic_channels: tuple[int, ...] = ()  # critic width per level; () = same as channels
    critic_norm: str = "layer"  # "layer" | "instance" | "none" (never batch norm with a gradient penalty)
    z_dim: int = 128
    w_dim: int = 128
    mapping_layers: int = 8
    n_critic: int = 1  # critic updates per generator update
    lr: float = 2e-4
    betas: tuple[float, ...] = (0.5, 0.999)
    weight_decay: float = 0.01  # AdamW
    gp_weight: float = 10.0
    drift_weight: float = 0.001
    l1_weight: float = 100.0
    tumour_weight: float = 100.0
    mode_seeking_weight: float = 0.0  # MSGAN (Mao et al. 2019): weight · 1 / (|G(c, z1) - G(c, z2)| / |z1 - z2| + eps)
    tumour_classes: tuple[int, ...] = ()  # label values; () = "tumour" (CT) or all foreground labels (MRI)
    ema_decay: float = 0.995  # samples come from an EMA of the generator's weights (StyleGAN's G_ema); 0: last weights
    ema_warmup: bool = True  # decay min(ema_decay, (1 + n) / (10 + n)) at the n-th update
    mask_source: str = "generated"  # "generated" (stand-alone) | "train" (the study's; ships real masks)
    mask_generator: str = "mask"  # registered generator that learns the label maps
    mask: dict[str, Any] = field(default_factory=dict)  # its config

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {},
        "study256": {"channels": [16, 32, 64, 128, 256, 512, 1024], "z_dim": 512, "w_dim": 512, "batch_size": 1,
                     "n_critic": 1, "steps": 100_000, "checkpoint_every": 1000},
    }

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> WGANConfig:
        """A named preset (``tiny``: the 32³ default; ``study256``: 16 → 1024 channels for 256³ grids)."""
        if name not in cls.PRESETS:
            raise InputError(f"wgan preset {name!r} is unknown", fix=f"use one of {sorted(cls.PRESETS)}")
        return config_from_dict(cls, {**cls.PRESETS[name], **overrides}, where=f"wgan preset {name}")

    def validate(self) -> None:
        super().validate()
        widths = {"channels": self.channels, "critic_channels": self.critic_channels or self.channels}
        for name, chans in widths.items():
            if not chans or any(int(c) < 1 for c in chans):
                raise InputError(f"wgan {name} = {list(chans)} must list one or more positive widths")
        for name in ("z_dim", "w_dim", "mapping_layers", "n_critic"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"wgan {name} = {getattr(self, name)} must be at least 1")
        if self.critic_norm not in CRITIC_NORMS:
            raise InputError(f"wgan critic_norm {self.critic_norm!r} is unknown", fix=f"use one of {CRITIC_NORMS}")
        if not self.lr > 0 or len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise InputError(f"wgan needs lr > 0 and two betas in [0, 1), got lr={self.lr}, betas={self.betas}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise InputError(f"wgan ema_decay = {self.ema_decay} must be in [0, 1)")
        for name in ("weight_decay", "gp_weight", "drift_weight", "l1_weight", "tumour_weight", "mode_seeking_weight"):
            if float(getattr(self, name)) < 0:
                raise InputError(f"wgan {name} = {getattr(self, name)} must be non-negative")
        if self.mask_source not in MASK_SOURCES:
            raise InputError(f"mask_source {self.mask_source!r} is unknown", fix=f"use one of {list(MASK_SOURCES)}")
        if any(int(v) < 1 for v in self.tumour_classes):
            raise InputError(f"wgan tumour_classes {list(self.tumour_classes)} must be foreground label values")


class WGANGenerator(Generator):
    """Conditional WGAN-GP: a StyleGAN-like U-Net draws the image for a label map; a critic scores image + mask."""

    name = "wgan"
    Config = WGANConfig
    config: WGANConfig

    def build(self, spec: DataSpec) -> None:
        cfg = self.config
        coarsest = level_shapes(spec.shape, len(cfg.channels))[-1]
        if min(coarsest) < 2:
            raise InputError(f"wgan channels {list(cfg.channels)} give {len(cfg.channels)} levels, too many for the "
                             f"grid {spec.shape} (coarsest level {coarsest})", fix="use fewer levels")
        self.spec_ = spec
        self._tumour_idx = self._tumour_indices(spec)
        self._generator = StyleUNet(spec.n_labels, spec.n_channels, cfg.channels, z_dim=cfg.z_dim, w_dim=cfg.w_dim,
                                    mapping_layers=cfg.mapping_layers)
        self._ema = ema_model(self._generator, cfg.ema_decay, warmup=cfg.ema_warmup)
        self._critic = Critic(spec.n_channels + spec.n_labels, cfg.critic_channels or cfg.channels, spec.shape,
                              cfg.critic_norm)
        betas = (float(cfg.betas[0]), float(cfg.betas[1]))
        self._opts = {name: torch.optim.AdamW(m.parameters(), lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay)
                      for name, m in self.modules().items()}
        self.mask_source_ = MaskSource(cfg.mask_source, generator=cfg.mask_generator, generator_config=cfg.mask,
                                       seed=cfg.seed)

    def _tumour_indices(self, spec: DataSpec) -> list[int]:
        values = list(spec.label_values)
        chosen = list(self.config.tumour_classes)
        if not chosen:
            named = spec.labels.get("tumour")
            fg = [v for v in values if v != 0]
            chosen = [named] if (spec.modality.upper() == "CT" and named is not None) else fg
        unknown = sorted(set(chosen) - set(values))
        if unknown:
            raise InputError(f"wgan tumour_classes {unknown} are not labels of the data ({spec.labels})")
        return [values.index(v) for v in chosen]

    def modules(self) -> dict[str, nn.Module]:
        return {"generator": self._generator, "critic": self._critic}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return dict(self._opts)

    def prepare(self, data: TrainingData) -> None:
        """Fit the mask source (keep the training masks, or train the mask generator on them)."""
        self.mask_source_.fit(data, device=self.device)

    def extra_state(self) -> dict[str, Any]:
        return {"mask_source": self.mask_source_.state(), "ema": self._ema.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if "mask_source" in state:
            self.mask_source_.load_state(state["mask_source"], self.spec_)
        if "ema" in state:
            self._ema.load_state_dict(state["ema"])
        else:  # a model saved before the EMA: its last weights
            self._ema.module.load_state_dict(self._generator.state_dict())

    def _to_device(self) -> None:
        super()._to_device()
        self._ema.to(self.device)

    def provenance(self) -> dict[str, Any]:
        return {"mode": "conditioned", **self.mask_source_.provenance()}

    # -- training ----------------------------------------------------------------------------------------------
    def _z(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        if generator is None:
            return torch.randn(n, self.config.z_dim, device=self.device)
        return torch.randn(n, self.config.z_dim, generator=generator).to(self.device)

    def training_step(self, images: torch.Tensor, classes: torch.Tensor, step: int) -> StepLosses:
        cfg = self.config
        cond = labels_to_onehot(classes, self.spec_.n_labels)
        real, n = images, images.shape[0]
        gen_plain, critic_plain = self._generator, self._critic
        out: StepLosses = {}
        for _ in range(cfg.n_critic):  # critic: WGAN + GP + drift
            with torch.no_grad(), self.autocast():
                fake = gen_plain(cond, self._z(n)).float()
            critic = self.net("critic")
            with self.autocast():
                scores = critic(torch.cat([real, fake]), torch.cat([cond, cond])).float()
            d_real, d_fake = scores[:n], scores[n:]
            gp = gradient_penalty(critic, real, fake, cond, weight=cfg.gp_weight)
            drift = cfg.drift_weight * d_real.pow(2).mean()
            loss_c = d_fake.mean() - d_real.mean() + gp + drift
            self._opts["critic"].zero_grad(set_to_none=True)
            loss_c.backward()
            self._opts["critic"].step()
            out.update(critic=loss_c.item(), wasserstein=(d_real.mean() - d_fake.mean()).item(), gp=gp.item(),
                       drift=drift.item())
        critic_plain.requires_grad_(False)  # generator step: the critic is only scored, never updated
        try:
            pairs = max(1, n // 2) if cfg.mode_seeking_weight > 0 else 0  # label maps drawn a second time
            z = self._z(n + pairs)
            with self.autocast():
                both = self.net("generator")(torch.cat([cond, cond[:pairs]]) if pairs else cond, z).float()
                fake = both[:n]
                adv = -critic_plain(fake, cond).float().mean()
            l1 = (fake - real).abs().mean()
            tumour = torch.isin(classes, torch.as_tensor(self._tumour_idx, device=classes.device)).unsqueeze(1)
            inside = tumour.to(fake.dtype).expand_as(fake)
            mse = ((fake - real).pow(2) * inside).sum() / inside.sum().clamp_min(1.0)
            loss_g = adv + cfg.l1_weight * l1 + cfg.tumour_weight * mse
            if pairs:  # mode seeking: two draws of z for the same label maps must give different images
                ratio = (both[:pairs] - both[n:]).abs().mean() / (z[:pairs] - z[n:]).abs().mean()
                loss_g = loss_g + cfg.mode_seeking_weight / (ratio + 1e-5)
                out["g_mode_seeking_ratio"] = ratio.item()
            self._opts["generator"].zero_grad(set_to_none=True)
            loss_g.backward()
            self._opts["generator"].step()
            self._ema.update_parameters(self._generator)
        finally:
            critic_plain.requires_grad_(True)
        out.update(generator=loss_g.item(), g_adv=adv.item(), g_l1=l1.item(), g_tumour_mse=mse.item())
        return out

    # -- white-box membership inference (privacy.whitebox) -----------------------------------------------------
    def membership_scores(self, images: torch.Tensor, classes: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
        """``critic``: the critic's score of (real image, its label map), higher = judged real (LOGAN's white-box
        attack, Hayes et al. 2019); ``reconstruction``: minus the closest the sampling (EMA) generator comes to the
        image for that label map over latent codes optimised by gradient descent (GAN-Leaks white-box, Chen et al.
        2020); and the mask source's attacks (``mask_...``)."""
        cond = labels_to_onehot(classes, self.spec_.n_labels).to(self.device)
        real = images.to(self.device).float()
        critic = self._critic.eval()
        with torch.no_grad():
            scores = critic(real, cond).float().cpu()
        recon = torch.stack([self._reconstruction_error(real[i:i + 1], cond[i:i + 1], seed)
                             for i in range(real.shape[0])])
        return {"critic": scores, "reconstruction": -recon,
                **self.mask_source_.membership_scores(images, classes, seed)}

    def _reconstruction_error(self, real: torch.Tensor, cond: torch.Tensor, seed: int) -> torch.Tensor:
        """The lowest mean squared error between one real image ``(1, C, ...)`` and the EMA generator's image for its
        label map, over ``RECON_STARTS`` latent codes (the same seeded starts for every case, refined together) each
        refined by ``RECON_STEPS`` Adam steps; the voxel noise is one fixed draw, so only z moves. The condition is
        encoded once (its features do not depend on z), as the plain forward pass would encode it at every step."""
        net = self._ema.module.eval()
        if not isinstance(net, StyleUNet):
            raise TypeError(f"the averaged generator is a {type(net).__name__}, not a StyleUNet")
        z = torch.randn(RECON_STARTS, self.config.z_dim, generator=torch.Generator().manual_seed(
            derive_seed(seed, 0x2A7))).to(self.device).requires_grad_(True)
        opt = torch.optim.Adam([z], lr=RECON_LR)
        best = torch.full((RECON_STARTS,), float("inf"))
        conds = cond.expand(RECON_STARTS, *cond.shape[1:])
        with torch.no_grad():
            skips = net.encode(conds)
        with torch.enable_grad():
            for step in range(RECON_STEPS + 1):
                noise = torch.Generator().manual_seed(derive_seed(seed, 0x2A8))
                err = (net.decode(skips, z, noise).float() - real).pow(2).flatten(1).mean(dim=1)  # one per start
                best = torch.minimum(best, err.detach().cpu())
                if step == RECON_STEPS:
                    break
                opt.zero_grad(set_to_none=True)
                err.sum().backward()  # the starts are independent: each z gets its own error's gradient
                opt.step()
        return best.min()

    # -- sampling ----------------------------------------------------------------------------------------------
    def generate(self, n: int, generator: torch.Generator, **options: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``n`` label maps from the mask source, then images for them (z and voxel noise from ``generator``).

        With ``mask_source = "train"`` sample ``i`` (``self.sample_offset`` + position in the batch) is conditioned
        on training mask ``i mod N``.
        """
        if options:
            if {"sampler", "steps"} & set(options):
                raise InputError(f"wgan takes no sampling options, got {sorted(options)}",
                                 fix="a GAN draws in one pass: it has no sampler and no sampling steps")
            raise InputError(f"wgan takes no sampling options, got {sorted(options)}")
        classes = self.mask_source_.draw(n, generator, offset=self.sample_offset).long()
        cond = labels_to_onehot(classes, self.spec_.n_labels).to(self.device)
        z = self._z(n, generator)
        with torch.no_grad(), self.autocast():
            images = self._ema.module.eval()(cond, z, generator)
        return images.float().clamp(-1, 1).cpu(), classes.cpu()
