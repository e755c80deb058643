"""Proofs of the fidelity checks written beside the shared statistics: intensity, labels, embedding, paired MAE.

Real holdout-like patients presented as a synthetic set score near the holdout noise floor; a degraded set
(blurred, intensity-shifted, tumours erased from half the cases) scores clearly worse on every metric.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from synthrelease.checks import AuditContext, CheckResult, Status, get_check_class
from synthrelease.checks.rois import TISSUE, body_from_model, in_model_range, model_image, roi_masks, tumour_values
from synthrelease.checks.stats import frechet_distance, gaussian_frechet, median_bandwidth, mmd_permutation_p, mmd_rbf
from synthrelease.data.cohort import Cohort
from synthrelease.data.phantoms import make_mri_phantom
from synthrelease.data.preprocess import from_model_range
from synthrelease.data.schema import BRATS_SCHEMA, CT_HEAD_NECK_SCHEMA

Factory = Callable[..., AuditContext]


def _run(name: str, make_context: Factory, train: Cohort, holdout: Cohort, syn: Cohort, tmp: Path, cache: Path,
         **kw: object) -> CheckResult:
    result = get_check_class(name)().run(make_context(train, holdout, syn, tmp, cache, **kw))
    return result


def _values(r: CheckResult) -> dict[str, float]:
    assert r.status is Status.OK, r.reason
    return {k: m.value for k, m in r.metrics.items()}


# -- statistics ------------------------------------------------------------------------------------------------------
def test_frechet_distance_matches_the_closed_form() -> None:
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    a, b = rng.uniform(0.5, 2, 5), rng.uniform(0.5, 2, 5)
    closed = float(((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum())
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(closed, rel=1e-10)
    assert frechet_distance(mu1, np.diag(a), mu1, np.diag(a)) == pytest.approx(0.0, abs=1e-10)
    # fitted to samples, it approaches the closed form; a singular covariance (fewer rows than columns) stays finite
    x = rng.normal(mu1, np.sqrt(a), size=(200_000, 5))
    y = rng.normal(mu2, np.sqrt(b), size=(200_000, 5))
    assert gaussian_frechet(x, y) == pytest.approx(closed, rel=0.02)
    assert np.isfinite(gaussian_frechet(x[:3], y[:3]))


def test_mmd_separates_shifted_distributions_only() -> None:
    rng = np.random.default_rng(2)
    x, same, shifted = rng.normal(size=(60, 4)), rng.normal(size=(60, 4)), rng.normal(0.8, 1, size=(60, 4))
    bw = median_bandwidth(x)
    assert abs(mmd_rbf(x, same, bw)) < 0.02 < mmd_rbf(x, shifted, bw)
    assert mmd_permutation_p(x, shifted, bw, seed=0, n_perm=100) < 0.02
    assert mmd_permutation_p(x, same, bw, seed=0, n_perm=100) > 0.05


# -- scales and regions --------------------------------------------------------------------------------------------
def test_cases_in_hu_or_model_range_compare_alike(train: Cohort) -> None:
    case = train[0]
    hu = case.with_(image=from_model_range(case.image, (-200.0,), (200.0,)))
    assert in_model_range(case.image) and not in_model_range(hu.image)
    np.testing.assert_allclose(model_image(hu, ((-200.0,), (200.0,))), case.image, atol=1e-5)
    np.testing.assert_allclose(model_image(hu), case.image, atol=1e-5)  # no reference: the CT default window


def test_unnormalized_mri_is_scaled_not_taken_for_model_range() -> None:
    case = make_mri_phantom(0, shape=16, seed=0)
    unit = case.with_(image=case.image / case.image.max())  # [0, 1]: not the model range (background is not -1)
    assert not in_model_range(unit.image)
    scaled = model_image(unit)
    assert scaled.min() == pytest.approx(-1.0) and scaled.max() <= 1.0


def test_regions_partition_the_body(train: Cohort) -> None:
    case = train[0]
    body = body_from_model(case.image)
    rois = roi_masks(case.labels, body, case.schema)
    assert list(rois) == ["tumour", "bone", TISSUE]
    assert not (rois[TISSUE] & (case.labels > 0)).any() and rois[TISSUE].sum() > 0.3 * body.sum()
    assert tumour_values(CT_HEAD_NECK_SCHEMA) == ("tumour", (1,))
    assert tumour_values(BRATS_SCHEMA) == ("WT", (1, 2, 3))


# -- the checks ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def results(make_context: Factory, train: Cohort, holdout: Cohort, others: Cohort, degraded: Cohort,
            tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> dict[str, dict[str, CheckResult]]:
    out: dict[str, dict[str, CheckResult]] = {}
    for label, syn in (("real", others), ("degraded", degraded)):
        ctx = make_context(train, holdout, syn, tmp_path_factory.mktemp(label), cache_dir)
        out[label] = {n: get_check_class(n)().run(ctx)
                      for n in ("fidelity.intensity", "fidelity.labels", "fidelity.embedding", "fidelity.diversity")}
    return out


def test_intensity_real_near_floor_degraded_far(results: dict[str, dict[str, CheckResult]]) -> None:
    real, bad = _values(results["real"]["fidelity.intensity"]), _values(results["degraded"]["fidelity.intensity"])
    for roi in ("tumour", "bone", "tissue"):
        assert real[f"w1_{roi}"] < 0.1
        assert bad[f"w1_{roi}"] > 3 * real[f"w1_{roi}"], roi
    figures = results["real"]["fidelity.intensity"].evidence["figures"]
    assert all(f["contains_real_data"] for f in figures) and len(figures) == 2


def test_label_statistics_real_near_floor_degraded_far(results: dict[str, dict[str, CheckResult]]) -> None:
    real, bad = _values(results["real"]["fidelity.labels"]), _values(results["degraded"]["fidelity.labels"])
    assert real["ks_tumour_volume"] < 0.5 and real["ks_tumour_count"] == 0.0
    assert real["empty_fraction_synthetic"] == 0.0 and bad["empty_fraction_synthetic"] == 0.5
    for key in ("ks_tumour_volume", "ks_tumour_count", "w1_tumour_volume_ml"):
        assert bad[key] > real[key] + 0.3, key
    assert results["real"]["fidelity.labels"].evidence["p_values"]["tumour_volume"] > 0.01


def test_embedding_real_near_floor_degraded_far(results: dict[str, dict[str, CheckResult]]) -> None:
    real, bad = _values(results["real"]["fidelity.embedding"]), _values(results["degraded"]["fidelity.embedding"])
    assert real["fid"] < 2 * real["fid_holdout"] and bad["fid"] > 2 * real["fid"]
    assert bad["mmd"] > 5 * max(real["mmd"], 0.01)
    assert real["mmd_p"] > 0.01 and bad["mmd_p"] < 0.01


def test_diversity_blurred_set_is_more_alike_than_real(results: dict[str, dict[str, CheckResult]]) -> None:
    real, bad = _values(results["real"]["fidelity.diversity"]), _values(results["degraded"]["fidelity.diversity"])
    assert abs(real["ms_ssim_excess"]) < 0.06
    assert bad["ms_ssim_excess"] > real["ms_ssim_excess"] + 0.05


def test_paired_mae_pairs_sets_drawn_on_training_masks(make_context: Factory, train: Cohort, holdout: Cohort,
                                                       others: Cohort, train_masks: Cohort, tmp_path: Path,
                                                       cache_dir: Path) -> None:
    unpaired = _run("fidelity.paired_mae", make_context, train, holdout, others, tmp_path / "a", cache_dir)
    assert unpaired.status is Status.SKIPPED and "not conditioned on training masks" in unpaired.reason
    paired = _values(_run("fidelity.paired_mae", make_context, train, holdout, train_masks, tmp_path / "b", cache_dir))
    assert paired["n_pairs"] == len(train_masks) and paired["paired_fraction"] == 1.0
    # other patients' images on training masks are as far as two patients are; near-copies are far closer
    assert paired["mae"] == pytest.approx(paired["mae_between_patients"], rel=0.35)
    rng = np.random.default_rng(3)
    near = Cohort.from_cases([t.with_(case_id=f"syn{i:04d}", image=np.clip(
        t.image + rng.normal(0, 0.02, t.image.shape).astype(np.float32), -1, 1)) for i, t in enumerate(train)],
        name="synthetic")
    close = _values(_run("fidelity.paired_mae", make_context, train, holdout, near, tmp_path / "c", cache_dir))
    assert close["mae"] < 0.25 * close["mae_between_patients"]
    metric = _run("fidelity.paired_mae", make_context, train, holdout, near, tmp_path / "d", cache_dir).metrics["mae"]
    blurred = Cohort.from_cases([c.with_(image=np.clip(c.image + 0.3, -1, 1)) for c in near], name="synthetic")
    worse = _values(_run("fidelity.paired_mae", make_context, train, holdout, blurred, tmp_path / "e", cache_dir))
    assert worse["mae"] > close["mae"] + 0.1
    assert metric.ci_low is not None and metric.ci_high is not None
    assert metric.ci_low <= metric.value <= metric.ci_high


def test_a_region_no_synthetic_case_has_leaves_its_metric_missing(make_context: Factory, train: Cohort,
                                                                  holdout: Cohort, others: Cohort, tmp_path: Path,
                                                                  cache_dir: Path) -> None:
    no_tumour = Cohort.from_cases([c.with_(labels=np.where(c.labels == 1, 0, c.labels)) for c in others],
                                  name="synthetic")
    result = _run("fidelity.intensity", make_context, train, holdout, no_tumour, tmp_path, cache_dir)
    assert result.status is Status.OK
    assert "w1_tumour" not in result.metrics and "w1_bone" in result.metrics
    assert result.evidence["regions_missing"] == ["tumour"]
    labels = _values(_run("fidelity.labels", make_context, train, holdout, no_tumour, tmp_path / "l", cache_dir))
    assert labels["ks_tumour_volume"] == 1.0 and "ks_tumour_centroid" not in labels
