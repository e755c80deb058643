"""Sets for the fidelity proofs, built from the checks' 16^3 CT phantoms (``tests/checks/conftest.py``)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from synthrelease.data.cohort import Cohort


@pytest.fixture(scope="session")
def degraded(others: Cohort) -> Cohort:
    """Real-like cases made worse: images blurred and shifted up by 0.3 (model range), tumours erased from every
    second case."""
    cases = []
    for i, c in enumerate(others):
        image = np.clip(ndimage.gaussian_filter(c.image, (0, 1.0, 1.0, 1.0)) + 0.3, -1, 1)
        labels = c.labels.copy()
        if i % 2 == 0:
            labels[labels == c.schema.labels["tumour"]] = 0
        cases.append(c.with_(image=image, labels=labels))
    return Cohort.from_cases(cases, name="synthetic")


@pytest.fixture(scope="session")
def collapsed(others: Cohort) -> Cohort:
    """Mode collapse: one case repeated with a little noise."""
    rng = np.random.default_rng(0)
    first = others[0]
    return Cohort.from_cases([first.with_(case_id=f"syn{i:04d}", image=np.clip(
        first.image + rng.normal(0, 0.01, first.image.shape).astype(np.float32), -1, 1)) for i in range(len(others))],
        name="synthetic")
