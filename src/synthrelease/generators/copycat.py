"""``copycat``: a NEGATIVE CONTROL that returns perturbed training cases. For testing audits only.

Each sample is a training case, flipped left-right at random, shifted by up to ``max_shift`` voxels (air enters
the view, nothing wraps around), its intensity
scaled by up to ``±intensity_jitter`` and given Gaussian noise. A working privacy audit must flag these sets; the
provenance of every set marks ``negative_control = true`` and export refuses them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from synthrelease.errors import InputError
from synthrelease.generators.base import Generator, StepLosses
from synthrelease.generators.config import GeneratorConfig
from synthrelease.generators.data import DataSpec, TrainingData, labels_to_onehot, shift_volume
from synthrelease.generators.membership import nearest_stored

__all__ = ["CopycatConfig", "CopycatGenerator"]


@dataclass(frozen=True)
class CopycatConfig(GeneratorConfig):
    steps: int = 1
    checkpoint_every: int = 1
    max_shift: int = 2  # voxels
    intensity_jitter: float = 0.05  # relative
    noise_std: float = 0.02  # model range
    flip: bool = True

    def validate(self) -> None:
        super().validate()
        if self.max_shift < 0 or not 0 <= self.intensity_jitter < 1 or self.noise_std < 0:
            raise InputError("copycat needs max_shift >= 0, 0 <= intensity_jitter < 1 and noise_std >= 0")


class CopycatGenerator(Generator):
    """Negative control: perturbed copies of training cases. Never release its output."""

    name = "copycat"
    Config = CopycatConfig
    negative_control = True
    config: CopycatConfig

    def build(self, spec: DataSpec) -> None:
        c, (z, y, x) = spec.n_channels, spec.shape
        self._images = torch.zeros(0, c, z, y, x)
        self._classes = torch.zeros(0, z, y, x, dtype=torch.long)

    def modules(self) -> dict[str, nn.Module]:
        return {}  # no network: the "model" is the stored training cohort

    def prepare(self, data: TrainingData) -> None:
        self._images, self._classes = data.images.clone(), data.classes.clone()

    def extra_state(self) -> dict[str, Any]:
        return {"images": self._images, "classes": self._classes}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self._images, self._classes = state["images"], state["classes"]

    def training_step(self, images: torch.Tensor, classes: torch.Tensor, step: int) -> StepLosses:
        return {"stored_cases": float(self._images.shape[0])}

    def membership_scores(self, images: torch.Tensor, classes: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
        """``nearest_stored``: minus the distance (mean squared difference over image and one-hot channels) to the
        closest stored case; a training case is stored, so it scores 0 (the negative control of the attacks)."""
        n_labels = self.spec_.n_labels

        def flat(img: torch.Tensor, lab: torch.Tensor) -> torch.Tensor:
            return torch.cat([img.flatten(1), labels_to_onehot(lab, n_labels).flatten(1)], dim=1)

        return {"nearest_stored": nearest_stored(flat(images, classes), self._images.shape[0],
                                                 lambda part: flat(self._images[part], self._classes[part]))}

    def generate(self, n: int, generator: torch.Generator, **options: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if options:
            raise InputError(f"copycat takes no sampling options, got {sorted(options)}")
        cfg = self.config
        count = self._images.shape[0]
        images, classes = [], []
        for _ in range(n):
            i = int(torch.randint(count, (1,), generator=generator))
            img, lab = self._images[i].clone(), self._classes[i].clone()
            if cfg.flip and bool(torch.rand(1, generator=generator) < 0.5):
                img, lab = img.flip(-1), lab.flip(-1)
            if cfg.max_shift:
                shifts = [int(s) for s in torch.randint(-cfg.max_shift, cfg.max_shift + 1, (3,), generator=generator)]
                img, lab = shift_volume(img, shifts, -1.0), shift_volume(lab[None], shifts, 0)[0]
            scale = 1 + (torch.rand(1, generator=generator).item() * 2 - 1) * cfg.intensity_jitter
            img = (img + 1) * scale - 1 + torch.randn(img.shape, generator=generator) * cfg.noise_std
            images.append(img.clamp(-1, 1))
            classes.append(lab)
        return torch.stack(images), torch.stack(classes)

    def provenance(self) -> dict[str, Any]:
        return {"negative_control": True, "mask_source": "train"}
