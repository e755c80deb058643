"""Label schemas: which integer in a label map means which structure, plus derived regions.

A schema reads and writes the ``labels`` entry of an nnU-Net ``dataset.json``: ``{"background": 0, "tumour": 1}``;
regions (such as BraTS whole tumour) are entries whose value is a list of labels.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from synthrelease.errors import LabelError

__all__ = ["BRATS_SCHEMA", "CT_HEAD_NECK_SCHEMA", "LabelSchema", "Modality", "default_schema"]


class Modality(StrEnum):
    """Imaging modality of a cohort (DICOM spelling)."""

    CT = "CT"
    MR = "MR"

    @classmethod
    def parse(cls, value: str | Modality) -> Modality:
        """Accept ``ct``, ``CT``, ``mri``, ``mr`` and ``MR``."""
        if isinstance(value, Modality):
            return value
        key = str(value).strip().upper()
        if key in ("MRI", "MR"):
            return cls.MR
        if key == "CT":
            return cls.CT
        raise LabelError(f"unknown modality {value!r}", fix="use 'ct' or 'mri'")


@dataclass(frozen=True)
class LabelSchema:
    """Label values by name (background must be 0) and optional regions (unions of labels)."""

    labels: Mapping[str, int]
    regions: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        labels = dict(self.labels)
        if labels.get("background") != 0:
            raise LabelError("label schema needs 'background': 0", fix="add it to the labels of dataset.json")
        values = list(labels.values())
        if len(set(values)) != len(values):
            raise LabelError(f"label schema maps two names to one value: {labels}", fix="give each label its own value")
        if any(not 0 <= v <= 255 for v in values):
            raise LabelError(f"label values must lie in 0..255: {labels}", fix="renumber the labels")
        for name, members in self.regions.items():
            if name in labels and tuple(members) != (labels[name],):
                raise LabelError(f"region {name!r} has the name of a label but other members: {list(members)}")
            unknown = set(members) - set(values)
            if unknown:
                raise LabelError(f"region {name!r} uses labels {sorted(unknown)} not in the schema")
        object.__setattr__(self, "labels", dict(sorted(labels.items(), key=lambda kv: kv[1])))
        object.__setattr__(self, "regions", {k: tuple(sorted(v)) for k, v in self.regions.items()})

    @property
    def values(self) -> tuple[int, ...]:
        """All label values, background included, ascending."""
        return tuple(self.labels.values())

    @property
    def foreground(self) -> dict[str, int]:
        """Labels other than background."""
        return {k: v for k, v in self.labels.items() if v != 0}

    def name_of(self, value: int) -> str:
        for name, v in self.labels.items():
            if v == value:
                return name
        raise LabelError(f"label value {value} is not in the schema {self.labels}")

    def value_of(self, name: str) -> int:
        try:
            return self.labels[name]
        except KeyError:
            raise LabelError(
                f"label {name!r} is not in the schema", fix=f"use one of {sorted(self.labels)}"
            ) from None

    def unknown_values(self, label_map: np.ndarray) -> list[int]:
        """Values present in ``label_map`` that the schema does not define."""
        present = np.unique(label_map)
        return sorted(int(v) for v in present if int(v) not in self.labels.values())

    def region_mask(self, label_map: np.ndarray, region: str) -> np.ndarray:
        """Boolean mask of a region (or of a single label, by name)."""
        if region in self.regions:
            return np.isin(label_map, self.regions[region])
        return np.asarray(label_map == self.value_of(region))

    # dataset.json round trip -----------------------------------------------------------------------------------
    def labels_json(self) -> dict[str, int]:
        """The ``labels`` entry of an nnU-Net ``dataset.json`` (plain labels, so nnU-Net trains per label)."""
        return dict(self.labels)

    def regions_json(self) -> dict[str, list[int]]:
        """Regions, kept under their own ``regions`` key of ``dataset.json`` (nnU-Net ignores it)."""
        return {name: list(members) for name, members in self.regions.items()}

    @classmethod
    def from_dataset_json(
        cls, labels: Mapping[str, Any], regions: Mapping[str, Any] | None = None
    ) -> LabelSchema:
        """Read ``labels`` (and our ``regions`` key). nnU-Net region-style list entries become regions."""
        plain: dict[str, int] = {}
        found: dict[str, tuple[int, ...]] = {}
        for name, value in labels.items():
            if isinstance(value, list | tuple):
                found[name] = tuple(int(v) for v in value)
            else:
                plain[name] = int(value)
        for name, value in (regions or {}).items():
            found[name] = tuple(int(v) for v in value)
        named = set(plain.values())
        for members in found.values():  # label values only reachable through a region get a generic name
            for v in members:
                if v not in named:
                    plain[f"label_{v}"] = v
                    named.add(v)
        return cls(labels=plain, regions=found)

    @classmethod
    def from_names(cls, names: Iterable[str]) -> LabelSchema:
        """Schema numbering ``names`` 1, 2, ... after background."""
        return cls(labels={"background": 0, **{n: i + 1 for i, n in enumerate(names)}})


CT_HEAD_NECK_SCHEMA = LabelSchema(labels={"background": 0, "tumour": 1, "bone": 2})
"""Head and neck CT: gross tumour volume and bone (mandible, vertebrae, skull base)."""

BRATS_SCHEMA = LabelSchema(
    labels={"background": 0, "NCR": 1, "SNFH": 2, "ET": 3},
    regions={"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)},
)
"""BraTS (2023 numbering): necrotic core, surrounding FLAIR hyperintensity, enhancing tumour; WT/TC/ET regions."""


def default_schema(modality: Modality | str) -> LabelSchema:
    """The study's schema for a modality: CT head & neck or BraTS glioma MRI."""
    return CT_HEAD_NECK_SCHEMA if Modality.parse(modality) is Modality.CT else BRATS_SCHEMA
