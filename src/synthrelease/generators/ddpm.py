"""``ddpm``: pixel-space denoising diffusion (MONAI ``DiffusionModelUNet`` with DDPM / DDIM schedulers).

Modes (``config.mode``):

- ``joint`` (default): one U-Net denoises the image channels and the one-hot label channels together
  (``C + L`` channels in and out); the class map is the argmax of the label channels.
- ``conditioned``: the U-Net denoises the ``C`` image channels given the one-hot label map as extra input channels.
  Label maps at sampling time come from a ``MaskSource`` (``mask_source = "generated"``: the stand-alone ``mask``
  generator configured by ``mask``, trained in ``prepare``; ``"train"``: training map ``i`` for sample ``i``).

Sampling uses an EMA of the U-Net; ``generate(n, gen, sampler="ddim"|"ddpm", steps=50, eta=0.0)`` picks the sampler
(``ddpm`` = all ``num_train_timesteps`` ancestral steps). ``DiffusionConfig`` and ``DiffusionGenerator`` (network,
EMA, optimiser, training step, sampling loop) are shared with the ``mask`` generator.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from monai.networks.nets import DiffusionModelUNet
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler
from torch import nn

from synthrelease.errors import InputError
from synthrelease.generators.base import Generator, StepLosses, ema_model
from synthrelease.generators.config import GeneratorConfig, config_from_dict
from synthrelease.generators.data import DataSpec, TrainingData, labels_to_onehot, onehot_to_labels
from synthrelease.generators.mask_source import MASK_SOURCES, MaskSource
from synthrelease.generators.membership import denoising_scores, secmi_scores

__all__ = ["DDPMConfig", "DDPMGenerator", "DiffusionConfig", "DiffusionGenerator"]

SCHEDULES = ("linear_beta", "scaled_linear_beta", "sigmoid_beta", "cosine")
PREDICTIONS = ("epsilon", "sample", "v_prediction")
SAMPLERS = ("ddim", "ddpm")
MODES = ("joint", "conditioned")


def _choice(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise InputError(f"config {name} = {value!r} is unknown", fix=f"use one of {list(allowed)}")


@dataclass(frozen=True)
class DiffusionConfig(GeneratorConfig):
    """U-Net, noise schedule, optimiser, EMA and default sampler (defaults: a tiny CPU model for 32^3)."""

    channels: tuple[int, ...] = (16, 32, 64)  # widths per U-Net level; each level halves the grid
    attention_levels: tuple[bool, ...] = (False, False, False)  # self-attention per level (never at 256^3 res)
    num_res_blocks: int = 1
    norm_num_groups: int = 8
    num_head_channels: int = 8
    flash_attention: bool = False  # SDPA attention; needed at 256^3 (MONAI's mid block always has attention)
    lr: float = 2e-4  # AdamW
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # max gradient norm; 0 = off
    ema_decay: float = 0.999
    ema_warmup: bool = True  # decay min(ema_decay, (1 + n) / (10 + n)) at the n-th update
    num_train_timesteps: int = 1000
    schedule: str = "linear_beta"  # one of SCHEDULES (cosine ignores the beta range)
    beta_start: float = 1e-4
    beta_end: float = 0.02
    prediction_type: str = "v_prediction"  # or epsilon | sample; epsilon gave unusable samples after short training
    sampler: str = "ddim"  # default of generate(): ddim | ddpm
    sample_steps: int = 50  # DDIM steps by default

    def validate(self) -> None:
        super().validate()
        if not self.channels or len(self.attention_levels) != len(self.channels):
            raise InputError(f"config channels {self.channels} and attention_levels {self.attention_levels} "
                             "need one entry per U-Net level")
        if self.norm_num_groups < 1 or any(c < 1 or c % self.norm_num_groups for c in self.channels):
            raise InputError(f"config channels {self.channels} must be multiples of norm_num_groups "
                             f"= {self.norm_num_groups}")
        if self.num_res_blocks < 1 or self.num_head_channels < 1:
            raise InputError("config num_res_blocks and num_head_channels must be at least 1")
        if not self.lr > 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise InputError(f"config lr = {self.lr} must be positive, weight_decay and grad_clip non-negative")
        if not 0.0 <= self.ema_decay < 1.0:
            raise InputError(f"config ema_decay = {self.ema_decay} must be in [0, 1)")
        if self.num_train_timesteps < 2 or not 0 < self.beta_start < self.beta_end < 1:
            raise InputError("config needs num_train_timesteps >= 2 and 0 < beta_start < beta_end < 1")
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("prediction_type", self.prediction_type, PREDICTIONS)
        _choice("sampler", self.sampler, SAMPLERS)
        if not 1 <= self.sample_steps <= self.num_train_timesteps:
            raise InputError(f"config sample_steps = {self.sample_steps} must be in [1, num_train_timesteps]")


def _device_generator(generator: torch.Generator, device: torch.device) -> torch.Generator:
    """``generator`` on CPU; elsewhere a device generator seeded from it (still deterministic per seed)."""
    if device.type == "cpu":
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return torch.Generator(device).manual_seed(seed)


class DiffusionGenerator(Generator):
    """U-Net + EMA + AdamW trained to denoise; subclasses define what is diffused (``layout``)."""

    config: DiffusionConfig

    @abstractmethod
    def layout(self, spec: DataSpec) -> tuple[int, int, tuple[int, int, int]]:
        """(input channels, output channels, grid) of the U-Net for ``spec``."""

    def build(self, spec: DataSpec) -> None:
        cfg = self.config
        c_in, c_out, grid = self.layout(spec)
        div = 2 ** (len(cfg.channels) - 1)
        if any(g % div for g in grid):
            raise InputError(f"{self.name}: grid {grid} is not divisible by {div} ({len(cfg.channels)} U-Net levels)",
                             fix="use a grid of multiples of that size, or fewer levels in config channels")
        self.unet_ = DiffusionModelUNet(
            spatial_dims=3, in_channels=c_in, out_channels=c_out, channels=cfg.channels,
            attention_levels=cfg.attention_levels, num_res_blocks=cfg.num_res_blocks,
            norm_num_groups=cfg.norm_num_groups, num_head_channels=cfg.num_head_channels,
            use_flash_attention=cfg.flash_attention).to(self.device)
        self.ema_ = ema_model(self.unet_, cfg.ema_decay, warmup=cfg.ema_warmup)
        self.opt_ = torch.optim.AdamW(self.unet_.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler_ = self.make_scheduler("ddpm")
        self.spec_ = spec

    def modules(self) -> dict[str, nn.Module]:
        return {"unet": self.unet_}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"adamw": self.opt_}

    def extra_state(self) -> dict[str, Any]:
        return {"ema": self.ema_.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.ema_.load_state_dict(state["ema"])

    def _to_device(self) -> None:
        super()._to_device()
        self.ema_.to(self.device)

    def make_scheduler(self, sampler: str) -> DDPMScheduler | DDIMScheduler:
        """A fresh MONAI scheduler for ``sampler`` with the configured noise schedule. The DDIM one takes the
        epsilon that is consistent with the clipped x0 estimate (``clipped_epsilon``), so it neither clips nor
        converts predictions itself."""
        cfg = self.config
        betas: dict[str, Any] = {"beta_start": cfg.beta_start, "beta_end": cfg.beta_end}
        if cfg.schedule == "cosine":
            betas = {}
        if sampler == "ddpm":
            return DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps, schedule=cfg.schedule,
                                 prediction_type=cfg.prediction_type, clip_sample=True, **betas)
        return DDIMScheduler(num_train_timesteps=cfg.num_train_timesteps, schedule=cfg.schedule,
                             prediction_type="epsilon", clip_sample=False, **betas)

    def clipped_epsilon(self, out: torch.Tensor, x: torch.Tensor, t: int) -> torch.Tensor:
        """The noise implied by the model output ``out`` at ``x``, timestep ``t`` once its x0 is clipped to [-1, 1].

        (MONAI's DDIM step clips x0 but keeps the raw epsilon, which feeds epsilon errors straight into the sample
        at high noise.)"""
        a = self.scheduler_.alphas_cumprod[t].to(x)
        if self.config.prediction_type == "epsilon":
            x0 = (x - (1 - a).sqrt() * out) / a.sqrt()
        elif self.config.prediction_type == "sample":
            x0 = out
        else:
            x0 = a.sqrt() * x - (1 - a).sqrt() * out
        return (x - a.sqrt() * x0.clamp(-1, 1)) / (1 - a).sqrt()

    def denoise_step(self, x0: torch.Tensor, cond: torch.Tensor | None = None,
                     weights: torch.Tensor | None = None) -> StepLosses:
        """One optimisation step: noise ``x0`` at random timesteps, regress the prediction target (mean squared error,
        channels weighted by ``weights`` of mean 1 if given), update EMA."""
        cfg = self.config
        noise = torch.randn_like(x0)
        t = torch.randint(0, cfg.num_train_timesteps, (x0.shape[0],), device=x0.device)
        x_t = self.scheduler_.add_noise(x0, noise, t)
        target = {"epsilon": noise, "sample": x0}.get(cfg.prediction_type)
        if target is None:
            target = self.scheduler_.get_velocity(x0, noise, t)
        with self.autocast():
            pred = self.net("unet")(x_t if cond is None else torch.cat([x_t, cond], 1), timesteps=t)
        err = (pred.float() - target) ** 2
        loss = err.mean() if weights is None else (err.mean((0, 2, 3, 4)) * weights.to(err)).mean()
        self.opt_.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.unet_.parameters(), cfg.grad_clip)
        self.opt_.step()
        self.ema_.update_parameters(self.unet_)
        return {"loss": float(loss.detach())}

    @torch.no_grad()
    def diffusion_membership(self, x0: torch.Tensor, cond: torch.Tensor | None, seed: int,
                             weights: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """White-box membership scores of clean inputs ``x0`` (as training diffuses them, conditioned on ``cond``,
        channels weighted by ``weights``) under the EMA U-Net that samples: the loss attack (``diffusion_loss``,
        one component per timestep) and SecMI's t-error (``secmi``); see ``generators.membership``. fp32."""
        model = self.ema_.module.eval()
        x0 = x0.to(self.device).float()
        c = None if cond is None else cond.to(self.device).float()

        def predict(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = model(x if c is None else torch.cat([x, c], 1), timesteps=t)
            return out.float()

        pred = self.config.prediction_type
        return {"diffusion_loss": denoising_scores(predict, x0, self.scheduler_, pred, seed, weights=weights).cpu(),
                "secmi": secmi_scores(predict, x0, self.scheduler_.alphas_cumprod, pred).cpu()}

    @torch.no_grad()
    def denoise(self, shape: Sequence[int], generator: torch.Generator, cond: torch.Tensor | None = None,
                **options: Any) -> torch.Tensor:
        """Sample ``shape`` from noise with the EMA U-Net. Options: ``sampler``, ``steps`` (DDIM), ``eta`` (DDIM)."""
        cfg = self.config
        unknown = sorted(set(options) - {"sampler", "steps", "eta"})
        if unknown:
            raise InputError(f"{self.name} has no sampling options {unknown}", fix="use sampler, steps, eta")
        sampler = options.get("sampler") or cfg.sampler
        _choice("sampler", sampler, SAMPLERS)
        steps = options.get("steps")
        scheduler = self.make_scheduler(sampler)
        if isinstance(scheduler, DDIMScheduler):
            steps = int(steps or cfg.sample_steps)
            if not 1 <= steps <= cfg.num_train_timesteps:
                raise InputError(f"steps = {steps} must be in [1, {cfg.num_train_timesteps}]")
            scheduler.set_timesteps(steps)
        elif steps not in (None, cfg.num_train_timesteps):
            raise InputError(f"the ddpm sampler runs all {cfg.num_train_timesteps} steps, not {steps}",
                             fix="use sampler='ddim' for fewer steps")
        gen = _device_generator(generator, self.device)
        x = torch.randn(tuple(shape), generator=gen, device=self.device)
        model = self.ema_.module.eval()
        for t in scheduler.timesteps.tolist():
            inp = x if cond is None else torch.cat([x, cond], 1)
            with self.autocast():
                out = model(inp, timesteps=torch.full((x.shape[0],), t, device=self.device, dtype=torch.long))
            if isinstance(scheduler, DDIMScheduler):
                eps = self.clipped_epsilon(out.float(), x, t)
                x, _ = scheduler.step(eps, t, x, eta=float(options.get("eta", 0.0)), generator=gen)
            else:
                x, _ = scheduler.step(out.float(), t, x, generator=gen)
        return x


@dataclass(frozen=True)
class DDPMConfig(DiffusionConfig):
    """``ddpm`` settings: the diffusion settings plus the generation mode and, for ``conditioned``, the masks."""

    mode: str = "joint"  # joint | conditioned
    mask_source: str = "generated"  # conditioned only: generated | train
    mask: dict[str, Any] = field(default_factory=dict)  # config of the mask generator (mask_source = generated)

    def validate(self) -> None:
        super().validate()
        _choice("mode", self.mode, MODES)
        _choice("mask_source", self.mask_source, MASK_SOURCES)
        if not isinstance(self.mask, dict):
            raise InputError("config mask must be a table of mask generator settings")
        from synthrelease.generators.mask import MaskConfig

        config_from_dict(MaskConfig, self.mask, where="ddpm config mask")


class DDPMGenerator(DiffusionGenerator):
    """Pixel-space 3D diffusion of images (and, in joint mode, one-hot label maps)."""

    name = "ddpm"
    Config = DDPMConfig
    config: DDPMConfig

    @property
    def joint(self) -> bool:
        return self.config.mode == "joint"

    def layout(self, spec: DataSpec) -> tuple[int, int, tuple[int, int, int]]:
        c, n_labels = spec.n_channels, spec.n_labels
        return c + n_labels, c + n_labels if self.joint else c, spec.shape

    def build(self, spec: DataSpec) -> None:
        super().build(spec)
        cfg = self.config
        self.mask_source_ = None if self.joint else MaskSource(cfg.mask_source, generator_config=cfg.mask,
                                                               seed=cfg.seed)

    def prepare(self, data: TrainingData) -> None:
        if self.mask_source_ is not None:
            self.mask_source_.fit(data, device=self.device)

    def extra_state(self) -> dict[str, Any]:
        state = super().extra_state()
        if self.mask_source_ is not None:
            state["mask_source"] = self.mask_source_.state()
        return state

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        if self.mask_source_ is not None:
            self.mask_source_.load_state(state["mask_source"], self.spec_)

    def _to_device(self) -> None:
        super()._to_device()
        mask_model = getattr(self.mask_source_, "_model", None)  # restored on CPU by MaskSource.load_state
        if isinstance(mask_model, Generator) and mask_model.device != self.device:
            mask_model.device = self.device
            mask_model._to_device()

    def training_step(self, images: torch.Tensor, classes: torch.Tensor, step: int) -> StepLosses:
        onehot = labels_to_onehot(classes, self.spec_.n_labels)
        if self.joint:
            return self.denoise_step(torch.cat([images, onehot], 1))
        return self.denoise_step(images, cond=onehot)

    def membership_scores(self, images: torch.Tensor, classes: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
        """The diffusion attacks on what training diffuses (joint: image + one-hot channels; conditioned: the image
        given the one-hot map), and, when conditioned, the mask source's attacks (``mask_...``)."""
        onehot = labels_to_onehot(classes, self.spec_.n_labels)
        if self.mask_source_ is None:
            return self.diffusion_membership(torch.cat([images, onehot], 1), None, seed)
        return {**self.diffusion_membership(images, onehot, seed),
                **self.mask_source_.membership_scores(images, classes, seed)}

    def generate(self, n: int, generator: torch.Generator, **options: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Options: ``sampler``, ``steps``, ``eta``. With ``mask_source = "train"`` sample ``i`` (counting from
        ``self.sample_offset``) is conditioned on training map ``i``."""
        c, n_labels, grid = self.spec_.n_channels, self.spec_.n_labels, self.spec_.shape
        if self.mask_source_ is None:
            x = self.denoise((n, c + n_labels, *grid), generator, **options)
            return x[:, :c].clamp(-1, 1).cpu(), onehot_to_labels(x[:, c:]).cpu()
        classes = self.mask_source_.draw(n, generator, offset=self.sample_offset)
        cond = labels_to_onehot(classes.to(self.device), n_labels)
        x = self.denoise((n, c, *grid), generator, cond, **options)
        return x.clamp(-1, 1).cpu(), classes.cpu()

    def provenance(self) -> dict[str, Any]:
        if self.mask_source_ is None:
            return {"mode": "joint", "mask_source": "joint"}
        return {"mode": self.config.mode, **self.mask_source_.provenance()}
