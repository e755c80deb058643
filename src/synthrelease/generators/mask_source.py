"""Where conditioned generators get their label maps at sampling time.

- ``generated`` (default): a stand-alone mask generator (registered name, default ``mask``; ``shape`` and ``ldm``
  too) trained on the training label maps; samples are new label maps, so no real tumour shape or position is
  shipped (whether they still sit nearer the training patients than unseen ones is the audit's to say).
- ``train`` (the study's way): sample ``i`` is conditioned on training label map ``i mod N``. Supported so that the
  study can be reproduced, recorded in provenance, and failed by the default policy (it ships real masks).
"""

from __future__ import annotations

from typing import Any

import torch

from synthrelease.errors import InputError
from synthrelease.generators.data import DataSpec, TrainingData
from synthrelease.generators.membership import nearest_stored_labels

__all__ = ["MASK_SOURCES", "MaskSource"]

MASK_SOURCES = ("generated", "train")


class MaskSource:
    """Label maps for conditioned generation (class indices, shape (n, Z, Y, X))."""

    def __init__(self, kind: str = "generated", *, generator: str = "mask",
                 generator_config: dict[str, Any] | None = None, seed: int = 0) -> None:
        if kind not in MASK_SOURCES:
            raise InputError(f"mask_source {kind!r} is unknown", fix=f"use one of {list(MASK_SOURCES)}")
        self.kind = kind
        self.generator_name = generator
        self.generator_config = {"seed": seed, **(generator_config or {})}
        self._masks: torch.Tensor | None = None
        self._model: Any = None

    def fit(self, data: TrainingData, *, device: torch.device | None = None) -> MaskSource:
        """``train``: keep the training label maps; ``generated``: train the mask generator on them."""
        if self.kind == "train":
            self._masks = data.classes.clone()
        else:
            from synthrelease.generators.registry import create_generator

            self._model = create_generator(self.generator_name, self.generator_config)
            self._model.fit(data, device=device)  # a mask generator learns the label maps only
        return self

    def draw(self, n: int, generator: torch.Generator, *, offset: int = 0) -> torch.Tensor:
        """``n`` label maps. ``train`` takes training maps ``offset .. offset+n-1`` (mod N) in order."""
        if self.kind == "train":
            if self._masks is None:
                raise InputError("mask source holds no training masks", fix="fit it first")
            idx = torch.arange(offset, offset + n) % self._masks.shape[0]
            return self._masks[idx].clone()
        if self._model is None:
            raise InputError("mask generator is not trained", fix="fit it first")
        with torch.no_grad():
            return self._model.generate(n, generator)[1].cpu()

    def membership_scores(self, images: torch.Tensor, classes: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
        """White-box membership scores of real label maps against this source, each name prefixed ``mask_``:
        ``train``: minus the share of voxels in which a map differs from its closest kept training map
        (``mask_stored``); ``generated``: the mask generator's own attacks."""
        if self.kind == "train":
            return {} if self._masks is None else {"mask_stored": nearest_stored_labels(classes, self._masks)}
        if self._model is None:
            return {}
        scores = self._model.membership_scores(images, classes, seed)
        return {f"mask_{name}": value for name, value in scores.items()}

    def state(self) -> dict[str, Any]:
        if self.kind == "train":
            return {"kind": "train", "masks": self._masks}
        return {"kind": "generated", "model": self._model.state() if self._model is not None else None}

    def load_state(self, state: dict[str, Any], spec: DataSpec) -> None:
        self.kind = state["kind"]
        if self.kind == "train":
            self._masks = state["masks"]
        elif state.get("model") is not None:
            from synthrelease.generators.registry import get_generator_class

            model_state = state["model"]
            self._model = get_generator_class(model_state["generator"])(model_state["config"])
            self._model._restore(model_state)

    def provenance(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mask_source": self.kind}
        if self.kind == "generated":
            out["mask_generator"] = self.generator_name
        return out
