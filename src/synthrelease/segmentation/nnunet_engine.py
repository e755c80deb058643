"""``nnunet``: nnU-Net v2, the study's reference engine (GPU; runs on CPU for short checks).

A model folder holds everything of one training, so no two calls share state:
```
<model>/model.json                 engine, config, dataset name, trained model sub-folder, how raw files were made
<model>/nnUNet_raw/Dataset501_synthrelease/   dataset.json, imagesTr/, labelsTr/ (links to the cohorts' files)
<model>/nnUNet_results/...         plans, checkpoint_final.pth (nnU-Net's own layout)
<model>/logs/                      each step's request and nnU-Net's output
```
The raw dataset links to the cohorts' files (hard links, else symbolic links, copies only where neither works); with
several cohorts each case id gets a ``c<k>_`` prefix. nnunetv2 reads its three folders from environment variables
at import time, so every step runs in a child process (``nnunet_driver``) with those variables in the child's
environment only, beside ``nnUNet_extTrainer`` pointing at ``nnunet_trainers/`` (our budget trainer),
``nnUNet_n_proc_DA`` and ``nnUNet_compile=false``. The preprocessed data are deleted after training (prediction reads
only the results folder).

Budget: with the budget trainer (the default) the run is ``ceil(steps / iterations_per_epoch)`` epochs of
``min(steps, iterations_per_epoch)`` iterations; nnU-Net picks patch and batch size from the data (the same for
cohorts on one grid). Any other trainer name (``nnUNetTrainer``: 1000 epochs of 250 iterations) runs its own budget.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
from collections import Counter, deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from synthrelease.data.nnunet import dataset_json, scan_nnunet
from synthrelease.errors import InputError, SegmentationError
from synthrelease.segmentation.base import (
    Progress,
    SegmentationConfig,
    SegmentationEngine,
    new_model_folder,
    read_model_info,
    resolve_device,
    write_model_info,
)
from synthrelease.segmentation.io import image_files

__all__ = ["BUDGET_TRAINER", "DATASET", "NnunetEngine", "export_raw_dataset"]

DATASET_ID = 501
DATASET = f"Dataset{DATASET_ID}_synthrelease"
BUDGET_TRAINER = "nnUNetTrainer_SynthReleaseBudget"
TRAINER_DIR = Path(__file__).with_name("nnunet_trainers")
IMPORT_FAILED = 4  # nnunet_driver's exit code when nnunetv2 cannot be imported
INSTALL = "install nnU-Net v2 into this environment: pip install -c constraints.txt nnunetv2"
_EPOCH = re.compile(r"Epoch (\d+)\s*$")


def _link(src: Path, dst: Path) -> str:
    try:
        os.link(src, dst)
        return "hardlink"
    except OSError:
        pass
    try:
        os.symlink(src.resolve(), dst)
        return "symlink"
    except OSError:
        shutil.copy2(src, dst)
        return "copy"


def export_raw_dataset(cohort_dirs: Sequence[Path], target: Path) -> dict[str, int]:
    """An nnU-Net raw dataset at ``target`` made of the cases of ``cohort_dirs``; returns how many files were
    hard-linked, symlinked or copied."""
    indexes = [scan_nnunet(Path(d)) for d in cohort_dirs]
    if not indexes:
        raise InputError("no training cohort given", fix="pass at least one nnU-Net raw folder")
    first = indexes[0]
    for idx in indexes[1:]:
        if set(idx.schema.labels.items()) != set(first.schema.labels.items()) or \
                idx.channel_names != first.channel_names:
            raise InputError("has other labels or channels than the first training cohort", where=idx.root,
                             fix="train on cohorts of one label schema and channel set")
    ending = ".nii.gz" if first.cases[0].label.name.endswith(".nii.gz") else ".nii"
    (target / "imagesTr").mkdir(parents=True, exist_ok=True)
    (target / "labelsTr").mkdir(parents=True, exist_ok=True)
    ways: Counter[str] = Counter()
    n = 0
    for k, idx in enumerate(indexes):
        prefix = f"c{k}_" if len(indexes) > 1 else ""
        for case in idx.cases:
            if not case.label.name.endswith(ending):
                raise InputError(f"mixes NIfTI endings ({case.label.name} is not {ending})", where=idx.root,
                                 fix="store every cohort as .nii.gz")
            for i, image in enumerate(case.images):
                ways[_link(image, target / "imagesTr" / f"{prefix}{case.case_id}_{i:04d}{ending}")] += 1
            ways[_link(case.label, target / "labelsTr" / f"{prefix}{case.case_id}{ending}")] += 1
            n += 1
    data = dataset_json(name=target.name, schema=first.schema, modality=first.modality,
                        channel_names=first.channel_names, n_cases=n, extra={"file_ending": ending})
    (target / "dataset.json").write_text(json.dumps(data, indent=2) + "\n")
    return dict(ways)


class NnunetEngine(SegmentationEngine):
    name = "nnunet"

    def __init__(self, progress: Progress | None = None, *, python: str | None = None) -> None:
        super().__init__(progress)
        self.python = python or sys.executable  # the interpreter that runs nnunet_driver (it must hold nnunetv2)

    @classmethod
    def unavailable(cls) -> str | None:
        if importlib.util.find_spec("nnunetv2") is None:
            return f"nnunetv2 is not installed; fix: {INSTALL}"
        return None

    def _run(self, model: Path, request: dict[str, Any], env_extra: dict[str, str], total: int = 0) -> None:
        import torch

        step = request["step"]
        logs = model / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        req_path = logs / f"{step}.json"
        req_path.write_text(json.dumps({**request, "threads": torch.get_num_threads()}, indent=2) + "\n")
        env = {**os.environ, "nnUNet_raw": str(model / "nnUNet_raw"),
               "nnUNet_preprocessed": str(model / "nnUNet_preprocessed"),
               "nnUNet_results": str(model / "nnUNet_results"), "nnUNet_extTrainer": str(TRAINER_DIR),
               "nnUNet_compile": "false", **env_extra}
        cmd = [self.python, "-m", "synthrelease.segmentation.nnunet_driver", str(req_path)]
        try:
            proc = subprocess.Popen(cmd, env=env, cwd=model, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True)
        except OSError as exc:
            raise InputError(f"cannot start nnU-Net's driver with {self.python} ({exc.strerror or exc})",
                             fix=f"use a Python that exists and {INSTALL}") from None
        tail: deque[str] = deque(maxlen=30)
        assert proc.stdout is not None
        with (logs / f"{step}.log").open("w") as log:
            for line in proc.stdout:
                log.write(line)
                tail.append(line.rstrip())
                m = _EPOCH.search(line)
                if m and total:
                    self.progress("nnU-Net training epochs", int(m[1]) + 1, total)
        rc = proc.wait()
        last = next((t for t in reversed(tail) if t.strip()), "")
        if rc == IMPORT_FAILED:
            raise InputError(f"nnU-Net cannot run: {last}", where=self.python, fix=INSTALL)
        if rc != 0:
            raise SegmentationError(f"nnU-Net step {step!r} failed (exit {rc}): {last}", where=logs / f"{step}.log",
                                    fix="read the log; check the configuration and trainer names")

    def train(self, cohort_dirs: Sequence[Path], out: Path, config: SegmentationConfig) -> Path:
        reason = self.unavailable()
        if reason:
            raise InputError(f"the nnunet engine cannot run: {reason}")
        model = new_model_folder(Path(out).resolve())
        links = export_raw_dataset(cohort_dirs, model / "nnUNet_raw" / DATASET)
        device = resolve_device(config.device)
        epochs = math.ceil(config.steps / config.iterations_per_epoch)
        n = str(max(1, config.processes))  # the planner sets torch's threads to nnUNet_n_proc_DA: never 0 there
        budget = {"SYNTHRELEASE_NNUNET_EPOCHS": str(epochs),
                  "SYNTHRELEASE_NNUNET_ITERATIONS": str(min(config.steps, config.iterations_per_epoch)),
                  "nnUNet_n_proc_DA": str(config.processes), "nnUNet_def_n_proc": n}
        common = {"dataset_id": DATASET_ID, "configuration": config.configuration, "seed": config.seed,
                  "device": device}
        self._run(model, {"step": "plan", **common, "processes": config.processes},
                  {"nnUNet_n_proc_DA": n, "nnUNet_def_n_proc": n})
        self._run(model, {"step": "train", **common, "trainer": config.trainer}, budget,
                  total=epochs if config.trainer == BUDGET_TRAINER else 0)
        shutil.rmtree(model / "nnUNet_preprocessed", ignore_errors=True)
        folder = Path("nnUNet_results") / DATASET / f"{config.trainer}__nnUNetPlans__{config.configuration}"
        if not (model / folder / "fold_all" / "checkpoint_final.pth").is_file():
            raise SegmentationError("nnU-Net training ended without checkpoint_final.pth", where=model / folder)
        schema = scan_nnunet(model / "nnUNet_raw" / DATASET).schema
        write_model_info(model, self.name, config, dataset=DATASET, model_folder=str(folder), raw_files=links,
                         labels=schema.labels_json(), regions=schema.regions_json())
        return model

    def predict(self, model: Path, cohort_dir: Path, out: Path) -> Path:
        model = Path(model).resolve()
        info = read_model_info(model)
        if info.get("engine") != self.name:
            raise InputError(f"was trained by the {info.get('engine')!r} engine, not {self.name!r}", where=model)
        config = SegmentationConfig.from_dict(info["config"])
        files = image_files(Path(cohort_dir))
        out = Path(out).resolve()
        staging = out / ".nnunet-output"
        staging.mkdir(parents=True, exist_ok=True)
        self._run(model, {"step": "predict", "model_folder": str(model / info["model_folder"]),
                          "input": str(next(iter(files.values()))[0].parent.resolve()), "output": str(staging),
                          "device": resolve_device(config.device), "mirroring": config.mirroring, "seed": config.seed},
                  {"nnUNet_def_n_proc": "1"})
        for case in files:
            found = [staging / f"{case}{e}" for e in (".nii.gz", ".nii") if (staging / f"{case}{e}").is_file()]
            if not found:
                raise SegmentationError(f"nnU-Net wrote no prediction for case {case}", where=staging)
            os.replace(found[0], out / found[0].name)
        shutil.rmtree(staging, ignore_errors=True)
        self.progress("predict segmentation", len(files), len(files))
        return out
