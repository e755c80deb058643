"""Shared fixtures: tiny cases built on the fly (16^3-32^3)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from synthrelease.data.case import Case, Geometry
from synthrelease.data.schema import BRATS_SCHEMA, CT_HEAD_NECK_SCHEMA


def _tiny_case(case_id: str = "c000", *, shape: tuple[int, int, int] = (16, 18, 20), modality: str = "CT",
               seed: int = 0, spacing: tuple[float, float, float] = (1.5, 1.25, 2.0),
               origin: tuple[float, float, float] = (-10.0, 5.0, 30.0), **kw: Any) -> Case:
    """A body ellipsoid with a tumour (CT: labels 1, 2; MR: 1, 2, 3) on a small anisotropic grid."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    body = (x / 0.8) ** 2 + (y / 0.7) ** 2 + (z / 0.9) ** 2 < 1
    labels = np.zeros(shape, np.uint8)
    if modality == "CT":
        img = np.where(body, 40.0, -1000.0) + rng.normal(0, 10, shape)
        labels[(x + 0.3) ** 2 + y**2 + z**2 < 0.06] = 1
        labels[(np.abs(x - 0.35) < 0.1) & (np.abs(y) < 0.4) & (np.abs(z) < 0.5)] = 2
        img[labels == 2] = 900.0
        image, channels, schema = img[None], ("CT",), CT_HEAD_NECK_SCHEMA
    else:
        img = np.where(body, 500.0, 0.0) + rng.normal(0, 5, shape).clip(0)
        labels[(x + 0.2) ** 2 + y**2 + z**2 < 0.15] = 2
        labels[(x + 0.2) ** 2 + y**2 + z**2 < 0.06] = 3
        labels[(x + 0.2) ** 2 + y**2 + z**2 < 0.02] = 1
        image, channels, schema = np.stack([img, img * 0.8]), ("t1c", "t2f"), BRATS_SCHEMA
    return Case(case_id=case_id, image=image.astype(np.float32), labels=labels,
                geometry=Geometry(spacing=spacing, origin=origin), modality=modality,
                channel_names=channels, schema=schema, **kw)


@pytest.fixture
def make_case() -> Callable[..., Case]:
    """Factory: ``make_case("id", shape=..., modality="CT"|"MR", seed=...)``."""
    return _tiny_case
