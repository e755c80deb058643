"""Training data for generators: a cohort as tensors, and the spec of the grid generators learn.

Images are in model range [-1, 1] (as the workspace stores them); label maps are integer class indices
``0..n_labels-1`` (the schema's values, re-indexed when they are not contiguous).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from synthrelease.data.case import Case, Geometry
from synthrelease.data.cohort import Cohort
from synthrelease.data.schema import LabelSchema, Modality
from synthrelease.errors import DataError, InputError

__all__ = ["DataSpec", "TrainingData", "labels_to_onehot", "largest_component", "onehot_to_labels", "pooled_grid",
           "shift_volume"]


@dataclass(frozen=True)
class DataSpec:
    """What a generator was trained on: modality, channels, label schema, grid."""

    modality: str
    channel_names: tuple[str, ...]
    labels: dict[str, int]
    regions: dict[str, list[int]]
    shape: tuple[int, int, int]  # (Z, Y, X)
    spacing: tuple[float, float, float]  # (x, y, z) mm

    @property
    def schema(self) -> LabelSchema:
        return LabelSchema.from_dataset_json(self.labels, self.regions)

    @property
    def n_channels(self) -> int:
        return len(self.channel_names)

    @property
    def n_labels(self) -> int:
        """Classes including background."""
        return len(self.labels)

    @property
    def label_values(self) -> tuple[int, ...]:
        return tuple(sorted(self.labels.values()))

    def to_dict(self) -> dict[str, Any]:
        return {"modality": self.modality, "channel_names": list(self.channel_names), "labels": dict(self.labels),
                "regions": {k: list(v) for k, v in self.regions.items()}, "shape": list(self.shape),
                "spacing": list(self.spacing)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataSpec:
        return cls(modality=d["modality"], channel_names=tuple(d["channel_names"]), labels=dict(d["labels"]),
                   regions={k: list(v) for k, v in d.get("regions", {}).items()},
                   shape=(int(d["shape"][0]), int(d["shape"][1]), int(d["shape"][2])),
                   spacing=(float(d["spacing"][0]), float(d["spacing"][1]), float(d["spacing"][2])))

    def make_case(self, case_id: str, image: np.ndarray, classes: np.ndarray) -> Case:
        """A case on this spec's grid (identity direction, origin 0) from model-range image and class indices."""
        values = np.asarray(self.label_values, dtype=np.uint8)
        return Case(case_id=case_id, image=image.astype(np.float32), labels=values[classes],
                    geometry=Geometry(spacing=self.spacing), modality=Modality.parse(self.modality),
                    channel_names=self.channel_names, schema=self.schema)


def pooled_grid(spec: DataSpec, factor: int, who: str) -> tuple[int, int, int]:
    """The working grid of a generator that pools ``spec``'s grid by ``factor`` (bad input if it does not divide)."""
    if any(s % factor for s in spec.shape):
        raise InputError(f"{who}: grid {spec.shape} is not divisible by factor {factor}", fix="choose another factor")
    z, y, x = (s // factor for s in spec.shape)
    return z, y, x


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a boolean volume (the volume itself when it has one or none)."""
    components, count = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    if count < 2:
        return mask
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return np.asarray(components == int(sizes.argmax()))


def shift_volume(x: torch.Tensor, shifts: list[int], fill: float) -> torch.Tensor:
    """``(C, Z, Y, X)`` moved by whole voxels; what enters the view is ``fill`` (air, background), nothing wraps."""
    out = torch.full_like(x, fill)
    src, dst = [slice(None)], [slice(None)]
    for s, n in zip(shifts, x.shape[1:], strict=True):
        src.append(slice(max(0, -s), n - max(0, s)))
        dst.append(slice(max(0, s), n - max(0, -s)))
    out[tuple(dst)] = x[tuple(src)]
    return out


def labels_to_onehot(classes: torch.Tensor, n_labels: int) -> torch.Tensor:
    """``(B, Z, Y, X)`` class indices -> ``(B, n_labels, Z, Y, X)`` float one-hot in {-1, 1} (diffusion range)."""
    onehot = torch.nn.functional.one_hot(classes.long(), n_labels).movedim(-1, 1).float()
    return onehot * 2.0 - 1.0


def onehot_to_labels(channels: torch.Tensor) -> torch.Tensor:
    """Soft one-hot channels ``(B, L, Z, Y, X)`` -> class indices by argmax."""
    return channels.argmax(dim=1)


class TrainingData:
    """A cohort held as tensors: ``images`` (N, C, Z, Y, X) float32, ``classes`` (N, Z, Y, X) int64."""

    def __init__(self, images: torch.Tensor, classes: torch.Tensor, spec: DataSpec,
                 case_ids: Sequence[str]) -> None:
        if images.ndim != 5 or classes.ndim != 4 or images.shape[0] != classes.shape[0]:
            raise DataError(f"training tensors of shapes {tuple(images.shape)} and {tuple(classes.shape)} "
                            "do not form (N, C, Z, Y, X) images with (N, Z, Y, X) label maps")
        if len(case_ids) != images.shape[0] or images.shape[0] == 0:
            raise DataError("training data needs at least one case, with one id per case")
        self.images = images.float().contiguous()
        self.classes = classes.long().contiguous()
        self.spec = spec
        self.case_ids = list(case_ids)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @classmethod
    def from_cohort(cls, cohort: Cohort) -> TrainingData:
        """Load every case (they share one grid in a workspace) into memory."""
        images, classes, ids = [], [], []
        values = sorted(cohort.schema.values)
        lut = np.zeros(256, dtype=np.int64)
        lut[values] = np.arange(len(values))
        geometry: Geometry | None = None
        for case in cohort:
            if geometry is None:
                geometry = case.geometry
                shape = case.shape
            elif case.shape != shape:
                raise DataError(f"case {case.case_id} has grid {case.shape}, others {shape}",
                                fix="train on a workspace cohort (all cases on one grid)")
            images.append(torch.from_numpy(case.image))
            classes.append(torch.from_numpy(lut[case.labels]))
            ids.append(case.case_id)
        if geometry is None:
            raise DataError(f"cohort {cohort.name!r} is empty", fix="ingest cases first")
        spec = DataSpec(modality=cohort.modality.value, channel_names=cohort.channel_names,
                        labels=cohort.schema.labels_json(), regions=cohort.schema.regions_json(),
                        shape=shape, spacing=geometry.spacing)
        return cls(torch.stack(images), torch.stack(classes), spec, ids)

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        return self.images[idx], self.classes[idx]
