"""Segmentation utility at study scale on a GPU: both engines trained and tested on phantom CT at 128^3.

Run on a CUDA machine: ``python benchmarks/gpu_utility.py [--size 128] [--train 24] [--test 8] [--steps 300]
[--engines monai nnunet] [--budget 480] [--out DIR]`` (RESULTS.md: ``--steps 3000 --engines monai``, and
``--steps 1000`` at sizes 128 and 64). Phantom head-and-neck CT patients are preprocessed as ingest does (soft
window to [-1, 1]) and written as nnU-Net raw folders; each engine trains for ``--steps``
optimisation steps (nnU-Net: the shipped budget trainer, ``3d_fullres``) and predicts the test cases. Printed (and
written as JSON): seconds to train and to predict, seconds per step, peak GPU memory, tumour and bone Dice. An
engine whose turn would pass the time budget is skipped.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthrelease.data.nnunet import read_nnunet, write_nnunet
from synthrelease.data.phantoms import make_ct_phantom
from synthrelease.data.preprocess import PreprocessConfig, preprocess_case
from synthrelease.data.schema import CT_HEAD_NECK_SCHEMA
from synthrelease.segmentation import SegmentationConfig, create_engine, score_case


def write_cohorts(root: Path, size: int, n_train: int, n_test: int) -> tuple[Path, Path]:
    mm = 240.0 / size
    cfg = PreprocessConfig.for_modality("ct", spacing=(mm, mm, mm), shape=(size, size, size))
    cases = [preprocess_case(make_ct_phantom(i, shape=size, seed=0), cfg)[0] for i in range(n_train + n_test)]
    dirs = []
    for name, part in (("train", cases[:n_train]), ("test", cases[n_train:])):
        dirs.append(write_nnunet(part, root / name, name=name, schema=CT_HEAD_NECK_SCHEMA, modality="CT",
                                 channel_names=("CT",)))
    return root / "train", root / "test"


def run_engine(name: str, train: Path, test: Path, work: Path, steps: int, device: str) -> dict[str, Any]:
    engine = create_engine(name)
    config = SegmentationConfig(steps=steps, device=device, seed=0)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    model = engine.train([train], work / f"{name}-model", config)
    t1 = time.perf_counter()
    pred = engine.predict(model, test, work / f"{name}-pred")
    t2 = time.perf_counter()
    truth = read_nnunet(test)
    dice: dict[str, list[float]] = {"tumour": [], "bone": []}
    for case in truth:
        import SimpleITK as sitk

        p = sitk.GetArrayFromImage(sitk.ReadImage(str(pred / f"{case.case_id}.nii.gz")))
        s = score_case(case.case_id, p, case.labels, case.schema, case.geometry.spacing[::-1])
        for k in dice:
            dice[k].append(s.dice[k])
    return {"engine": name, "train_s": round(t1 - t0, 1), "s_per_step": round((t1 - t0) / steps, 3),
            "predict_s": round(t2 - t1, 1),
            "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
            "dice_tumour": round(float(np.nanmean(dice["tumour"])), 3),
            "dice_bone": round(float(np.nanmean(dice["bone"])), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--train", type=int, default=24)
    parser.add_argument("--test", type=int, default=8)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--engines", nargs="+", default=["monai", "nnunet"])
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for the whole run")
    parser.add_argument("--out", type=Path, default=Path("gpu-utility"))
    parser.add_argument("--device", default="cuda", help="cuda (the point of this script) or cpu for a smoke run")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU (or --device cpu for a smoke run)")
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    train, test = write_cohorts(args.out, args.size, args.train, args.test)
    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"# {gpu}: {args.train} train / {args.test} test phantom CT at {args.size}^3, "
          f"{args.steps} steps; cohorts written in {time.perf_counter() - start:.0f} s", flush=True)
    rows: list[dict[str, Any]] = []
    for name in args.engines:
        spent = time.perf_counter() - start
        if rows and spent + 1.5 * rows[-1]["train_s"] > args.budget:
            rows.append({"engine": name, "skipped": f"budget ({spent:.0f} s spent)"})
            continue
        try:
            rows.append(run_engine(name, train, test, args.out, args.steps, args.device))
        except Exception as exc:  # report and go on: one engine failing must not hide the other's numbers
            rows.append({"engine": name, "error": f"{type(exc).__name__}: {exc}"[:400]})
        print(json.dumps(rows[-1]), flush=True)
    (args.out / "gpu_utility.json").write_text(json.dumps(rows, indent=2) + "\n")
    keys = ["engine", "train_s", "s_per_step", "predict_s", "peak_gpu_gib", "dice_tumour", "dice_bone"]
    print("\n" + " | ".join(keys) + "\n" + " | ".join("---" for _ in keys))
    for r in rows:
        print(" | ".join(str(r.get(k, r.get("skipped", r.get("error", "")) if k == "train_s" else "")) for k in keys))


if __name__ == "__main__":
    main()
