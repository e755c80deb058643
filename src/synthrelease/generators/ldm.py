"""``ldm``: latent diffusion in joint mode (image and label map generated together). The project's CPU route.

An ``AutoencoderKL`` compresses the image channels plus the one-hot label channels (in [-1, 1]) into a small
latent (each of the ``len(ae_channels) - 1`` levels halves the grid); a ``DiffusionModelUNet`` learns that latent
with a 1000-step DDPM noise schedule. One ``fit`` trains both: steps ``0 .. ae_steps-1`` train the autoencoder
(L1 on image channels plus the mean L1 inside each foreground class, cross-entropy with class weights
``(1 / voxel share) ** class_weighting`` (small tumours survive the compression) + Dice on label logits, a small
KL term, optionally a patch adversarial loss; cosine-decayed rate); the remaining steps train the U-Net (constant
rate by default, cosine-decayed with ``lr_unet_min_ratio < 1``; EMA) on latents of the frozen autoencoder. At
the switch the training set is encoded once (both left-right orientations when ``flip``), the latent scale
factor ``1 / std(z)`` is fixed (as in MONAI's latent diffusion tutorials) and diffusion batches are drawn from
that cache with the step's seeded RNG: the encoder's mean latents ``z = mu`` by default, ``mu + sigma * noise``
with ``latent_noise``.
An exponential moving average of the U-Net samples: ``generate(n, g, sampler="ddim"|"ddpm", steps=...)``
(DDIM defaults to 50 steps, DDPM to all 1000); decoded label logits become classes by argmax.

The CPU default compresses 32^3 to an 8^3 latent with 16 channels (as many values as 16^3 x 2): the diffusion
U-Net works on 512 latent voxels, about 0.05 s a step on 2 cores, so it affords thousands of steps, and a tumour
is one or two latent voxels. Within the same minutes the 16^3 x 4 latent gave worse anatomy and fewer tumours.
Both are far from real anatomy at this budget (benchmarks/RESULTS.md shows samples and their segmentation utility).

``labels_only = true`` models the label maps alone (one-hot channels in, no image loss; samples carry images of -1),
which makes it a mask generator for a conditioned generator (``wgan``'s ``mask_generator = "ldm"``). Measured as
``wgan``'s mask source (benchmarks/RESULTS.md, 2026-12-06): the joint model's label maps gave the WGAN's samples more
segmentation utility (dice_ratio 0.72) than the labels-only model's (0.57), though their tumours were 3x too large.

MONAI's ``LatentDiffusionInferer`` is not used: its training call encodes every batch again (as costly as the
U-Net step on a CPU) and its sampler takes no ``torch.Generator``; the loop here is the same arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss, PatchAdversarialLoss
from monai.networks.nets import AutoencoderKL, DiffusionModelUNet, PatchDiscriminator
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler
from torch import nn

from synthrelease.data.cohort import Cohort
from synthrelease.errors import InputError
from synthrelease.generators.base import Generator, Progress, StepLosses, ema_model
from synthrelease.generators.config import GeneratorConfig
from synthrelease.generators.data import DataSpec, TrainingData, labels_to_onehot
from synthrelease.generators.membership import denoising_scores, secmi_scores, shared_noise

__all__ = ["LDMConfig", "LatentDiffusionGenerator"]

SAMPLERS = ("ddim", "ddpm")


@dataclass(frozen=True)
class LDMConfig(GeneratorConfig):
    """Defaults: the tiny CPU model for a 32^3 grid (about 8 minutes on 2 cores)."""

    steps: int = 3600  # autoencoder steps + diffusion steps
    batch_size: int = 4
    checkpoint_every: int = 500
    ae_steps: int = 600  # the first ae_steps steps train the autoencoder, the rest the diffusion U-Net
    flip: bool = True  # random left-right flips (x axis) as augmentation
    # autoencoder
    ae_channels: tuple[int, ...] = (16, 32, 64)  # one level per entry; each level after the first halves the grid
    # (three levels: an 8^3 latent for 32^3; with 16 channels and class-weighted labels it keeps every tumour)
    ae_res_blocks: int = 1
    ae_attention: bool = False  # self-attention at the lowest autoencoder level
    latent_channels: int = 16
    norm_groups: int = 8  # GroupNorm groups; must divide every channel count
    lr_ae: float = 1e-3
    lr_min_ratio: float = 0.1  # the autoencoder's learning rate decays (cosine) to this fraction of lr_ae
    kl_weight: float = 1e-6
    label_weight: float = 1.0  # weight of cross-entropy + Dice on the label channels (L1 on images has weight 1)
    class_weighting: float = 0.5  # cross-entropy weight of class k ~ (1 / voxel share of k) ** this (0: equal)
    roi_weight: float = 1.0  # weight of the mean per-foreground-class L1 (keeps tumour and bone intensities)
    adv_weight: float = 0.0  # > 0 adds a patch adversarial loss (PatchDiscriminator, least squares)
    disc_channels: int = 32
    lr_disc: float = 2e-4
    # diffusion
    unet_channels: tuple[int, ...] = (32, 64)
    unet_attention: tuple[bool, ...] = (False, True)
    unet_res_blocks: int = 1
    head_channels: int = 32
    lr_unet: float = 1e-3
    lr_unet_min_ratio: float = 1.0  # < 1: the U-Net's rate decays (cosine) to this fraction over the diffusion steps
    diffusion_batch_size: int = 0  # latents per diffusion step (0: batch_size; latents are cheap at 8^3)
    ema_decay: float = 0.995
    prediction_type: str = "epsilon"  # or "v_prediction"
    # the diffusion U-Net learns the encoder's mean latents (False) or samples mu + sigma * noise of them (True, as
    # in Stable Diffusion); the short CPU schedule leaves sigma large, and the means gave truer bone volumes
    latent_noise: bool = False
    # True: model the label maps only (no image channels; samples carry images of -1), e.g. as the mask generator
    # of a conditioned generator (``wgan``'s ``mask_generator = "ldm"``)
    labels_only: bool = False
    beta_start: float = 0.0015  # scaled-linear schedule of MONAI's latent diffusion tutorials
    beta_end: float = 0.0195

    def validate(self) -> None:
        super().validate()
        if not 1 <= self.ae_steps < self.steps:
            raise InputError(f"ldm needs 1 <= ae_steps < steps (got ae_steps={self.ae_steps}, steps={self.steps})",
                             fix="leave steps for the diffusion phase after the autoencoder phase")
        for name in ("lr_ae", "lr_unet", "lr_disc"):
            if not getattr(self, name) > 0:
                raise InputError(f"ldm config {name} = {getattr(self, name)} must be positive")
        weights = (self.kl_weight, self.label_weight, self.class_weighting, self.roi_weight, self.adv_weight)
        if min(weights) < 0 or not (0 <= self.ema_decay < 1 and 0 < self.lr_min_ratio <= 1
                                    and 0 < self.lr_unet_min_ratio <= 1 and self.diffusion_batch_size >= 0):
            raise InputError("ldm needs kl_weight, label_weight, class_weighting, roi_weight, adv_weight >= 0, "
                             "0 <= ema_decay < 1, 0 < lr_min_ratio, lr_unet_min_ratio <= 1 and "
                             "diffusion_batch_size >= 0")
        if len(self.ae_channels) < 2 or not len(self.unet_attention) == len(self.unet_channels) >= 1:
            raise InputError("ldm needs >= 2 ae_channels and one unet_attention flag per unet_channels entry")
        channels = (*self.ae_channels, *self.unet_channels, self.disc_channels)
        if min(channels) < 1 or any(c % self.norm_groups for c in channels[:-1]) or self.norm_groups < 1:
            raise InputError(f"ldm norm_groups = {self.norm_groups} must divide every ae and unet channel count")
        if any(c % self.head_channels for c, a in zip(self.unet_channels, self.unet_attention, strict=True) if a):
            raise InputError(f"ldm head_channels = {self.head_channels} must divide attention levels' channels")
        if min(self.latent_channels, self.ae_res_blocks, self.unet_res_blocks) < 1:
            raise InputError("ldm needs latent_channels, ae_res_blocks and unet_res_blocks >= 1")
        if self.prediction_type not in ("epsilon", "v_prediction") or not 0 < self.beta_start < self.beta_end < 1:
            raise InputError("ldm needs prediction_type epsilon|v_prediction and 0 < beta_start < beta_end < 1")


class LatentDiffusionGenerator(Generator):
    """Latent diffusion over image + one-hot label channels (joint mode)."""

    name = "ldm"
    Config = LDMConfig
    config: LDMConfig

    # -- networks ----------------------------------------------------------------------------------------------
    def build(self, spec: DataSpec) -> None:
        cfg = self.config
        factor = 2 ** (len(cfg.ae_channels) - 1) * 2 ** (len(cfg.unet_channels) - 1)
        if any(s % factor for s in spec.shape):
            raise InputError(f"ldm cannot model grid {spec.shape}: every side must be a multiple of {factor}",
                             fix="choose a grid divisible by it, or fewer ae_channels/unet_channels levels")
        self.spec_ = spec
        self._n_img = 0 if cfg.labels_only else spec.n_channels  # image channels modelled
        self._n_in = self._n_img + spec.n_labels
        down = 2 ** (len(cfg.ae_channels) - 1)
        self._latent_shape = (cfg.latent_channels, *(s // down for s in spec.shape))
        levels = len(cfg.ae_channels)
        self._ae = AutoencoderKL(
            spatial_dims=3, in_channels=self._n_in, out_channels=self._n_in, channels=cfg.ae_channels,
            num_res_blocks=cfg.ae_res_blocks, attention_levels=(False,) * (levels - 1) + (cfg.ae_attention,),
            latent_channels=cfg.latent_channels, norm_num_groups=cfg.norm_groups, use_convtranspose=True,
            with_encoder_nonlocal_attn=cfg.ae_attention, with_decoder_nonlocal_attn=cfg.ae_attention)
        self._unet = DiffusionModelUNet(
            spatial_dims=3, in_channels=cfg.latent_channels, out_channels=cfg.latent_channels,
            channels=cfg.unet_channels, attention_levels=cfg.unet_attention, num_res_blocks=cfg.unet_res_blocks,
            norm_num_groups=cfg.norm_groups, num_head_channels=cfg.head_channels)
        self._ema = ema_model(self._unet, cfg.ema_decay, warmup=False)
        self._opts: dict[str, torch.optim.Optimizer] = {
            "ae": torch.optim.Adam(self._ae.parameters(), lr=cfg.lr_ae),
            "unet": torch.optim.AdamW(self._unet.parameters(), lr=cfg.lr_unet)}
        self._disc: nn.Module | None = None
        if cfg.adv_weight > 0:
            layers = max(1, min(3, int(math.log2(min(spec.shape))) - 2))  # instance norm needs > 1 voxel left
            self._disc = PatchDiscriminator(spatial_dims=3, channels=cfg.disc_channels, in_channels=self._n_in,
                                            num_layers_d=layers, norm="INSTANCE")
            self._opts["disc"] = torch.optim.Adam(self._disc.parameters(), lr=cfg.lr_disc, betas=(0.5, 0.999))
        self._scheduler = self._make_scheduler("ddpm")
        self.scale_factor_: float | None = None  # 1 / std of the latents, fixed when the diffusion phase starts
        self._latents: tuple[torch.Tensor, torch.Tensor] | None = None  # (mu, sigma) of the training set

    def modules(self) -> dict[str, nn.Module]:
        mods: dict[str, nn.Module] = {"ae": self._ae, "unet": self._unet}
        if self._disc is not None:
            mods["disc"] = self._disc
        return mods

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return dict(self._opts)

    def extra_state(self) -> dict[str, Any]:
        return {"ema": self._ema.state_dict(), "scale_factor": self.scale_factor_}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self._ema.load_state_dict(state["ema"])
        self.scale_factor_ = state["scale_factor"]

    def provenance(self) -> dict[str, Any]:
        if self.config.labels_only:
            return {"mode": "labels"}
        return {"mode": "joint", "mask_source": "joint"}

    def _make_scheduler(self, sampler: str) -> DDPMScheduler | DDIMScheduler:
        cfg = self.config
        kind = DDIMScheduler if sampler == "ddim" else DDPMScheduler
        return kind(num_train_timesteps=1000, schedule="scaled_linear_beta", beta_start=cfg.beta_start,
                    beta_end=cfg.beta_end, clip_sample=False, prediction_type=cfg.prediction_type)

    def _ema_unet(self) -> nn.Module:
        self._ema.to(self.device).eval()
        return self._ema.module

    # -- training ----------------------------------------------------------------------------------------------
    def fit(self, data: Cohort | TrainingData, *, run_dir: Path | None = None, resume: bool = False,
            progress: Progress | None = None, device: str | torch.device | None = None) -> Self:
        """As ``Generator.fit``; keeps the training set at hand to encode it when the diffusion phase starts."""
        self._data = data if isinstance(data, TrainingData) else TrainingData.from_cohort(data)
        share = torch.bincount(self._data.classes.flatten(), minlength=self._data.spec.n_labels).double()
        weights = (share.sum() / share.clamp_min(1)) ** self.config.class_weighting  # from the data: nothing to save
        self._class_weights = (weights / (weights * share / share.sum()).sum()).float()  # voxel average 1
        try:
            return super().fit(self._data, run_dir=run_dir, resume=resume, progress=progress, device=device)
        finally:
            del self._data
            self._latents = None

    def training_step(self, images: torch.Tensor, classes: torch.Tensor, step: int) -> StepLosses:
        cfg = self.config
        if step < cfg.ae_steps:  # cosine decay, a function of the step (nothing to checkpoint)
            cosine = 0.5 * (1 + math.cos(math.pi * step / max(cfg.ae_steps - 1, 1)))
            for group in self._opts["ae"].param_groups:
                group["lr"] = cfg.lr_ae * (cfg.lr_min_ratio + (1 - cfg.lr_min_ratio) * cosine)
            return self._autoencoder_step(images, classes)
        if cfg.lr_unet_min_ratio < 1:  # with the default constant rate, more steps extend a run exactly
            cosine = 0.5 * (1 + math.cos(math.pi * (step - cfg.ae_steps) / max(cfg.steps - cfg.ae_steps - 1, 1)))
            for group in self._opts["unet"].param_groups:
                group["lr"] = cfg.lr_unet * (cfg.lr_unet_min_ratio + (1 - cfg.lr_unet_min_ratio) * cosine)
        return self._diffusion_step(cfg.diffusion_batch_size or images.shape[0])

    def _inputs(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        return torch.cat([images[:, :self._n_img], labels_to_onehot(classes, self.spec_.n_labels)], dim=1)

    def _autoencoder_step(self, images: torch.Tensor, classes: torch.Tensor) -> StepLosses:
        cfg, c = self.config, self._n_img
        images = images[:, :c]  # the modelled image channels (none with labels_only)
        if cfg.flip:
            flip = torch.rand(images.shape[0], device=images.device) < 0.5
            images = torch.where(flip[:, None, None, None, None], images.flip(-1), images)
            classes = torch.where(flip[:, None, None, None], classes.flip(-1), classes)
        x = self._inputs(images, classes)
        with self.autocast():
            recon, mu, sigma = self.net("ae")(x)
        recon, mu, sigma = recon.float(), mu.float(), sigma.float()
        if c:
            err = (recon[:, :c] - images).abs().mean(dim=1)
            l1 = err.mean()
            # tumour and bone are a few percent of the voxels: also fit each foreground class's own mean error
            rois = [err[classes == k].mean() for k in range(1, self.spec_.n_labels) if bool((classes == k).any())]
            roi = torch.stack(rois).mean() if rois else err.new_zeros(())
        else:  # labels only
            l1 = roi = recon.new_zeros(())
        logits = recon[:, c:]
        ce = F.cross_entropy(logits, classes, weight=self._class_weights.to(logits.device))
        label = ce + DiceLoss(softmax=True, to_onehot_y=True, batch=True)(
            logits, classes[:, None])
        kl = 0.5 * (mu.pow(2) + sigma.pow(2) - torch.log(sigma.pow(2) + 1e-8) - 1).sum(dim=(1, 2, 3, 4)).mean()
        loss = l1 + cfg.roi_weight * roi + cfg.label_weight * label + cfg.kl_weight * kl
        losses = {"ae_l1": l1.item(), "ae_roi_l1": roi.item(), "ae_label": label.item(), "ae_kl": kl.item()}
        if self._disc is not None:
            fake = torch.cat([recon[:, :c], torch.softmax(logits, dim=1) * 2 - 1], dim=1)
            adv = PatchAdversarialLoss(criterion="least_squares")
            with self.autocast():
                g_adv = adv(self.net("disc")(fake)[-1].float(), target_is_real=True, for_discriminator=False)
            loss = loss + cfg.adv_weight * g_adv
            losses["ae_adv"] = g_adv.item()
        self._opts["ae"].zero_grad(set_to_none=True)
        loss.backward()
        self._opts["ae"].step()
        if self._disc is not None:
            with self.autocast():  # one forward over fake and real (instance norm keeps the samples apart)
                d_fake, d_real = self.net("disc")(torch.cat([fake.detach(), x]))[-1].float().chunk(2)
            d_loss = 0.5 * (adv(d_fake, target_is_real=False, for_discriminator=True)
                            + adv(d_real, target_is_real=True, for_discriminator=True))
            self._opts["disc"].zero_grad(set_to_none=True)
            d_loss.backward()
            self._opts["disc"].step()
            losses["disc"] = d_loss.item()
        return losses

    @torch.no_grad()
    def _encode_training_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, sigma) of every training case (and its mirror image when ``flip``), on CPU."""
        data, b = self._data, self.config.batch_size
        self._ae.eval()
        mus, sigmas = [], []
        for flip in (False, True) if self.config.flip else (False,):
            for first in range(0, len(data), b):
                images, classes = data.batch(range(first, min(first + b, len(data))))
                if flip:
                    images, classes = images.flip(-1), classes.flip(-1)
                x = self._inputs(images.to(self.device), classes.to(self.device))
                with self.autocast():
                    mu, sigma = self._ae.encode(x)
                mus.append(mu.float().cpu())
                sigmas.append(sigma.float().cpu())
        return torch.cat(mus), torch.cat(sigmas)

    def _diffusion_step(self, batch: int) -> StepLosses:
        if self._latents is None:  # first diffusion step, or resumed in the diffusion phase
            self._ae.requires_grad_(False)
            self._latents = self._encode_training_set()
        mu_all, sigma_all = self._latents
        cfg = self.config
        if self.scale_factor_ is None:
            spread = mu_all + sigma_all * torch.randn_like(sigma_all) if cfg.latent_noise else mu_all
            self.scale_factor_ = float(1.0 / spread.std())
        idx = torch.randint(mu_all.shape[0], (batch,))
        z = mu_all[idx].to(self.device)
        if cfg.latent_noise:
            z = z + sigma_all[idx].to(self.device) * torch.randn_like(z)
        z = z * self.scale_factor_
        noise = torch.randn_like(z)
        t = torch.randint(0, self._scheduler.num_train_timesteps, (batch,), device=self.device)
        noisy = self._scheduler.add_noise(original_samples=z, noise=noise, timesteps=t)
        target = noise if cfg.prediction_type == "epsilon" else self._scheduler.get_velocity(z, noise, t)
        with self.autocast():
            pred = self.net("unet")(noisy, timesteps=t)
        loss = F.mse_loss(pred.float(), target)
        self._opts["unet"].zero_grad(set_to_none=True)
        loss.backward()
        self._opts["unet"].step()
        self._ema.to(self.device)
        self._ema.update_parameters(self._unet)
        return {"diffusion_mse": loss.item()}

    # -- white-box membership inference (privacy.whitebox) -----------------------------------------------------
    @torch.no_grad()
    def membership_scores(self, images: torch.Tensor, classes: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
        """On each case as training encodes it (and its mirror image when ``flip``: training saw both; the scores
        are averaged): ``ae_reconstruction``, minus the autoencoder's reconstruction losses of the mean latent (L1
        on the image channels, cross-entropy on the label logits: one component each; Hilprecht et al. 2019's
        reconstruction attack); once the diffusion phase has started, the loss attack (``diffusion_loss``) and
        SecMI's t-error (``secmi``) on the scaled latent under the EMA U-Net (``generators.membership``)."""
        x = self._inputs(images[:, :self._n_img].to(self.device).float(), classes.to(self.device))
        views = [(x, classes.to(self.device))]
        if self.config.flip:
            views.append((x.flip(-1), classes.to(self.device).flip(-1)))
        parts = [self._membership_view(v, c, seed) for v, c in views]
        return {name: torch.stack([p[name] for p in parts]).mean(dim=0) for name in parts[0]}

    def _membership_view(self, x: torch.Tensor, classes: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
        """The attacks of ``membership_scores`` on one orientation of the encoder's input ``x``."""
        ae, c = self._ae.eval(), self._n_img
        mu, sigma = ae.encode(x)
        recon = ae.decode(mu).float()
        losses = [F.cross_entropy(recon[:, c:], classes, reduction="none").flatten(1).mean(dim=1)]
        if c:
            losses.insert(0, (recon[:, :c] - x[:, :c]).abs().flatten(1).mean(dim=1))
        out = {"ae_reconstruction": -torch.stack(losses, dim=1).cpu()}
        if self.scale_factor_ is None:  # the diffusion phase never started: only the autoencoder was trained
            return out
        z = mu.float()
        if self.config.latent_noise:  # training drew latents from the encoder's distribution: one fixed draw
            z = z + sigma.float() * shared_noise(z, seed, 0x1A7)
        z = z * self.scale_factor_
        unet, pred = self._ema_unet(), self.config.prediction_type

        def predict(noisy: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            result: torch.Tensor = unet(noisy, timesteps=t)
            return result.float()

        out["diffusion_loss"] = denoising_scores(predict, z, self._scheduler, pred, seed).cpu()
        out["secmi"] = secmi_scores(predict, z, self._scheduler.alphas_cumprod, pred).cpu()
        return out

    # -- sampling ----------------------------------------------------------------------------------------------
    def generate(self, n: int, generator: torch.Generator, **options: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Options: ``sampler`` ("ddim" default or "ddpm"), ``steps`` (DDIM 50, DDPM 1000), ``eta`` (DDIM, 0)."""
        unknown = sorted(set(options) - {"sampler", "steps", "eta"})
        sampler = options.get("sampler", "ddim")
        if unknown or sampler not in SAMPLERS:
            raise InputError(f"ldm sampling options {sorted(options)} are not understood",
                             fix=f"use sampler in {list(SAMPLERS)}, steps (1..1000) and eta (DDIM)")
        steps = options.get("steps")
        steps = int(steps) if steps is not None else (50 if sampler == "ddim" else 1000)
        if not 1 <= steps <= 1000:
            raise InputError(f"ldm cannot sample with {steps} steps", fix="use 1..1000")
        if self.scale_factor_ is None:
            raise InputError("ldm model has not reached its diffusion phase", fix="train it to the end")
        unet, dev = self._ema_unet(), self.device
        scheduler = self._make_scheduler(sampler)
        scheduler.set_timesteps(steps)
        z = torch.randn((n, *self._latent_shape), generator=generator).to(dev)
        step_gen = torch.Generator(dev).manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
        extra = {"eta": float(options.get("eta", 0.0))} if sampler == "ddim" else {}
        for t in scheduler.timesteps.tolist():
            with self.autocast():
                pred = unet(z, timesteps=torch.full((n,), t, device=dev, dtype=torch.long)).float()
            z, _ = scheduler.step(pred, t, z, generator=step_gen, **extra)
        with self.autocast():
            out = self._ae.decode(z / self.scale_factor_).float()
        c, classes = self._n_img, out[:, self._n_img:].argmax(dim=1).cpu()
        if not c:  # labels only: blank images, as the stand-alone mask generator gives
            return torch.full((n, self.spec_.n_channels, *self.spec_.shape), -1.0), classes
        return out[:, :c].clamp(-1, 1).cpu(), classes
