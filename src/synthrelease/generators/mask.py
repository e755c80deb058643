"""``mask``: a stand-alone label-map generator (diffusion over one-hot label channels).

The one-hot map ({-1, 1} per class) is average-pooled by ``factor`` (32^3 -> 16^3 at factor 2) and diffused with the
same U-Net / EMA / scheduler machinery as ``ddpm``. At sampling time the generated channels are upsampled
trilinearly to the full grid and turned into classes by an argmax with per-class offsets, calibrated in ``prepare``
so that the pooled-then-upsampled training maps keep their class volumes (thin structures such as bone vanish under
a plain argmax). Optionally only the largest connected component of named classes (``largest_component``) is kept;
removed voxels go to the next most likely class. ``generate`` returns images filled with -1 and the class maps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from synthrelease.errors import InputError
from synthrelease.generators.base import StepLosses
from synthrelease.generators.data import DataSpec, TrainingData, labels_to_onehot
from synthrelease.generators.ddpm import DiffusionConfig, DiffusionGenerator

__all__ = ["MaskConfig", "MaskDiffusionGenerator"]

_CALIBRATION_CASES = 16  # training maps used to calibrate the class offsets
_CALIBRATION_ROUNDS = 30


@dataclass(frozen=True)
class MaskConfig(DiffusionConfig):
    """``mask`` settings: the diffusion settings plus the working grid and post-processing."""

    steps: int = 400
    lr: float = 5e-4
    ema_decay: float = 0.995
    factor: int = 2  # the model works on the grid divided by this (1 = full grid)
    calibrate: bool = True  # per-class argmax offsets that preserve class volumes after upsampling
    largest_component: tuple[str, ...] = ("tumour",)  # label names kept as one component (absent names: ignored)

    def validate(self) -> None:
        super().validate()
        if self.factor < 1:
            raise InputError(f"config factor = {self.factor} must be at least 1")
        if not all(isinstance(name, str) for name in self.largest_component):
            raise InputError("config largest_component must be a list of label names")


class MaskDiffusionGenerator(DiffusionGenerator):
    """Generates label maps only (images are -1); the mask source of conditioned generators."""

    name = "mask"
    Config = MaskConfig
    config: MaskConfig

    def layout(self, spec: DataSpec) -> tuple[int, int, tuple[int, int, int]]:
        f = self.config.factor
        if any(s % f for s in spec.shape):
            raise InputError(f"mask: grid {spec.shape} is not divisible by factor {f}", fix="choose another factor")
        z, y, x = (s // f for s in spec.shape)
        return spec.n_labels, spec.n_labels, (z, y, x)

    def build(self, spec: DataSpec) -> None:
        super().build(spec)
        self.offsets_ = torch.zeros(spec.n_labels)

    def extra_state(self) -> dict[str, Any]:
        return {**super().extra_state(), "offsets": self.offsets_}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        self.offsets_ = state["offsets"].float().cpu()

    def encode(self, classes: torch.Tensor) -> torch.Tensor:
        """Class maps (B, Z, Y, X) -> pooled one-hot channels (B, L, Z/f, Y/f, X/f) in [-1, 1]."""
        onehot = labels_to_onehot(classes, self.spec_.n_labels)
        return F.avg_pool3d(onehot, self.config.factor) if self.config.factor > 1 else onehot

    def upsample(self, channels: torch.Tensor) -> torch.Tensor:
        """Pooled channels -> full grid, plus the class offsets (argmax of the result = classes)."""
        f = self.config.factor
        up = F.interpolate(channels, scale_factor=f, mode="trilinear", align_corners=False) if f > 1 else channels
        return up + self.offsets_.to(up).view(1, -1, 1, 1, 1)

    def prepare(self, data: TrainingData) -> None:
        """Calibrate the offsets so that encode -> upsample -> argmax keeps each class's share of voxels."""
        if not self.config.calibrate or self.config.factor == 1:
            return
        n_labels = self.spec_.n_labels
        classes = data.classes[:_CALIBRATION_CASES]
        target = torch.bincount(classes.flatten(), minlength=n_labels).double()
        pooled = [self.encode(classes[i : i + 4].to(self.device)) for i in range(0, len(classes), 4)]
        present = target[1:] > 0
        for _ in range(_CALIBRATION_ROUNDS):
            counts = torch.zeros(n_labels, dtype=torch.float64)
            for chunk in pooled:
                counts += torch.bincount(self.upsample(chunk).argmax(1).flatten(), minlength=n_labels).double().cpu()
            step = 0.5 * (target[1:].clamp_min(1).log() - counts[1:].clamp_min(1).log())
            self.offsets_[1:] += torch.where(present, step, torch.zeros_like(step)).float()

    def training_step(self, images: torch.Tensor, classes: torch.Tensor, step: int) -> StepLosses:
        return self.denoise_step(self.encode(classes))

    def generate(self, n: int, generator: torch.Generator, **options: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` label maps (options: ``sampler``, ``steps``, ``eta``); images are all -1."""
        n_labels, grid = self.spec_.n_labels, self.layout(self.spec_)[2]
        scores = self.upsample(self.denoise((n, n_labels, *grid), generator, **options)).cpu()
        classes = scores.argmax(1)
        for name in self.config.largest_component:
            if name in self.spec_.labels:
                _keep_largest_component(classes, scores, self.spec_.label_values.index(self.spec_.labels[name]))
        images = torch.full((n, self.spec_.n_channels, *self.spec_.shape), -1.0)
        return images, classes

    def provenance(self) -> dict[str, Any]:
        return {"mode": "mask"}


def _keep_largest_component(classes: torch.Tensor, scores: torch.Tensor, k: int) -> None:
    """In place: voxels of class ``k`` outside its largest 26-connected component take their next best class."""
    for i in range(classes.shape[0]):
        components, count = ndimage.label((classes[i] == k).numpy(), structure=np.ones((3, 3, 3)))
        if count < 2:
            continue
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        drop = torch.from_numpy((components > 0) & (components != int(sizes.argmax())))
        others = scores[i].clone()
        others[k] = -torch.inf
        classes[i][drop] = others.argmax(0)[drop]
