"""Fixtures shared by the generator tests: a tiny phantom CT cohort, one CPU thread per test module."""

from __future__ import annotations

import pytest

from synthrelease.data.cohort import Cohort
from synthrelease.data.phantoms import make_ct_phantom
from synthrelease.data.preprocess import PreprocessConfig, preprocess_case


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    """Set before the module's fixtures compute anything (``one_torch_thread``)."""


@pytest.fixture(scope="module")
def cohort() -> Cohort:
    """Six 16^3 CT phantoms in model range (labels background / tumour / bone)."""
    cfg = PreprocessConfig.for_modality("ct", spacing=(15.0, 15.0, 15.0), shape=(16, 16, 16))
    return Cohort.from_cases([preprocess_case(make_ct_phantom(i, shape=16, seed=0), cfg)[0] for i in range(6)])
