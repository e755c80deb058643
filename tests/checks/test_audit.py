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
                "privacy.mia.auc_ci_high", "privacy.mia.tpr_at_1pct_fpr", "privacy.metadata.n_findings"):
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
