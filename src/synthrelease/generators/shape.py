"""``shape``: a statistical shape model of label maps (principal modes of signed distances), a fast mask source.

The level-set form of the classic statistical shape model (Cootes et al. 1995; Leventon et al. 2000), on label maps.

- **Fit** (seconds, no network): with ``align`` (default), each training map is first moved by whole voxels so
  that its foreground centroid sits at the grid centre, and the offsets are kept apart as a normal fit per axis
  (shape and position modelled separately, as statistical shape models do after a Procrustes step). Each
  foreground class of each map then becomes a signed distance map (voxels of the working grid, negative inside,
  clipped to ``±clip`` so that far-away voxels do not dominate); with ``factor`` > 1 the maps are average-pooled to
  a coarser working grid. The maps of all classes of one case form one vector, and a PCA of the training vectors
  keeps the first ``modes`` principal modes (at most N - 1 for N cases). The model also keeps, per class, the share
  of training maps that hold it and a log-normal fit of its volume.
- **Sample**: mode coefficients are drawn from N(0, (``sd_scale`` sigma_k)^2); the distances are rebuilt, upsampled
  to the full grid, and each class takes the voxels of its lowest distances, as many as a volume drawn from its
  log-normal (truncated at ``±volume_sd_limit`` standard deviations). A cut at distance zero would not do: a mean of
  distance maps of thin bone or of tumours in different places is positive nearly everywhere, so bone would come
  out at half its volume and a tumour in only one sample in five (measured on the demo's phantoms). Classes are
  painted from the largest mean volume to the smallest, so a tumour overrides bone as in the training maps, and
  classes named in ``largest_component`` keep their largest 26-connected component. A class is drawn absent with
  the share of training maps that lack it. With ``align``, the map is then moved to a drawn position.

**Privacy.** Samples are combinations of a few modes, never a training map, but with N in the tens and the grid in
the tens of thousands of voxels the sample modes lean toward the training maps (measured on the demo's 40 training
patients: the first mode carries 24% of the training maps' variance and 13% of unseen patients'). So synthetic
maps sit nearer the training patients' maps than unseen patients' do: a label-map membership attack (``privacy.mia``'s
``gan_leaks_mask``) reached AUC 0.82 without ``align`` (unaligned Dice) and 0.67-0.69 with the audit's alignment
search; ``align`` removes the position part of that signal (unaligned: 0.53 for bone). The release audit decides
whether a set may go; this model is fast, not private by construction. What it keeps of the training data is the
mean, the modes, their variances and the per-class volume and position statistics (aggregates; they stay in the
workspace with the run). ``generate`` returns images filled with -1 and the class maps, like the ``mask``
generator: it is the mask source of conditioned generators (``wgan``'s ``mask_generator = "shape"``), and alone it
makes label maps only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from synthrelease.errors import InputError
from synthrelease.generators.base import Generator, StepLosses
from synthrelease.generators.config import GeneratorConfig
from synthrelease.generators.data import DataSpec, TrainingData, largest_component, pooled_grid, shift_volume

__all__ = ["ShapeConfig", "ShapeModelGenerator"]


@dataclass(frozen=True)
class ShapeConfig(GeneratorConfig):
    """``shape`` settings. The fit is one pass before the first step; steps change nothing (default 1)."""

    steps: int = 1
    checkpoint_every: int = 1
    modes: int = 10  # principal modes kept (at most N - 1 for N training maps)
    clip: float = 6.0  # signed distances clipped to +-clip working-grid voxels
    factor: int = 1  # the model works on the grid divided by this (memory: N x classes x (grid / factor)^3 floats)
    sd_scale: float = 1.0  # mode coefficients ~ N(0, (sd_scale * sigma_k)^2)
    volume_sd_limit: float = 2.5  # log-volumes drawn within +-this many standard deviations of their mean
    largest_component: tuple[str, ...] = ("tumour",)  # label names kept as one component (absent names: ignored)
    align: bool = True  # model shape in a frame centred on each map's foreground centroid, and the position apart

    def validate(self) -> None:
        super().validate()
        if self.modes < 1:
            raise InputError(f"config modes = {self.modes} must be at least 1")
        if self.clip <= 0 or self.sd_scale <= 0 or self.volume_sd_limit <= 0:
            raise InputError("config clip, sd_scale and volume_sd_limit must be positive")
        if self.factor < 1:
            raise InputError(f"config factor = {self.factor} must be at least 1")
        if not all(isinstance(name, str) for name in self.largest_component):
            raise InputError("config largest_component must be a list of label names")


def signed_distance(mask: np.ndarray, clip: float) -> np.ndarray:
    """Euclidean signed distance (voxels; negative inside, positive outside) clipped to ``±clip``; ``+clip``
    everywhere for an empty mask."""
    if not mask.any():
        return np.full(mask.shape, clip, dtype=np.float32)
    if mask.all():
        return np.full(mask.shape, -clip, dtype=np.float32)
    inside = ndimage.distance_transform_edt(mask)
    outside = ndimage.distance_transform_edt(~mask)
    return np.clip(outside - inside, -clip, clip).astype(np.float32)


def _whole(x: float) -> int:
    """Nearest whole voxel, halves up (Python's ``round`` sends 0.5 and 1.5 to 0 and 2: maps that differ by one
    voxel would be aligned one voxel apart)."""
    return math.floor(x + 0.5)


def centroid_offset(classes: torch.Tensor) -> torch.Tensor:
    """The foreground centroid of one class map minus the grid centre, (z, y, x) voxels (0 when empty)."""
    idx = torch.nonzero(classes > 0).double()
    if idx.shape[0] == 0:
        return torch.zeros(3, dtype=torch.float64)
    centre = (torch.tensor(classes.shape, dtype=torch.float64) - 1) / 2
    return idx.mean(0) - centre


class ShapeModelGenerator(Generator):
    """Label maps from the principal modes of the training maps' signed distances (images are -1)."""

    name = "shape"
    Config = ShapeConfig
    config: ShapeConfig

    def grid(self, spec: DataSpec) -> tuple[int, int, int]:
        return pooled_grid(spec, self.config.factor, "shape")

    def build(self, spec: DataSpec) -> None:
        z, y, x = self.grid(spec)
        d = (spec.n_labels - 1) * z * y * x
        self.mean_ = torch.zeros(d)
        self.modes_ = torch.zeros(0, d)
        self.sigma_ = torch.zeros(0)
        self.presence_ = torch.zeros(spec.n_labels)
        self.log_volume_ = torch.zeros(spec.n_labels, 2)  # mean and standard deviation of log(voxels)
        self.explained_ = 0.0
        self.position_ = torch.zeros(2, 3)  # mean and standard deviation of the foreground centroid's offset

    def modules(self) -> dict[str, nn.Module]:
        return {}  # no network: the model is the mean, the modes and the volume statistics

    def features(self, classes: torch.Tensor) -> torch.Tensor:
        """Class maps (N, Z, Y, X) -> clipped signed distances of every foreground class, pooled:
        (N, L - 1, z, y, x)."""
        cfg, n_labels = self.config, self.spec_.n_labels
        out = []
        for labels in classes.numpy():  # one case at a time: only the pooled maps are kept
            maps = torch.from_numpy(np.stack([signed_distance(labels == k, cfg.clip * cfg.factor)
                                              for k in range(1, n_labels)]))
            if cfg.factor > 1:
                maps = F.avg_pool3d(maps[None], cfg.factor)[0] / cfg.factor  # distances in working-grid voxels
            out.append(maps)
        return torch.stack(out)

    def prepare(self, data: TrainingData) -> None:
        """The PCA of the training maps' distances and the per-class presence and volume statistics."""
        cfg, n = self.config, len(data)
        classes = data.classes
        if cfg.align:
            offsets = torch.stack([centroid_offset(c) for c in classes])  # (n, 3) voxels from the grid centre
            self.position_ = torch.stack([offsets.mean(0), offsets.std(0) if n > 1 else torch.zeros(3)]).float()
            classes = torch.stack([shift_volume(c[None], [-_whole(float(o)) for o in off], 0)[0]
                                   for c, off in zip(classes, offsets, strict=True)])
        x = self.features(classes).flatten(1).double()
        mean = x.mean(0)
        k = min(cfg.modes, n - 1)
        if k >= 1:
            _, s, vt = torch.linalg.svd(x - mean, full_matrices=False)
            variance = s**2 / (n - 1)
            self.modes_ = vt[:k].float().contiguous()
            self.sigma_ = variance[:k].sqrt().float()
            total = float(variance.sum())
            self.explained_ = float(variance[:k].sum() / total) if total > 0 else 1.0
        self.mean_ = mean.float()
        volumes = torch.stack([torch.bincount(c.flatten(), minlength=self.spec_.n_labels) for c in data.classes])
        for c in range(1, self.spec_.n_labels):
            present = volumes[:, c] > 0
            self.presence_[c] = float(present.double().mean())
            if bool(present.any()):
                logs = volumes[present, c].double().log()
                sd = float(logs.std()) if int(present.sum()) > 1 else 0.0
                self.log_volume_[c] = torch.tensor([float(logs.mean()), sd])

    def training_step(self, images: torch.Tensor, classes: torch.Tensor, step: int) -> StepLosses:
        """Nothing to optimise: the model was fitted in ``prepare``; reports its size."""
        return {"modes": float(self.modes_.shape[0]), "explained_variance": round(self.explained_, 6)}

    def extra_state(self) -> dict[str, Any]:
        return {"mean": self.mean_, "modes": self.modes_, "sigma": self.sigma_, "presence": self.presence_,
                "log_volume": self.log_volume_, "explained": self.explained_, "position": self.position_}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.mean_, self.modes_, self.sigma_ = state["mean"].float(), state["modes"].float(), state["sigma"].float()
        self.presence_, self.log_volume_ = state["presence"].float(), state["log_volume"].float()
        self.explained_ = float(state["explained"])
        self.position_ = state["position"].float()

    def membership_scores(self, images: torch.Tensor, classes: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
        """``shape_loglik``: each label map's log-likelihood under the fitted model, constants dropped: its
        (aligned) signed distances under probabilistic PCA (Tipping & Bishop 1999: the modes' Gaussian plus isotropic
        noise whose variance is the mean variance the modes leave out) and, with ``align``, its position under the
        positions' normal fit. Training maps lie in the span of the modes (all of it with N - 1 modes), so they
        leave no residual; an unseen map does."""
        classes = classes.cpu().long()
        score = torch.zeros(classes.shape[0], dtype=torch.float64)
        if self.config.align:
            offsets = torch.stack([centroid_offset(c) for c in classes])
            classes = torch.stack([shift_volume(c[None], [-_whole(float(o)) for o in off], 0)[0]
                                   for c, off in zip(classes, offsets, strict=True)])
            mean, sd = self.position_[0].double(), self.position_[1].double()
            spread = sd > 0
            score -= 0.5 * (((offsets - mean)[:, spread] / sd[spread]) ** 2).sum(dim=1)
        d = self.features(classes).flatten(1).double() - self.mean_.double()
        modes, sigma = self.modes_.double(), self.sigma_.double()
        coeff = d @ modes.T  # (B, k)
        kept = sigma > 0
        score -= 0.5 * ((coeff[:, kept] / sigma[kept]) ** 2).sum(dim=1)
        residual = (d - coeff @ modes).pow(2).sum(dim=1)
        score -= 0.5 * residual / self._residual_variance(d.shape[1])
        return {"shape_loglik": score.float()}

    def _residual_variance(self, dims: int) -> float:
        """Per-dimension variance left out of the modes (PPCA's noise variance), floored at a millionth of the
        mean variance per dimension (zero when the modes explain everything)."""
        kept = float((self.sigma_.double() ** 2).sum())
        k = int(self.modes_.shape[0])
        total = kept / self.explained_ if self.explained_ > 0 else kept
        floor = 1e-6 * total / dims if total > 0 else 1e-6
        return max((total - kept) / max(dims - k, 1), floor)

    def distances(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` drawn distance maps on the full grid: (n, L - 1, Z, Y, X)."""
        k = self.modes_.shape[0]
        z = torch.randn((n, k), generator=generator, dtype=torch.float64) * self.config.sd_scale
        flat = self.mean_.double() + (z * self.sigma_.double()) @ self.modes_.double()
        maps = flat.float().view(n, self.spec_.n_labels - 1, *self.grid(self.spec_))
        if self.config.factor > 1:
            maps = F.interpolate(maps, size=self.spec_.shape, mode="trilinear", align_corners=False)
        return maps

    def generate(self, n: int, generator: torch.Generator, **options: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if options:
            raise InputError(f"shape takes no sampling options, got {sorted(options)}")
        n_labels, cfg = self.spec_.n_labels, self.config
        maps = self.distances(n, generator)
        present = torch.rand((n, n_labels), generator=generator, dtype=torch.float64) < self.presence_.double()
        spread = torch.randn((n, n_labels), generator=generator, dtype=torch.float64)
        spread = spread.clamp(-cfg.volume_sd_limit, cfg.volume_sd_limit)
        volume = (self.log_volume_[:, 0].double() + spread * self.log_volume_[:, 1].double()).exp().round()
        order = sorted(range(1, n_labels), key=lambda c: -float(self.log_volume_[c, 0]))  # large first
        single = {self.spec_.label_values.index(self.spec_.labels[name]) for name in cfg.largest_component
                  if name in self.spec_.labels}
        numel = int(np.prod(self.spec_.shape))
        classes = torch.zeros((n, *self.spec_.shape), dtype=torch.long)
        for i in range(n):
            flat = classes[i].view(-1)
            for c in order:
                if not bool(present[i, c]):
                    continue
                v = int(min(max(1.0, float(volume[i, c])), numel))
                chosen = torch.zeros(numel, dtype=torch.bool)
                chosen[torch.topk(maps[i, c - 1].flatten(), v, largest=False).indices] = True
                if c in single:
                    chosen = torch.from_numpy(largest_component(chosen.view(self.spec_.shape).numpy())).view(-1)
                flat[chosen] = c
        if cfg.align:  # each map back to a position drawn from the training positions' normal fit
            offsets = self.position_[0].double() + torch.randn((n, 3), generator=generator, dtype=torch.float64) * \
                self.position_[1].double()
            classes = torch.stack([shift_volume(c[None], [_whole(float(o)) for o in off], 0)[0]
                                   for c, off in zip(classes, offsets, strict=True)])
        images = torch.full((n, self.spec_.n_channels, *self.spec_.shape), -1.0)
        return images, classes

    def provenance(self) -> dict[str, Any]:
        return {"mode": "mask", "modes": int(self.modes_.shape[0]), "explained_variance": round(self.explained_, 4)}
