"""Phantom cohorts for the checks: CT head & neck at 16^3, split into train / holdout / other real patients.

Module-scoped and cheap: 16^3 volumes, a short embedding schedule and 200 bootstrap draws.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from synthrelease.checks import AuditContext, AuditSettings
from synthrelease.checks.embedding import EmbeddingConfig
from synthrelease.data.case import Case
from synthrelease.data.cohort import Cohort
from synthrelease.data.phantoms import make_ct_phantom
from synthrelease.data.preprocess import PreprocessConfig, preprocess_case
from synthrelease.generators import create_generator

N_TRAIN, N_HOLDOUT, N_OTHER = 20, 30, 30
SETTINGS = AuditSettings(embedding=EmbeddingConfig(size=16, steps=20, batch=10), n_boot=200)


@pytest.fixture(scope="session", autouse=True)
def _two_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(min(2, threads))
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def phantoms() -> list[Case]:
    cfg = PreprocessConfig.for_modality("ct", spacing=(15.0, 15.0, 15.0), shape=(16, 16, 16))
    return [preprocess_case(make_ct_phantom(i, shape=16, seed=0), cfg)[0]
            for i in range(N_TRAIN + N_HOLDOUT + N_OTHER)]


@pytest.fixture(scope="session")
def train(phantoms: list[Case]) -> Cohort:
    return Cohort.from_cases(phantoms[:N_TRAIN], name="train")


@pytest.fixture(scope="session")
def holdout(phantoms: list[Case]) -> Cohort:
    return Cohort.from_cases(phantoms[N_TRAIN:N_TRAIN + N_HOLDOUT], name="holdout")


@pytest.fixture(scope="session")
def others(phantoms: list[Case]) -> Cohort:
    """Real patients the generator never saw, presented as a 'synthetic' set (renamed)."""
    rest = phantoms[N_TRAIN + N_HOLDOUT:]
    return Cohort.from_cases([c.with_(case_id=f"syn{i:04d}") for i, c in enumerate(rest)], name="synthetic")


@pytest.fixture(scope="session")
def copycat(train: Cohort) -> Cohort:
    """The negative control: perturbed copies of training cases (4 per training case on average)."""
    gen = create_generator("copycat", {})
    gen.fit(train)
    cases = gen.sample(4 * N_TRAIN, seed=7)
    return Cohort.from_cases([c.with_(case_id=f"syn{i:04d}") for i, c in enumerate(cases)], name="synthetic")


@pytest.fixture(scope="session")
def train_masks(train: Cohort, others: Cohort) -> Cohort:
    """A mask-conditioned set with mask_source = train: new images, each on a training patient's label map."""
    return Cohort.from_cases([o.with_(labels=t.labels) for o, t in zip(others, train, strict=False)],
                             name="synthetic")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One embedding cache for the session: the encoder trained on ``train`` is reused by every context."""
    return tmp_path_factory.mktemp("cache")


def _make_context(train: Cohort, holdout: Cohort, synthetic: Cohort, tmp: Path, cache: Path,
                  **kw: object) -> AuditContext:
    return AuditContext(train, holdout, synthetic, out_dir=tmp / "audit", cache_dir=cache, seed=0,
                        settings=SETTINGS, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def make_context() -> Callable[..., AuditContext]:
    """``make_context(train, holdout, synthetic, tmp, cache, **kw)``: an AuditContext with the test settings."""
    return _make_context
