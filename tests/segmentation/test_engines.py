"""Segmentation engines on tiny phantom cohorts (nnU-Net raw folders): the MONAI engine learns, predicts schema
labels on the input grid and is reproducible; scores follow the documented empty-structure conventions; the nnU-Net
engine exports linked raw datasets and says clearly when nnU-Net cannot run (its end-to-end run is in
``test_nnunet_engine.py``)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from synthrelease.data.nifti import read_nifti
from synthrelease.data.nnunet import read_nnunet
from synthrelease.data.schema import BRATS_SCHEMA
from synthrelease.errors import InputError
from synthrelease.runtime import precision
from synthrelease.runtime.precision import cpu_bf16_supported
from synthrelease.segmentation import (
    MonaiEngine,
    NnunetEngine,
    SegmentationConfig,
    create_engine,
    predict_with,
    score_case,
)
from synthrelease.segmentation.nnunet_engine import export_raw_dataset
from synthrelease.segmentation.patches import PatchSampler

TINY_NET = {"features": (8, 16, 32)}


def _mean_dice(pred_dir: Path, truth: Path, structure: str) -> float:
    values = []
    for case in read_nnunet(truth):
        pred, _ = read_nifti(pred_dir / f"{case.case_id}.nii.gz")
        values.append(score_case(case.case_id, pred, case.labels, case.schema, case.geometry.spacing[::-1])
                      .dice[structure])
    return float(np.nanmean(values))


def test_monai_learns_and_writes_schema_labels_on_the_input_grid(cohorts: dict[str, Path], tmp_path: Path) -> None:
    engine = MonaiEngine()
    dice = {}
    for steps in (1, 200):
        model = engine.train([cohorts["train"]], tmp_path / f"m{steps}", SegmentationConfig(steps=steps, **TINY_NET))
        assert json.loads((model / "model.json").read_text())["engine"] == "monai"
        pred = predict_with(model, cohorts["test"], tmp_path / f"p{steps}")
        dice[steps] = _mean_dice(pred, cohorts["test"], "WT")
    assert dice[200] > 0.5 and dice[200] > dice[1] + 0.3, dice  # the whole tumour is learnt in 200 steps
    for case in read_nnunet(cohorts["test"]):
        labels, geometry = read_nifti(tmp_path / "p200" / f"{case.case_id}.nii.gz")
        assert labels.shape == case.shape and geometry.matches(case.geometry)
        assert set(np.unique(labels)) <= set(BRATS_SCHEMA.values)
    assert sorted(p.name for p in (tmp_path / "p200").iterdir()) == sorted(
        f"{c}.nii.gz" for c in read_nnunet(cohorts["test"]).case_ids)


def test_monai_same_seed_same_model_and_no_global_state_changed(cohorts: dict[str, Path], tmp_path: Path) -> None:
    torch_state, np_state = torch.random.get_rng_state(), np.random.get_state()
    engine = MonaiEngine()
    weights = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        model = engine.train([cohorts["train"]], tmp_path / name, SegmentationConfig(steps=6, seed=seed, **TINY_NET))
        weights.append(torch.load(model / "model.pt", weights_only=True))
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])
    with pytest.raises(InputError, match="not an empty folder"):  # a model is never mixed into another
        engine.train([cohorts["train"]], tmp_path / "a", SegmentationConfig(steps=1, **TINY_NET))
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state[1])  # type: ignore[index]


def test_bf16_only_where_the_cpu_runs_it_natively(cohorts: dict[str, Path], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """cpu_bf16 trains and predicts in bf16 on a CPU with native bf16 (recorded in model.json); the default, or a
    CPU without native bf16, keeps fp32."""
    engine, weights, recorded = MonaiEngine(), {}, {}
    assert not SegmentationConfig().cpu_bf16  # off by default: bf16 is not bit-for-bit reproducible everywhere
    for name, flag in (("bf16", True), ("fp32", False)):
        model = engine.train([cohorts["train"]], tmp_path / name, SegmentationConfig(steps=3, cpu_bf16=flag,
                                                                                     **TINY_NET))
        recorded[name] = json.loads((model / "model.json").read_text())["precision"]
        weights[name] = torch.load(model / "model.pt", weights_only=True)
        predict_with(model, cohorts["test"], tmp_path / f"p{name}")
    native = cpu_bf16_supported()
    assert recorded == {"bf16": "bf16" if native else "fp32", "fp32": "fp32"}
    same = all(torch.equal(weights["bf16"][k], weights["fp32"][k]) for k in weights["fp32"])
    assert same != native  # bf16 arithmetic gives other weights; without native bf16 both runs are fp32
    monkeypatch.setattr(precision, "cpu_bf16_supported", lambda: False)
    model = engine.train([cohorts["train"]], tmp_path / "none", SegmentationConfig(steps=3, cpu_bf16=True,
                                                                                     **TINY_NET))
    assert json.loads((model / "model.json").read_text())["precision"] == "fp32"
    none = torch.load(model / "model.pt", weights_only=True)
    assert all(torch.equal(none[k], weights["fp32"][k]) for k in none)


def test_dynunet_and_a_smaller_patch_predict_on_the_input_grid(cohorts: dict[str, Path], tmp_path: Path) -> None:
    config = SegmentationConfig(steps=2, network="dynunet", patch_size=(8, 8, 8), **TINY_NET)
    model = MonaiEngine().train([cohorts["train"]], tmp_path / "m", config)
    pred = MonaiEngine().predict(model, cohorts["test"], tmp_path / "p")  # sliding windows of 8^3 over 16^3
    case = read_nnunet(cohorts["test"])[0]
    labels, _ = read_nifti(pred / f"{case.case_id}.nii.gz")
    assert labels.shape == case.shape and set(np.unique(labels)) <= set(BRATS_SCHEMA.values)


def test_patch_sampler_is_seeded_keeps_foreground_and_pads_small_volumes() -> None:
    image = np.linspace(-1, 1, 10 * 12 * 14, dtype=np.float32).reshape(1, 10, 12, 14)
    classes = np.zeros((10, 12, 14), np.int64)
    classes[1, 2, 3] = 1  # one voxel of class 1, in a corner
    def make(seed: int) -> PatchSampler:
        return PatchSampler([image], [classes], (8, 16, 8), foreground_fraction=1.0, flip=False, seed=seed)
    a, b = make(5).batch(6), make(5).batch(6)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    x, y = a
    assert x.shape == (6, 1, 8, 16, 8) and y.shape == (6, 1, 8, 16, 8)
    assert all(int((y[i] == 1).sum()) == 1 for i in range(6))  # every patch holds the foreground voxel
    assert float(x.min()) == -1.0  # the padded rows (12 -> 16 along y) take the image minimum


def test_scores_follow_the_empty_structure_conventions_and_spacing() -> None:
    truth = np.zeros((12, 12, 12), np.uint8)
    truth[3:7, 3:7, 3:7] = 2  # SNFH only
    pred = np.zeros_like(truth)
    pred[4:8, 3:7, 3:7] = 2  # the same cube moved by one voxel along z
    pred[0, 0, 0] = 3  # a false ET voxel; NCR absent from both
    s = score_case("c", pred, truth, BRATS_SCHEMA, spacing_zyx=(2.0, 1.0, 1.0))
    assert math.isnan(s.dice["NCR"]) and math.isnan(s.hd95["NCR"])  # absent from both: undefined, not 1
    assert s.dice["ET"] == 0.0 and math.isnan(s.hd95["ET"])  # predicted but absent: Dice 0, HD95 missing
    assert s.dice["SNFH"] == pytest.approx(0.75)
    assert s.hd95["SNFH"] == pytest.approx(2.0)  # one voxel along z = 2 mm
    assert s.dice["WT"] < s.dice["SNFH"] and s.counts["SNFH"] == (48, 64, 64)


def test_nnunet_raw_export_links_files_and_writes_a_valid_dataset_json(cohorts: dict[str, Path],
                                                                       tmp_path: Path) -> None:
    target = tmp_path / "Dataset501_x"
    ways = export_raw_dataset([cohorts["train"], cohorts["test"]], target)
    assert sum(ways.values()) == 12 * 5 and "copy" not in ways  # 4 channels + 1 label map per case, linked
    data = json.loads((target / "dataset.json").read_text())
    assert data["numTraining"] == 12 and data["file_ending"] == ".nii.gz" and "modality" not in data
    assert data["channel_names"] == {"0": "t1c", "1": "t1n", "2": "t2w", "3": "t2f"}
    assert data["labels"] == {"background": 0, "NCR": 1, "SNFH": 2, "ET": 3}
    cohort = read_nnunet(target)  # the layout reads back, ids prefixed per source cohort
    assert len(cohort) == 12 and {c[:3] for c in cohort.case_ids} == {"c0_", "c1_"}
    first = read_nnunet(cohorts["train"]).case_ids[0]
    src = cohorts["train"] / "imagesTr" / f"{first}_0000.nii.gz"
    assert os.path.samefile(src, target / "imagesTr" / f"c0_{first}_0000.nii.gz")


def test_nnunet_engine_that_cannot_run_is_a_clear_input_error(cohorts: dict[str, Path], tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    config = SegmentationConfig(steps=1, device="cpu")
    # nnunetv2 importable here but broken in the interpreter that runs nnU-Net
    fake = tmp_path / "site" / "nnunetv2"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('a dependency of nnunetv2 is missing')\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(fake.parent), os.environ.get("PYTHONPATH", "")]))
    with pytest.raises(InputError, match="nnU-Net cannot run: nnunetv2 cannot be imported: a dependency") as exc:
        NnunetEngine().train([cohorts["train"]], tmp_path / "m", config)
    assert "pip install" in str(exc.value)
    with pytest.raises(InputError, match="cannot start nnU-Net's driver"):
        NnunetEngine(python=str(tmp_path / "no-python")).train([cohorts["train"]], tmp_path / "m2", config)
    # not installed at all: refused before any work
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "nnunetv2" else real_find_spec(name, *a))
    with pytest.raises(InputError, match="nnunetv2 is not installed; fix: install nnU-Net"):
        create_engine("nnunet")
    with pytest.raises(InputError, match="unknown segmentation engine"):
        create_engine("nnunet2")
