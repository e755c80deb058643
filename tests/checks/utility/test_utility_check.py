"""``utility.segmentation`` on tiny MRI phantoms with the MONAI engine and a short budget: a copy of the training set
is exactly as useful as the training set (ratio 1: same budget, same seed, same data), a noise set with random masks
is useless (ratio near 0), the real arm's model is reused from the cache, and the evidence is complete."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from synthrelease.checks import AuditContext, AuditSettings, CheckResult, Status
from synthrelease.checks.utility.segmentation import SegmentationUtilityCheck, check_arms
from synthrelease.data.case import Case
from synthrelease.data.cohort import Cohort
from synthrelease.data.phantoms import make_mri_phantom
from synthrelease.data.preprocess import PreprocessConfig, preprocess_case
from synthrelease.errors import InputError

SETTINGS = AuditSettings(n_boot=200, utility_engine="monai", utility_steps=150, utility_arms=("real", "synthetic"))


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread: None) -> None:  # module scope: set before the module's results are computed
    """Set before the module's fixtures compute anything (``one_torch_thread``)."""


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    cfg = PreprocessConfig.for_modality("mri", spacing=(220 / 16,) * 3, shape=(16, 16, 16))
    return [preprocess_case(make_mri_phantom(i, shape=16, seed=0), cfg)[0] for i in range(14)]


def _noise(case: Case, rng: np.random.Generator, i: int) -> Case:
    """Uniform noise on the model range and a random label map: 1-3 balls of random classes at random places."""
    z, y, x = np.meshgrid(*[np.arange(n) for n in case.shape], indexing="ij")
    labels = np.zeros(case.shape, np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        c, r = rng.integers(0, 16, 3), rng.uniform(1.5, 4)
        labels[(z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 < r * r] = rng.integers(1, 4)
    image = rng.uniform(-1, 1, case.image.shape).astype(np.float32)
    return case.with_(case_id=f"noise{i:03d}", image=image, labels=labels)


@pytest.fixture(scope="module")
def results(cases: list[Case], tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[CheckResult, Path]]:
    train, holdout = Cohort.from_cases(cases[:8], name="train"), Cohort.from_cases(cases[8:], name="holdout")
    rng = np.random.default_rng(0)
    sets = {"copy": Cohort.from_cases([c.with_(case_id=f"syn{i:03d}") for i, c in enumerate(train)]),
            "noise": Cohort.from_cases([_noise(c, rng, i) for i, c in enumerate(train)])}
    cache = tmp_path_factory.mktemp("cache")
    out = {}
    for name, syn in sets.items():
        audit = tmp_path_factory.mktemp(name)
        ctx = AuditContext(train, holdout, syn, out_dir=audit, cache_dir=cache, seed=1, settings=SETTINGS)
        out[name] = (SegmentationUtilityCheck().run(ctx), audit)
    return out


def test_a_copy_of_the_training_set_is_exactly_as_useful(results: dict[str, tuple[CheckResult, Path]]) -> None:
    result, audit = results["copy"]
    assert result.status is Status.OK, result.reason
    m = result.metrics
    assert m["dice_real"].value > 0.15  # the real arm learnt within the budget (NCR and ET are tiny at 16^3)
    assert m["dice_ratio"].value == pytest.approx(1.0, abs=1e-9)  # same budget, seed and data: the same model
    assert m["dice_synthetic"].value == m["dice_real"].value
    assert m["dice_ratio"].ci_low == pytest.approx(1.0) and m["dice_ratio"].ci_high == pytest.approx(1.0)
    for name in ("dice_NCR_real", "dice_SNFH_real", "dice_ET_synthetic", "dice_WT_real", "dice_TC_synthetic",
                 "hd95_real"):
        assert name in m, name
    assert m["dice_WT_real"].value > 0.5 and m["hd95_real"].direction.value == "lower"
    for metric in m.values():
        if metric.ci_low is not None:
            assert metric.ci_high is not None and metric.ci_low <= metric.value <= metric.ci_high
    ev = result.evidence
    assert ev["engine"] == "monai" and ev["arms"] == ["real", "synthetic"] and ev["real_model_reused"] is False
    assert ev["contains_real_data"] is True and ev["per_case"]["contains_real_data"] is True
    assert [r["case"] for r in ev["per_case"]["real"]] == [f"phantom{i:03d}" for i in range(8, 14)]
    assert set(ev["per_case"]["real"][0]["dice"]) == {"NCR", "SNFH", "ET", "WT", "TC"}
    assert 0 < ev["pooled_dice"]["real"]["WT"] <= 1
    (figure,) = ev["figures"]
    assert figure["contains_real_data"] is True and (audit / figure["figure"]).stat().st_size > 1000
    assert not [p for p in (audit.parent).rglob("run-*") if p.is_dir()]  # work files removed


def test_noise_with_random_masks_is_useless(results: dict[str, tuple[CheckResult, Path]]) -> None:
    result, _ = results["noise"]
    assert result.status is Status.OK, result.reason
    assert result.evidence["real_model_reused"] is True  # the real arm came from the cache
    assert result.metrics["dice_real"].value == results["copy"][0].metrics["dice_real"].value
    assert result.metrics["dice_ratio"].value < 0.2, result.metrics["dice_ratio"]
    assert result.metrics["dice_WT_synthetic"].value < 0.2


def test_arms_are_validated(cases: list[Case], tmp_path: Path) -> None:
    assert check_arms(["real", " real+synthetic"]) == ("real", "real+synthetic")
    for bad in (["real", "real"], ["imaginary"], []):
        with pytest.raises(InputError, match="utility arms"):
            check_arms(bad)
    cohort = Cohort.from_cases(cases[:4])
    ctx = AuditContext(cohort, cohort, cohort, out_dir=tmp_path, cache_dir=tmp_path,
                       settings=replace(SETTINGS, utility_arms=("real", "fake")))
    result = SegmentationUtilityCheck().run(ctx)
    assert result.status is Status.ERROR and "utility arms" in (result.reason or "")
