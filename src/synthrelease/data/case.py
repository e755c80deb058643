"""``Case``: one patient volume (image channels + label map) on one physical grid.

Array axes follow SimpleITK's ``GetArrayFromImage``: image ``(C, Z, Y, X)``, label map ``(Z, Y, X)``.
Geometry follows ITK/DICOM physical order: ``spacing`` and ``origin`` are ``(x, y, z)`` in millimetres (LPS),
``direction`` is the 3x3 direction-cosine matrix, row-major, as ``sitk.Image.GetDirection()`` returns it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from synthrelease.data.schema import LabelSchema, Modality
from synthrelease.errors import DataError, GeometryError, LabelError

__all__ = ["IDENTITY_DIRECTION", "Case", "Geometry"]

IDENTITY_DIRECTION: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class Geometry:
    """Physical grid of a volume: spacing and origin ``(x, y, z)`` in mm, row-major 3x3 direction."""

    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = IDENTITY_DIRECTION

    def __post_init__(self) -> None:
        object.__setattr__(self, "spacing", tuple(float(v) for v in self.spacing))
        object.__setattr__(self, "origin", tuple(float(v) for v in self.origin))
        object.__setattr__(self, "direction", tuple(float(v) for v in self.direction))

    def validate(self, where: str) -> None:
        """Raise ``GeometryError`` unless spacing is positive and finite and direction orthonormal."""
        sp = np.asarray(self.spacing)
        if sp.shape != (3,) or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
            raise GeometryError(f"spacing {self.spacing} is not three positive numbers", where=where,
                                fix="repair the header's pixel spacing")
        if len(self.origin) != 3 or not np.all(np.isfinite(self.origin)):
            raise GeometryError(f"origin {self.origin} is not three finite numbers", where=where,
                                fix="repair the header's origin")
        d = np.asarray(self.direction, dtype=float)
        if d.shape != (9,) or not np.allclose(d.reshape(3, 3) @ d.reshape(3, 3).T, np.eye(3), atol=1e-4):
            raise GeometryError("direction cosines are not orthonormal", where=where,
                                fix="repair the header's orientation (qform/sform or ImageOrientationPatient)")

    def matches(self, other: Geometry, *, tol: float = 1e-3) -> bool:
        """Same grid within ``tol`` (relative for spacing, mm for origin)."""
        return (
            np.allclose(self.spacing, other.spacing, rtol=tol, atol=0)
            and np.allclose(self.origin, other.origin, atol=max(tol, tol * max(self.spacing)))
            and np.allclose(self.direction, other.direction, atol=tol)
        )

    def to_dict(self) -> dict[str, list[float]]:
        return {"spacing": list(self.spacing), "origin": list(self.origin), "direction": list(self.direction)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Geometry:
        return cls(spacing=tuple(d["spacing"]), origin=tuple(d["origin"]), direction=tuple(d["direction"]))


@dataclass(frozen=True, eq=False)
class Case:
    """One patient: image channels and a label map on the same grid. Validates itself on construction."""

    case_id: str
    image: np.ndarray
    labels: np.ndarray
    geometry: Geometry
    modality: Modality
    channel_names: tuple[str, ...]
    schema: LabelSchema
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "modality", Modality.parse(self.modality))
        object.__setattr__(self, "channel_names", tuple(self.channel_names))
        image = np.asarray(self.image)
        if image.ndim == 3:
            image = image[None]
        object.__setattr__(self, "image", np.ascontiguousarray(image, dtype=np.float32))
        self.validate()
        object.__setattr__(self, "labels", np.ascontiguousarray(self.labels, dtype=np.uint8))

    # -- invariants -------------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Check every invariant; raise a ``DataError`` subclass naming the case and the fix."""
        where = f"case {self.case_id}"
        if not self.case_id or any(c in self.case_id for c in "/\\ "):
            raise DataError(f"case id {self.case_id!r} is empty or holds a path separator or space")
        if self.image.ndim != 4:
            raise GeometryError(f"image has shape {self.image.shape}; expected (C, Z, Y, X)", where=where)
        labels = np.asarray(self.labels)
        if labels.ndim != 3:
            raise GeometryError(f"label map has shape {labels.shape}; expected (Z, Y, X)", where=where)
        if self.image.shape[1:] != labels.shape:
            raise GeometryError(
                f"image grid {self.image.shape[1:]} differs from label-map grid {labels.shape}", where=where,
                fix="resample the label map onto the image grid (nearest neighbour)")
        if len(self.channel_names) != self.image.shape[0]:
            raise DataError(f"{len(self.channel_names)} channel names for {self.image.shape[0]} channels",
                            where=where)
        if min(self.image.shape[1:]) < 2:
            raise GeometryError(f"volume {self.image.shape[1:]} is not three-dimensional", where=where)
        self.geometry.validate(where)
        if not np.all(np.isfinite(self.image)):
            n = int(np.size(self.image) - np.count_nonzero(np.isfinite(self.image)))
            raise DataError(f"image holds {n} NaN or infinite voxels", where=where,
                            fix="repair or exclude the scan")
        if not np.issubdtype(labels.dtype, np.integer) and (
            not np.all(np.isfinite(labels)) or not np.all(labels == np.round(labels))
        ):
            raise LabelError("label map holds non-integer values", where=where,
                             fix="store label maps as integer images")
        unknown = self.schema.unknown_values(labels)
        if unknown:
            raise LabelError(f"label values {unknown} are not in the schema {self.schema.labels}", where=where,
                             fix="map them to schema labels or extend the schema")

    # -- conveniences -----------------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        """Grid shape ``(Z, Y, X)``."""
        z, y, x = self.labels.shape
        return (z, y, x)

    @property
    def n_channels(self) -> int:
        return int(self.image.shape[0])

    def label_volumes_ml(self) -> dict[str, float]:
        """Volume in millilitres of each foreground label."""
        voxel_ml = float(np.prod(self.geometry.spacing)) / 1000.0
        counts = np.bincount(self.labels.ravel(), minlength=256)
        return {name: float(counts[v]) * voxel_ml for name, v in self.schema.foreground.items()}

    def with_(self, **changes: Any) -> Case:
        """A copy with some fields replaced (validated again)."""
        return replace(self, **changes)

    def select_channels(self, names: Sequence[str]) -> Case:
        idx = [self.channel_names.index(n) for n in names]
        return self.with_(image=self.image[idx], channel_names=tuple(names))
