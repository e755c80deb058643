"""``mask``: a stand-alone label-map generator (diffusion over one-hot label channels).

The one-hot map ({-1, 1} per class) is average-pooled by ``factor`` (32^3 -> 16^3 at factor 2) and diffused with the
same U-Net / EMA / scheduler machinery as ``ddpm`` (v-prediction by default; each class channel's loss is weighted by
its inverse voxel share to the power ``class_weighting``, so that small tumours are not ignored). At sampling time the
generated channels are upsampled trilinearly to the full grid and turned into classes by an argmax with per-class
offsets, calibrated in ``prepare`` so that pooled-then-upsampled training maps keep their class volumes (a plain
argmax loses thin bone and small tumours). Optionally only the largest connected component of named classes
(``largest_component``) is kept; removed voxels go to their next most likely class. ``generate`` returns images
filled with -1 and the class maps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from synthrelease.errors import InputError
from synthrelease.generators.base import StepLosses
from synthrelease.generators.data import DataSpec, TrainingData, labels_to_onehot, largest_component, pooled_grid
from synthrelease.generators.ddpm import DiffusionConfig, DiffusionGenerator

__all__ = ["MaskConfig", "MaskDiffusionGenerator"]

_CALIBRATION_CASES = 16  # at most this many training maps calibrate the class offsets ...
_CALIBRATION_VOXELS = 2**24  # ... and at most about this many voxels
_CALIBRATION_ROUNDS = 3


@dataclass(frozen=True)
class MaskConfig(DiffusionConfig):
    """``mask`` settings: the diffusion settings plus the working grid and post-processing."""

    steps: int = 400
    lr: float = 5e-4
    ema_decay: float = 0.995
    prediction_type: str = "v_prediction"  # epsilon needs far longer training on label maps
    factor: int = 2  # the model works on the grid divided by this (1 = full grid)
    class_weighting: float = 0.5  # loss weight of class k's channel ~ (1 / voxel share of k) ** this (0: equal)
    calibrate: bool = True  # per-class argmax offsets that preserve class volumes after upsampling
    largest_component: tuple[str, ...] = ("tumour",)  # label names kept as one component (absent names: ignored)

    def validate(self) -> None:
        super().validate()
        if self.factor < 1:
            raise InputError(f"config factor = {self.factor} must be at least 1")
        if self.class_weighting < 0:
            raise InputError(f"config class_weighting = {self.class_weighting} must be non-negative")
        if not all(isinstance(name, str) for name in self.largest_component):
            raise InputError("config largest_component must be a list of label names")


class MaskDiffusionGenerator(DiffusionGenerator):
    """Generates label maps only (images are -1); the mask source of conditioned generators."""

    name = "mask"
    Config = MaskConfig
    config: MaskConfig

    def layout(self, spec: DataSpec) -> tuple[int, int, tuple[int, int, int]]:
        return spec.n_labels, spec.n_labels, pooled_grid(spec, self.config.factor, "mask")

    def build(self, spec: DataSpec) -> None:
        super().build(spec)
        self.offsets_ = torch.zeros(spec.n_labels)
        self.weights_ = torch.ones(spec.n_labels)

    def extra_state(self) -> dict[str, Any]:
        return {**super().extra_state(), "offsets": self.offsets_, "weights": self.weights_}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        self.offsets_, self.weights_ = state["offsets"].float().cpu(), state["weights"].float().cpu()

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
        """Class loss weights from the voxel shares; offsets so that encode -> upsample -> argmax keeps them."""
        n_labels = self.spec_.n_labels
        share = torch.bincount(data.classes.flatten(), minlength=n_labels).double().clamp_min(1)
        weights = (share.sum() / share) ** self.config.class_weighting
        self.weights_ = (weights / weights.mean()).float()
        if not self.config.calibrate or self.config.factor == 1:
            return
        cases = max(1, min(_CALIBRATION_CASES, _CALIBRATION_VOXELS // int(np.prod(self.spec_.shape))))
        classes = data.classes[:cases].to(self.device)
        target = torch.bincount(classes.flatten(), minlength=n_labels)
        with torch.no_grad():
            scores = self.upsample(self.encode(classes))  # offsets still 0
        for _ in range(_CALIBRATION_ROUNDS):  # per class, the offset that gives it its share: a quantile
            for k in range(1, n_labels):
                if int(target[k]) == 0:
                    continue
                others = scores + self.offsets_.to(scores).view(1, -1, 1, 1, 1)
                others[:, k] = -torch.inf
                margin = (scores[:, k] - others.max(1).values).flatten()
                kth = torch.topk(margin, int(target[k])).values[-1]
                self.offsets_[k] = 1e-6 - float(kth)

    def training_step(self, images: torch.Tensor, classes: torch.Tensor, step: int) -> StepLosses:
        return self.denoise_step(self.encode(classes), weights=self.weights_)

    def membership_scores(self, images: torch.Tensor, classes: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
        """The diffusion attacks on the pooled one-hot maps, class channels weighted as in training (images are not
        modelled)."""
        return self.diffusion_membership(self.encode(classes.to(self.device)), None, seed, weights=self.weights_)

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
        mask = (classes[i] == k).numpy()
        drop = torch.from_numpy(mask & ~largest_component(mask))
        others = scores[i].clone()
        others[k] = -torch.inf
        classes[i][drop] = others.argmax(0)[drop]
