"""The privacy family on phantom control sets: it must flag copies and must not flag unseen real patients."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from synthrelease.checks import AuditContext, CheckResult, Status, select_checks
from synthrelease.data.cohort import Cohort


def _run(ctx: AuditContext) -> dict[str, CheckResult]:
    return {c.name: c.run(ctx) for c in select_checks(["privacy"])}


@pytest.fixture(scope="module")
def copycat_results(train: Cohort, holdout: Cohort, copycat: Cohort, tmp_path_factory: pytest.TempPathFactory,
                    cache_dir: Path, make_context: Callable[..., AuditContext]) -> dict[str, CheckResult]:
    return _run(make_context(train, holdout, copycat, tmp_path_factory.mktemp("copycat"), cache_dir))


@pytest.fixture(scope="module")
def others_results(train: Cohort, holdout: Cohort, others: Cohort, tmp_path_factory: pytest.TempPathFactory,
                   cache_dir: Path, make_context: Callable[..., AuditContext]) -> dict[str, CheckResult]:
    return _run(make_context(train, holdout, others, tmp_path_factory.mktemp("others"), cache_dir))


def test_copycat_is_flagged_as_memorized(copycat_results: dict[str, CheckResult]) -> None:
    mem = copycat_results["privacy.memorization"]
    assert mem.status is Status.OK
    assert mem.metrics["flagged_fraction"].value >= 0.95
    assert mem.evidence["figures"] and all(f["contains_real_data"] for f in mem.evidence["figures"])
    assert copycat_results["privacy.mask_memorization"].metrics["flagged_fraction"].value >= 0.95
    assert copycat_results["privacy.dcr"].metrics["overfitting_p"].value > 0.9


def test_copycat_membership_is_inferred(copycat_results: dict[str, CheckResult]) -> None:
    mia = copycat_results["privacy.mia"]
    assert mia.metrics["auc"].value > 0.9
    assert mia.metrics["tpr_at_1pct_fpr"].value > 0.5


def test_copycat_faces_are_reidentified(copycat_results: dict[str, CheckResult]) -> None:
    reid = copycat_results["privacy.reidentification"]
    assert reid.status is Status.OK, reid.reason
    assert reid.metrics["rank1_rate"].value > reid.metrics["baseline_rate"].value + 0.3


def test_unseen_real_patients_are_not_flagged(others_results: dict[str, CheckResult]) -> None:
    assert others_results["privacy.memorization"].metrics["flagged_fraction"].value <= 0.05
    assert others_results["privacy.mask_memorization"].metrics["flagged_fraction"].value <= 0.05
    auc = others_results["privacy.mia"].metrics["auc"]
    assert auc.ci_low is not None and auc.ci_high is not None and auc.ci_low <= 0.5 <= auc.ci_high
    reid = others_results["privacy.reidentification"].metrics
    assert reid["rank1_rate"].value <= reid["baseline_rate"].value + 0.05
    dcr = others_results["privacy.dcr"].metrics["overfitting_p"]
    assert dcr.ci_low is not None and dcr.ci_low <= 0.5


def test_training_masks_are_flagged(train: Cohort, holdout: Cohort, train_masks: Cohort, tmp_path: Path,
                                    cache_dir: Path, make_context: Callable[..., AuditContext]) -> None:
    ctx = make_context(train, holdout, train_masks, tmp_path, cache_dir)
    (mask,) = select_checks(["privacy.mask_memorization"])
    (image,) = select_checks(["privacy.memorization"])
    assert mask.run(ctx).metrics["flagged_fraction"].value >= 0.95
    assert image.run(ctx).metrics["flagged_fraction"].value <= 0.05  # the images are new patients


def test_membership_is_inferred_from_training_masks_under_new_images(
        train: Cohort, holdout: Cohort, train_masks: Cohort, tmp_path: Path, cache_dir: Path,
        make_context: Callable[..., AuditContext]) -> None:
    """A set that ships the training patients' masks with new images: only the label-map attack sees the members."""
    ctx = make_context(train, holdout, train_masks, tmp_path, cache_dir)
    (mia,) = select_checks(["privacy.mia"])
    result = mia.run(ctx)
    assert result.evidence["strongest_attack"] == "gan_leaks_mask"
    assert result.metrics["auc_gan_leaks_mask"].value > 0.9 and result.metrics["auc"].value > 0.9
    assert result.metrics["auc_gan_leaks_pixel"].value < 0.8


def test_same_seed_same_metrics(train: Cohort, holdout: Cohort, others: Cohort, tmp_path: Path,
                                others_results: dict[str, CheckResult],
                                make_context: Callable[..., AuditContext]) -> None:
    """A fresh context (fresh cache: the embedding is retrained) reproduces the metrics exactly."""
    ctx = make_context(train, holdout, others, tmp_path, tmp_path / "cache2")
    for check in select_checks(["privacy.memorization,privacy.mia"]):
        assert check.run(ctx).flat_metrics() == others_results[check.name].flat_metrics(), check.name


def test_embedding_cache_stays_in_the_cache_folder(cache_dir: Path,
                                                   others_results: dict[str, CheckResult]) -> None:
    files = list(cache_dir.rglob("*.pt"))
    assert files and all(f.is_relative_to(cache_dir) for f in files)


def test_every_metric_is_finite_with_a_valid_ci(copycat_results: dict[str, CheckResult],
                                                others_results: dict[str, CheckResult]) -> None:
    for results in (copycat_results, others_results):
        for r in results.values():
            for m in r.metrics.values():
                assert np.isfinite(m.value)
                if m.ci_low is not None:
                    assert m.ci_high is not None and m.ci_low <= m.ci_high
