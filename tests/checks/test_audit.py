"""The audit runner on folders: report.json contract, metadata findings, bad input, atomic output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from synthrelease.audit import audit_directories, set_sha256
from synthrelease.checks import AuditSettings
from synthrelease.checks.embedding import EmbeddingConfig
from synthrelease.data.cohort import Cohort
from synthrelease.data.nnunet import write_nnunet
from synthrelease.errors import InputError

FAST = AuditSettings(embedding=EmbeddingConfig(size=16, steps=5, batch=8), n_boot=50, utility_steps=3,
                     utility_engine="monai")


def _write(cohort: Cohort, root: Path, n: int | None = None) -> Path:
    cases = list(cohort)[:n]
    first = cases[0]
    write_nnunet(cases, root, name=root.name, schema=first.schema, modality=first.modality,
                 channel_names=first.channel_names)
    return root


@pytest.fixture(scope="module")
def folders(train: Cohort, holdout: Cohort, others: Cohort,
            tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("folders")
    return {"train": _write(train, base / "train", 10), "holdout": _write(holdout, base / "holdout", 10),
            "synthetic": _write(others, base / "synthetic", 6)}


def test_report_contract(folders: dict[str, Path], tmp_path: Path) -> None:
    out = audit_directories(folders["train"], folders["holdout"], folders["synthetic"], tmp_path / "audit",
                            settings=FAST)
    report = json.loads((tmp_path / "audit" / "report.json").read_text())
    assert report == json.loads(json.dumps(out.report))
    assert report["schema_version"] == 1
    assert report["synthetic_set"]["sha256"] == set_sha256(folders["synthetic"])
    for key in ("privacy.memorization.flagged_fraction", "privacy.memorization.tau",
                "privacy.mask_memorization.flagged_fraction", "privacy.dcr.overfitting_p", "privacy.mia.auc",
                "privacy.mia.auc_ci_high", "privacy.mia.tpr_at_min_fpr", "privacy.memorization.n_copies",
                "privacy.mask_memorization.n_copies", "privacy.metadata.n_findings"):
        assert isinstance(report["metrics"][key], float), key
    assert report["metrics"]["privacy.metadata.n_findings"] == 0
    assert set(report["checks"]) >= {"privacy.memorization", "privacy.metadata"}
    assert not list(tmp_path.glob(".audit.partial-*"))


def test_planted_identifier_in_header_or_name_is_found(folders: dict[str, Path], train: Cohort,
                                                       tmp_path: Path) -> None:
    import shutil

    import nibabel as nib

    syn = tmp_path / "synthetic"
    shutil.copytree(folders["synthetic"], syn)
    real_id = train.case_ids[0]
    img_path = next((syn / "imagesTr").glob("*.nii.gz"))
    img = nib.load(img_path)
    img.header["descrip"] = f"source {real_id}".encode()
    nib.save(nib.Nifti1Image(img.get_fdata().astype("float32"), img.affine, img.header), img_path)
    out = audit_directories(folders["train"], folders["holdout"], syn, tmp_path / "a1", only=["privacy.metadata"],
                            settings=FAST)
    assert out.report["metrics"]["privacy.metadata.n_findings"] >= 1
    assert real_id not in json.dumps(out.report)  # the report names the file, never the identifier
    label = next((syn / "labelsTr").glob("*.nii.gz"))
    case = label.name[: -len(".nii.gz")]
    label.rename(label.with_name(f"{case}-{real_id}.nii.gz"))
    for image in (syn / "imagesTr").glob(f"{case}_*.nii.gz"):
        image.rename(image.with_name(image.name.replace(case, f"{case}-{real_id}")))
    out = audit_directories(folders["train"], folders["holdout"], syn, tmp_path / "a2", only=["privacy.metadata"],
                            settings=FAST)
    assert out.report["metrics"]["privacy.metadata.n_findings"] >= 3


def test_copied_real_volume_is_a_metadata_finding(folders: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    syn = tmp_path / "synthetic"
    shutil.copytree(folders["synthetic"], syn)
    real_label = next((folders["train"] / "labelsTr").glob("*.nii.gz"))
    real_case = real_label.name[: -len(".nii.gz")]
    shutil.copy(real_label, syn / "labelsTr" / "syn9999.nii.gz")
    shutil.copy(folders["train"] / "imagesTr" / f"{real_case}_0000.nii.gz", syn / "imagesTr" / "syn9999_0000.nii.gz")
    out = audit_directories(folders["train"], folders["holdout"], syn, tmp_path / "a", only=["privacy.metadata"],
                            settings=FAST)
    kinds = [f["kind"] for f in out.report["checks"]["privacy.metadata"]["evidence"]["findings"]]
    assert "volume identical to a real case" in kinds


def test_mismatched_grids_are_bad_input_and_nothing_is_written(folders: dict[str, Path], phantoms: list,
                                                               tmp_path: Path) -> None:
    from synthrelease.data.phantoms import make_ct_phantom
    from synthrelease.data.preprocess import PreprocessConfig, preprocess_case

    cfg = PreprocessConfig.for_modality("ct", spacing=(10.0, 10.0, 10.0), shape=(20, 20, 20))
    other = Cohort.from_cases([preprocess_case(make_ct_phantom(i, shape=20, seed=3), cfg)[0] for i in range(2)])
    syn = _write(other, tmp_path / "synthetic")
    with pytest.raises(InputError, match="different grids"):
        audit_directories(folders["train"], folders["holdout"], syn, tmp_path / "audit", settings=FAST)
    assert not (tmp_path / "audit").exists() and not list(tmp_path.glob(".audit*"))


def test_train_and_holdout_must_not_overlap(folders: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(InputError, match="share case ids"):
        audit_directories(folders["train"], folders["train"], folders["synthetic"], tmp_path / "audit")


def test_fail_fast_gives_the_full_audits_verdict_and_skips_what_is_left(copycat: Cohort, holdout: Cohort,
                                                                         train: Cohort, folders: dict[str, Path],
                                                                         tmp_path: Path) -> None:
    syn = _write(copycat, tmp_path / "copies", 8)
    full = audit_directories(folders["train"], folders["holdout"], syn, tmp_path / "full", settings=FAST)
    fast = audit_directories(folders["train"], folders["holdout"], syn, tmp_path / "fast", settings=FAST,
                             fail_fast=True)
    assert full.report["verdict"] == fast.report["verdict"] == "fail"
    checks = fast.report["checks"]
    order = list(checks)
    assert order.index("privacy.memorization") < order.index("integrity.cohort") < order.index("utility.segmentation")
    ran = [n for n, c in checks.items() if c["status"] == "ok"]
    skipped = [n for n, c in checks.items() if "--fail-fast" in (c.get("reason") or "")]
    assert ran and skipped and set(ran).isdisjoint(skipped)
    # the privacy family (run first) decides it and runs whole; nothing ran after the stop
    assert {n for n in order if n.startswith("privacy.")} <= set(ran) and all(n.startswith("privacy.") for n in ran)
    assert "utility.segmentation" in skipped and "integrity.cohort" in skipped
    assert order.index(ran[-1]) < order.index(skipped[0])
    # the check that decided it, and why, are named
    assert "the verdict is already fail" in checks["utility.segmentation"]["reason"]
    # what ran measured what the full audit measured
    for name in ran:
        for key, value in fast.report["metrics"].items():
            if key.startswith(name + "."):
                assert full.report["metrics"][key] == value, key
    # rules on checks that were not run are not judged: not passed (the verdict stays fail), not findings either
    rules = {r["metric"]: r for r in fast.report["rules"]}
    assert rules["utility.segmentation.dice_ratio"]["judged"] is False
    assert rules["utility.segmentation.dice_ratio"]["passed"] is False
    assert "not judged" in rules["utility.segmentation.dice_ratio"]["reason"]
    assert rules["privacy.memorization.flagged_p_value"]["judged"] is True
    assert rules["privacy.memorization.n_copies"]["judged"] is True
    gate = fast.report["gate"]
    assert "utility.segmentation.dice_ratio" in gate["not_judged"]
    assert "utility.segmentation.dice_ratio" not in gate["failed"] + gate["warned"]
    assert set(gate["failed"]) == {m for m in full.report["gate"]["failed"] if m.startswith("privacy.")}
    assert gate["n_failed"] + gate["n_warned"] + gate["n_not_judged"] <= gate["n_rules"]
    assert full.report["gate"]["n_not_judged"] == 0 and all(r["judged"] for r in full.report["rules"])
    summary = (fast.path / "summary.md").read_text()
    assert "### Rules not judged" in summary and "`utility.segmentation.dice_ratio`" in summary.split(
        "### Rules not judged")[1]
    assert "not judged" in (fast.path / "junit.xml").read_text()
    assert "not judged (--fail-fast)" in (fast.path / "report.html").read_text()
    # without a policy there is no verdict to decide: every check runs
    none = audit_directories(folders["train"], folders["holdout"], syn, tmp_path / "none", settings=FAST,
                             fail_fast=True, policy=None, only=["privacy.memorization", "integrity"])
    assert all(c["status"] == "ok" for c in none.report["checks"].values())


def test_decided_fail_judges_only_rules_whose_checks_ran(tmp_path: Path) -> None:
    from synthrelease.audit import decided_fail
    from synthrelease.checks.base import CheckResult, Direction, Metric, Status
    from synthrelease.policy import load_policy

    (tmp_path / "p.toml").write_text(
        'name = "p"\ndescription = "t"\nrelease = true\n'
        '[[rule]]\nmetric = "privacy.memorization.flagged_fraction"\nop = "<="\n'
        'threshold_metric = "privacy.memorization.chance_rate"\nmargin = 0.05\nseverity = "fail"\nwhy = "a"\n'
        '[[rule]]\nmetric = "fidelity.labels.ks_tumour_volume"\nop = "<="\n'
        'threshold_metric = "privacy.mia.auc"\nseverity = "fail"\nwhy = "b"\n'
        '[[rule]]\nmetric = "utility.segmentation.dice_ratio"\nop = ">="\nthreshold = 0.7\n'
        'severity = "warn"\nwhy = "c"\n')
    policy = load_policy(tmp_path / "p.toml")

    def mem(flagged: float) -> CheckResult:
        return CheckResult("privacy.memorization", Status.OK, {"flagged_fraction": Metric(flagged, Direction.LOWER),
                                                                "chance_rate": Metric(0.05, Direction.INFO)})

    assert decided_fail(policy, [mem(0.1)]) is None  # within chance + 0.05; the other checks have not run
    why = decided_fail(policy, [mem(0.5)])
    assert why is not None and "privacy.memorization.flagged_fraction" in why and "0.5 is not <= 0.1" in why
    # a rule whose threshold comes from a check still to run is not judged yet
    ks = CheckResult("fidelity.labels", Status.OK, {"ks_tumour_volume": Metric(0.9, Direction.LOWER)})
    assert decided_fail(policy, [mem(0.0), ks]) is None
    mia = CheckResult("privacy.mia", Status.OK, {"auc": Metric(0.5, Direction.LOWER)})
    assert decided_fail(policy, [mem(0.0), ks, mia]) is not None
    # a warn rule never decides; a check that ran but errored does (its fail rule's metric is missing)
    low = CheckResult("utility.segmentation", Status.OK, {"dice_ratio": Metric(0.1, Direction.HIGHER)})
    assert decided_fail(policy, [mem(0.0), low]) is None
    broken = CheckResult("privacy.memorization", Status.ERROR, reason="RuntimeError: boom")
    assert decided_fail(policy, [broken]) is not None
