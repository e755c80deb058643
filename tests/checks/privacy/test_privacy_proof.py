"""The privacy family on phantom control sets: it must flag copies and must not flag unseen real patients."""

from __future__ import annotations

import sys
import tempfile
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from synthrelease.checks import AuditContext, CheckResult, Status, select_checks
from synthrelease.checks.privacy import mia as mia_module
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
    mask = copycat_results["privacy.mask_memorization"].metrics
    assert mask["flagged_fraction"].value >= 0.95
    for m in (mem.metrics, mask):  # far beyond chance, and the bound says most cases are copies
        assert m["flagged_p_value"].value < 1e-6
        assert m["flagged_fraction"].ci_low is not None and m["flagged_fraction"].ci_low > 0.8
    dcr = copycat_results["privacy.dcr"]
    p = dcr.metrics["overfitting_p"]
    assert p.value > 0.9 and p.ci_low is not None and p.ci_low > 0.8
    assert "fresh equal-size train and holdout subsamples" in dcr.evidence["interval"]


def test_copycat_membership_is_inferred(copycat_results: dict[str, CheckResult]) -> None:
    mia = copycat_results["privacy.mia"]
    auc = mia.metrics["auc"]
    assert auc.value > 0.9 and auc.ci_low is not None and auc.ci_low > 0.8
    assert mia.metrics["max_auc_p_value"].value < 0.002  # no relabelling of 1000 reaches it
    # the calibrated attacks see the copies too: a member's copy is closer than any patient of its reference half
    for space in ("pixel", "mask"):
        assert mia.metrics[f"auc_gan_leaks_{space}_calibrated"].value > 0.9, space
    # 30 non-members support no TPR at 1% FPR: the lowest FPR they support is 1/30, where most members are caught
    assert "tpr_at_1pct_fpr" not in mia.metrics and "tpr_at_0_1pct_fpr" not in mia.metrics
    assert mia.metrics["min_reportable_fpr"].value == pytest.approx(1 / 30)
    assert mia.metrics["tpr_at_min_fpr"].value > 0.5 and mia.metrics["tpr_at_min_fpr_p_value"].value < 0.01
    assert mia.metrics["tpr_excess_at_min_fpr"].value == pytest.approx(mia.metrics["tpr_at_min_fpr"].value - 1 / 30)


def test_copycat_faces_are_reidentified(copycat_results: dict[str, CheckResult]) -> None:
    reid = copycat_results["privacy.reidentification"]
    assert reid.status is Status.OK, reid.reason
    assert reid.metrics["rank1_rate"].value > reid.metrics["baseline_rate"].value + 0.3
    assert reid.metrics["excess_p_value"].value < 0.01


def test_unseen_real_patients_are_not_flagged(others_results: dict[str, CheckResult]) -> None:
    for name in ("privacy.memorization", "privacy.mask_memorization"):
        m = others_results[name].metrics
        assert m["flagged_fraction"].value <= 0.05 and m["flagged_p_value"].value >= 0.01, name
    mia = others_results["privacy.mia"].metrics
    assert mia["max_auc_p_value"].value >= 0.01 and mia["tpr_at_min_fpr_p_value"].value >= 0.01
    # judged with the others (a holdout patient calibrated against itself would make this set a leak)
    assert {f"auc_gan_leaks_{s}_calibrated" for s in ("pixel", "mask")} <= set(mia)
    reid = others_results["privacy.reidentification"].metrics
    assert reid["excess_p_value"].value >= 0.01
    dcr = others_results["privacy.dcr"].metrics["overfitting_p"]
    assert dcr.ci_low is not None and dcr.ci_high is not None and dcr.ci_low <= 0.5 <= dcr.ci_high


def test_training_masks_are_flagged(train: Cohort, holdout: Cohort, train_masks: Cohort, tmp_path: Path,
                                    cache_dir: Path, make_context: Callable[..., AuditContext]) -> None:
    ctx = make_context(train, holdout, train_masks, tmp_path, cache_dir)
    (mask,) = select_checks(["privacy.mask_memorization"])
    (image,) = select_checks(["privacy.memorization"])
    masks, images = mask.run(ctx).metrics, image.run(ctx).metrics
    assert masks["flagged_fraction"].value >= 0.95 and masks["flagged_p_value"].value < 0.01
    assert images["flagged_fraction"].value <= 0.05 and images["flagged_p_value"].value >= 0.01  # new patients


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
    assert result.metrics["max_auc_p_value"].value < 0.01


def test_same_seed_same_metrics(train: Cohort, holdout: Cohort, others: Cohort, tmp_path: Path,
                                others_results: dict[str, CheckResult],
                                make_context: Callable[..., AuditContext]) -> None:
    """A fresh context (fresh cache: the embedding is retrained) reproduces the metrics exactly."""
    ctx = make_context(train, holdout, others, tmp_path, tmp_path / "cache2")
    for check in select_checks(["privacy.memorization,privacy.mia"]):
        assert check.run(ctx).flat_metrics() == others_results[check.name].flat_metrics(), check.name


def test_nothing_is_written_outside_the_output_and_cache_folders(
        train: Cohort, holdout: Cohort, others: Cohort, tmp_path: Path, make_context: Callable[..., AuditContext],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The home, temp and XDG folders point at empty folders during a whole privacy audit with a fresh cache (the
    embedding is trained and saved, figures drawn): they stay empty while the cache and output folders fill."""
    # libraries' own import-time caches are made first, as any earlier import in this process would have: the font
    # list matplotlib caches, the empty torchinductor_<user> folder that importing torch._dynamo (an optimizer step)
    # makes in the temp folder. Neither holds anything of the audit's data.
    import matplotlib.font_manager  # noqa: F401
    import torch._dynamo  # noqa: F401

    watched = {name: tmp_path / name for name in ("home", "tmp", "xdg_cache", "xdg_config", "xdg_data")}
    for folder in watched.values():
        folder.mkdir()
    for var, name in (("HOME", "home"), ("TMPDIR", "tmp"), ("TEMP", "tmp"), ("TMP", "tmp"),
                      ("XDG_CACHE_HOME", "xdg_cache"), ("XDG_CONFIG_HOME", "xdg_config"),
                      ("XDG_DATA_HOME", "xdg_data")):
        monkeypatch.setenv(var, str(watched[name]))
    for var in ("TORCH_HOME", "MPLCONFIGDIR"):  # their defaults lie under HOME / XDG
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(tempfile, "tempdir", None)  # tempfile reads TMPDIR again
    run = tmp_path / "run"
    results = _run(make_context(train, holdout, others, run, run / "cache"))
    assert all(r.status is not Status.ERROR for r in results.values())
    assert list((run / "cache").rglob("*.pt")) and list((run / "audit").rglob("*.png"))
    for name, folder in watched.items():
        assert not list(folder.rglob("*")), f"the audit wrote into the {name} folder"


class _Cohorts:
    """As much of an AuditContext as ``extra_attack_scores`` reads: 4 real cases."""

    def n(self, which: str) -> int:
        return 4


def test_whitebox_hook_tolerates_only_its_own_absence(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    monkeypatch.setattr(mia_module.importlib, "import_module", missing)
    assert mia_module.extra_attack_scores(_Cohorts()) == {}  # type: ignore[arg-type]

    def broken(name: str) -> None:  # the module exists but needs a package that is not installed
        raise ModuleNotFoundError("No module named 'not_installed'", name="not_installed")

    monkeypatch.setattr(mia_module.importlib, "import_module", broken)
    with pytest.raises(ModuleNotFoundError, match="not_installed"):
        mia_module.extra_attack_scores(_Cohorts())  # type: ignore[arg-type]


def test_whitebox_scores_of_the_wrong_shape_are_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType(mia_module.WHITEBOX_MODULE)
    fake.extra_attack_scores = lambda ctx: {"loss": np.zeros(3)}  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, mia_module.WHITEBOX_MODULE, fake)
    with pytest.raises(ValueError, match="expected 4 finite scores"):
        mia_module.extra_attack_scores(_Cohorts())  # type: ignore[arg-type]


def test_whitebox_attacks_are_judged_with_the_others(train: Cohort, holdout: Cohort, others: Cohort, tmp_path: Path,
                                                     cache_dir: Path, make_context: Callable[..., AuditContext],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Unseen patients leave the black-box attacks blind; a white-box score that sees the members (as a model's
    per-case loss would) becomes the strongest attack, and the joint statistics follow it."""
    n_real = len(train) + len(holdout)
    fake = types.ModuleType(mia_module.WHITEBOX_MODULE)
    fake.extra_attack_scores = lambda ctx: {  # type: ignore[attr-defined]
        "whitebox_loss": (np.arange(n_real) < len(train)) + 0.1 * np.random.default_rng(0).standard_normal(n_real)}
    monkeypatch.setitem(sys.modules, mia_module.WHITEBOX_MODULE, fake)
    (mia,) = select_checks(["privacy.mia"])
    result = mia.run(make_context(train, holdout, others, tmp_path, cache_dir))
    assert result.status is Status.OK, result.reason
    assert result.evidence["whitebox_attacks"] == ["whitebox_loss"]
    assert result.evidence["strongest_attack"] == "whitebox_loss"
    assert result.metrics["auc"].value == result.metrics["auc_whitebox_loss"].value > 0.99
    assert result.metrics["max_auc_p_value"].value < 0.002
