"""The ``SegmentationEngine`` interface that the utility check trains and tests through, and its configuration.

An engine trains a segmentation model on one or more cohorts (nnU-Net raw folders, the format every synthrelease
cohort has on disk) and predicts label maps for another. Engines read images as they are on disk: callers that
mix sources (real cases in the model range, synthetic sets in HU) bring every cohort to one scale first, as the
utility check does. A model is a folder holding ``model.json`` (which engine made it, with which configuration),
so ``predict`` needs nothing but the folder.

The training budget is engine-neutral: ``steps`` optimisation steps of ``batch_size`` patches. The MONAI engine
runs exactly that; the nnU-Net engine maps it onto epochs x iterations of its budget trainer (nnU-Net chooses its
own patch and batch size from the data, the same for every cohort on one grid).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

from synthrelease import __version__
from synthrelease.errors import InputError

__all__ = ["MODEL_FILE", "NETWORKS", "Progress", "SegmentationConfig", "SegmentationEngine", "new_model_folder",
           "read_model_info", "resolve_device", "write_model_info"]

MODEL_FILE = "model.json"
NETWORKS = ("dynunet", "unet")  # the MONAI engine's networks; the first is the default
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class SegmentationConfig:
    """How to train. Every random choice (weights, patches, nnU-Net's sampling) follows ``seed``."""

    steps: int = 500  # optimisation steps: the training budget
    batch_size: int = 2  # patches per step
    patch_size: tuple[int, int, int] | None = None  # (z, y, x); None: the grid, capped at 64 per axis (MONAI)
    seed: int = 0
    device: str = "auto"  # auto (CUDA when present, else CPU) | cpu | cuda
    # MONAI engine
    network: str = "dynunet"  # dynunet (nnU-Net-like DynUNet) | unet (MONAI UNet, residual units; downsamples at
    # its first layer: cheaper, but on 32^3 phantom CT it finds few holdout tumours, benchmarks/RESULTS.md)
    features: tuple[int, ...] = (16, 32, 64, 128)  # channels per resolution level
    learning_rate: float = 2e-3
    foreground_fraction: float = 0.67  # share of patches centred on a voxel of a random foreground class
    flip: bool = True  # random left-right flips of training patches
    augment: bool = False  # random rotation, scaling, gain and noise of training patches (``patches.augment_batch``)
    overlap: float = 0.25  # sliding-window overlap at inference
    cpu_bf16: bool = False  # bf16 autocast (training, inference) on a CPU with native bf16 (runtime.precision)
    # nnU-Net engine
    configuration: str = "3d_fullres"
    trainer: str = "nnUNetTrainer_SynthReleaseBudget"  # any nnU-Net trainer class name; this one runs ``steps``
    iterations_per_epoch: int = 50  # budget trainer: epochs = ceil(steps / iterations_per_epoch)
    processes: int = 1  # nnU-Net preprocessing / augmentation workers (0: augment in the main process)
    mirroring: bool = True  # nnU-Net test-time mirroring (its default; 8 flips: 8x the inference cost on CPU)

    def __post_init__(self) -> None:
        if self.patch_size is not None:
            object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))
        object.__setattr__(self, "features", tuple(int(f) for f in self.features))
        self.validate()

    def validate(self) -> None:
        problems = []
        if self.steps < 1 or self.batch_size < 1 or self.iterations_per_epoch < 1:
            problems.append("steps, batch_size and iterations_per_epoch must be at least 1")
        if self.patch_size is not None and (len(self.patch_size) != 3 or min(self.patch_size) < 4):
            problems.append(f"patch_size {self.patch_size} must be three sizes of at least 4 voxels")
        if not 0.0 <= self.foreground_fraction <= 1.0 or not 0.0 <= self.overlap < 1.0:
            problems.append("foreground_fraction must lie in [0, 1] and overlap in [0, 1)")
        if self.network not in NETWORKS:
            problems.append(f"network {self.network!r} is not one of {', '.join(NETWORKS)}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            problems.append(f"device {self.device!r} is not auto, cpu or cuda")
        if len(self.features) < 2 or self.learning_rate <= 0 or self.processes < 0:
            problems.append("features needs at least two levels, learning_rate > 0 and processes >= 0")
        if problems:
            raise InputError(f"segmentation config: {'; '.join(problems)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SegmentationConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"unknown segmentation config keys {unknown}", fix=f"use {sorted(known)}")
        data = dict(d)
        for key in ("patch_size", "features"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        return cls(**data)


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; a CUDA device without a GPU is an input error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {device!r} asked for, but no CUDA GPU is visible", fix="use --device cpu")
    return device


def new_model_folder(out: Path) -> Path:
    """``out`` created empty (a folder that already holds files is refused: a model is never mixed with another)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError("already exists and is not an empty folder", where=out, fix="train into a new folder")
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_model_info(folder: Path, engine: str, config: SegmentationConfig, **extra: Any) -> None:
    info = {"engine": engine, "synthrelease_version": __version__, "config": config.to_dict(), **extra}
    (Path(folder) / MODEL_FILE).write_text(json.dumps(info, indent=2) + "\n")


def read_model_info(folder: Path) -> dict[str, Any]:
    path = Path(folder) / MODEL_FILE
    if not path.is_file():
        raise InputError("is not a segmentation model folder (no model.json)", where=folder,
                         fix="pass the folder that train() returned")
    return dict(json.loads(path.read_text()))


class SegmentationEngine(ABC):
    """Train on cohorts, predict label maps. ``__init__`` takes only options (e.g. a progress callback)."""

    name: ClassVar[str]

    def __init__(self, progress: Progress | None = None) -> None:
        self._progress = progress

    def progress(self, task: str, done: int, total: int) -> None:
        if self._progress:
            self._progress(task, done, total)

    @classmethod
    def unavailable(cls) -> str | None:
        """Why this engine cannot run here (with the fix), or None when it can."""
        return None

    @abstractmethod
    def train(self, cohort_dirs: Sequence[Path], out: Path, config: SegmentationConfig) -> Path:
        """Train on every case of ``cohort_dirs`` (nnU-Net raw folders, one label schema and channel set) into the
        new folder ``out``; return ``out`` (the model)."""

    @abstractmethod
    def predict(self, model: Path, cohort_dir: Path, out: Path) -> Path:
        """Write ``out/<case>.nii.gz`` for every case of ``cohort_dir`` (its images; labels, if any, are not read):
        label maps on each input image's grid with schema values only. Return ``out``."""
