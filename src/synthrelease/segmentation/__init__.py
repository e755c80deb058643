"""Segmentation engines for the utility check: one interface, ``train(cohort_dirs, out, config)`` and
``predict(model, cohort_dir, out)``, over nnU-Net raw folders.

- ``monai``: the built-in MONAI U-Net on patches (CPU-capable; the default when no GPU is present).
- ``nnunet``: nnU-Net v2 (the field's reference; GPU), run in a child process with its folders passed per call.

``predict_with`` reads which engine made a model from its ``model.json``.
"""

from __future__ import annotations

from pathlib import Path

from synthrelease.errors import InputError
from synthrelease.segmentation.base import (
    Progress,
    SegmentationConfig,
    SegmentationEngine,
    read_model_info,
    resolve_device,
)
from synthrelease.segmentation.evaluate import CaseScores, pooled_dice, score_case, structures
from synthrelease.segmentation.monai_engine import MonaiEngine
from synthrelease.segmentation.nnunet_engine import NnunetEngine

__all__ = ["ENGINES", "CaseScores", "MonaiEngine", "NnunetEngine", "SegmentationConfig", "SegmentationEngine",
           "create_engine", "default_engine_name", "pooled_dice", "predict_with", "resolve_device", "score_case",
           "structures"]

ENGINES: dict[str, type[SegmentationEngine]] = {"monai": MonaiEngine, "nnunet": NnunetEngine}


def default_engine_name() -> str:
    """``nnunet`` when a CUDA GPU is visible and nnU-Net can run, else ``monai``."""
    import torch

    return "nnunet" if torch.cuda.is_available() and NnunetEngine.unavailable() is None else "monai"


def create_engine(name: str = "auto", progress: Progress | None = None) -> SegmentationEngine:
    """An engine by name (``auto``: ``default_engine_name``); one that cannot run here raises ``InputError``."""
    key = default_engine_name() if name == "auto" else name
    if key not in ENGINES:
        raise InputError(f"unknown segmentation engine {name!r}", fix=f"use auto or one of {', '.join(ENGINES)}")
    cls = ENGINES[key]
    reason = cls.unavailable()
    if reason:
        raise InputError(f"the {key} segmentation engine cannot run: {reason}")
    return cls(progress)


def predict_with(model: Path, cohort_dir: Path, out: Path, progress: Progress | None = None) -> Path:
    """Predict with a model folder of any engine (named in its ``model.json``)."""
    return create_engine(str(read_model_info(model)["engine"]), progress).predict(model, cohort_dir, out)
