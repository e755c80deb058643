"""One contract suite over every registered check, on tiny CT and MRI phantom sets.

Each check returns a result named after itself, ``ok`` (finite metrics, valid directions and intervals) or
``skipped``/``error`` with a reason and no metric; results round-trip through JSON; the same seed gives the same
metrics.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from synthrelease.checks import AuditContext, AuditSettings, CheckResult, Direction, Status, check_names
from synthrelease.checks.embedding import EmbeddingConfig
from synthrelease.checks.registry import get_check_class
from synthrelease.data.cohort import Cohort
from synthrelease.data.phantoms import make_ct_phantom, make_mri_phantom
from synthrelease.data.preprocess import PreprocessConfig, preprocess_case

TINY = AuditSettings(embedding=EmbeddingConfig(size=16, steps=4, batch=6), n_boot=50, utility_steps=3,
                     utility_engine="monai")


def _cohorts(modality: str) -> tuple[Cohort, Cohort, Cohort]:
    make = make_ct_phantom if modality == "ct" else make_mri_phantom
    mm = 240.0 / 16 if modality == "ct" else 220.0 / 16  # the phantoms' own spacing: no label is resampled away
    cfg = PreprocessConfig.for_modality(modality, spacing=(mm, mm, mm), shape=(16, 16, 16))
    cases = [preprocess_case(make(i, shape=16, seed=0), cfg)[0] for i in range(14)]
    syn = [c.with_(case_id=f"syn{i:04d}") for i, c in enumerate(cases[10:])]
    return (Cohort.from_cases(cases[:6], name="train"), Cohort.from_cases(cases[6:10], name="holdout"),
            Cohort.from_cases(syn, name="synthetic"))


@pytest.fixture(scope="module", params=["ct", "mri"])
def context(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AuditContext:
    train, holdout, syn = _cohorts(request.param)
    tmp = tmp_path_factory.mktemp(f"contract-{request.param}")
    return AuditContext(train, holdout, syn, out_dir=tmp / "audit", cache_dir=tmp / "cache", seed=3, settings=TINY)


@pytest.mark.parametrize("name", check_names())
def test_check_contract(name: str, context: AuditContext) -> None:
    check = get_check_class(name)()
    assert check.name == name and check.family == name.split(".")[0]
    result = check.run(context)
    assert result.name == name
    assert result.status in (Status.OK, Status.SKIPPED), result.reason
    if result.status is Status.OK:
        assert result.metrics
        for key, metric in result.metrics.items():
            assert key.isidentifier() and np.isfinite(metric.value)
            assert isinstance(metric.direction, Direction)
            if metric.ci_low is not None:
                assert metric.ci_high is not None and metric.ci_low <= metric.ci_high
        assert all(k.startswith(f"{name}.") for k in result.flat_metrics())
    else:
        assert result.reason and not result.metrics
    back = CheckResult.from_dict(name, json.loads(json.dumps(result.to_dict())))
    assert back.flat_metrics() == result.flat_metrics() and back.status is result.status
    assert check.run(context).flat_metrics() == result.flat_metrics()  # same seed, same metrics


def test_context_rejects_mismatched_channels(tmp_path: Path) -> None:
    from synthrelease.errors import InputError

    ct_train, ct_hold, _ = _cohorts("ct")
    _, _, mri_syn = _cohorts("mri")
    with pytest.raises(InputError, match="channels"):
        AuditContext(ct_train, ct_hold, mri_syn, out_dir=tmp_path, cache_dir=tmp_path)
