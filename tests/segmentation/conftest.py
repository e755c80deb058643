"""Tiny phantom cohorts for the segmentation engines, and one torch thread while they train."""

from __future__ import annotations

from pathlib import Path

import pytest

from synthrelease.data.nnunet import write_nnunet
from synthrelease.data.phantoms import make_mri_phantom
from synthrelease.data.preprocess import PreprocessConfig, preprocess_case


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    """Set before the module's fixtures compute anything (``one_torch_thread``)."""


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """MRI phantoms at 16^3 (four channels, BraTS labels): 8 training and 4 test cases, on the model range."""
    root = tmp_path_factory.mktemp("seg")
    cfg = PreprocessConfig.for_modality("mri", spacing=(220 / 16,) * 3, shape=(16, 16, 16))
    cases = [preprocess_case(make_mri_phantom(i, shape=16, seed=0), cfg)[0] for i in range(12)]
    out = {}
    for name, part in (("train", cases[:8]), ("test", cases[8:])):
        c = part[0]
        out[name] = write_nnunet(part, root / name, name=name, schema=c.schema, modality=c.modality,
                                 channel_names=c.channel_names)
    return out
