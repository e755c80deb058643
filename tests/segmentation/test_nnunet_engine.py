"""The nnU-Net engine end to end on phantoms, on CPU: plan and preprocess, a two-iteration run of the shipped budget
trainer (found through nnUNet_extTrainer in the child process only), prediction on the input grid.

Slow: about a minute on 2 idle CPU cores, most of it nnU-Net's planning (its fingerprint samples 10^8 voxels
whatever the data size) and three interpreter starts; more than the default run's budget allows.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from synthrelease.data.nifti import read_nifti
from synthrelease.data.nnunet import read_nnunet
from synthrelease.data.schema import BRATS_SCHEMA
from synthrelease.segmentation import NnunetEngine, SegmentationConfig, predict_with
from synthrelease.segmentation.nnunet_engine import BUDGET_TRAINER, DATASET

pytestmark = pytest.mark.slow


def test_nnunet_engine_trains_and_predicts_on_cpu(cohorts: dict[str, Path], tmp_path: Path) -> None:
    before = {k: os.environ.get(k) for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    seen = []
    engine = NnunetEngine(progress=lambda task, done, total: seen.append((task, done, total)))
    config = SegmentationConfig(steps=2, iterations_per_epoch=2, device="cpu", processes=0, mirroring=False)
    model = engine.train([cohorts["train"]], tmp_path / "model", config)
    info = json.loads((model / "model.json").read_text())
    assert info["engine"] == "nnunet" and info["model_folder"].endswith(f"{BUDGET_TRAINER}__nnUNetPlans__3d_fullres")
    assert (model / info["model_folder"] / "fold_all" / "checkpoint_final.pth").is_file()
    assert info["raw_files"] == {"hardlink": 8 * 5}  # linked, not copied
    assert not (model / "nnUNet_preprocessed").exists()  # removed after training
    assert "Epoch 0" in (model / "logs" / "train.log").read_text()  # one epoch of our budget trainer
    assert ("nnU-Net training epochs", 1, 1) in seen
    assert {k: os.environ.get(k) for k in before} == before  # the paths went to the child only

    pred = predict_with(model, cohorts["test"], tmp_path / "pred")
    test = read_nnunet(cohorts["test"])
    assert sorted(p.name for p in pred.iterdir()) == sorted(f"{c}.nii.gz" for c in test.case_ids)
    for case in test:
        labels, geometry = read_nifti(pred / f"{case.case_id}.nii.gz")
        assert labels.shape == case.shape and geometry.matches(case.geometry)
        assert set(np.unique(labels)) <= set(BRATS_SCHEMA.values)
    assert (model / "nnUNet_raw" / DATASET / "dataset.json").is_file()
