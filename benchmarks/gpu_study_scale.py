"""Study-scale generator timings on a GPU: train step time, peak memory and sampling time at 128^3 and 256^3.

Run on a CUDA machine: ``python benchmarks/gpu_study_scale.py [--sizes 128 256] [--budget 420] [--out DIR]``.
Uses the ``examples/configs/<gen>-ct-gpu256.toml`` configs (bf16 autocast; batch 1) on two phantom CT patients
per size, and prints a table (also written as JSON). Each measurement runs a few optimisation steps only: the
numbers are per-step and per-volume costs, not a trained model. Items that would pass the time budget are skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthrelease.data.phantoms import make_ct_phantom
from synthrelease.generators import create_generator
from synthrelease.generators.data import DataSpec, TrainingData

ROOT = Path(__file__).resolve().parents[1]


def phantom_data(size: int, n: int = 2) -> TrainingData:
    """Phantom CT on a size^3 grid, soft window to [-1, 1] (what ingest makes of it)."""
    images, classes = [], []
    for i in range(n):
        case = make_ct_phantom(i, shape=size, seed=0)
        images.append(torch.from_numpy(np.clip(case.image, -200, 200) / 200.0))
        classes.append(torch.from_numpy(case.labels.astype(np.int64)))
    spec = DataSpec(modality="CT", channel_names=("CT",), labels={"background": 0, "tumour": 1, "bone": 2},
                    regions={}, shape=(size, size, size), spacing=(240 / size,) * 3)
    return TrainingData(torch.stack(images).float(), torch.stack(classes), spec, [f"p{i}" for i in range(n)])


def config(name: str, **overrides: Any) -> dict[str, Any]:
    data = tomllib.loads((ROOT / "examples" / "configs" / f"{name}-ct-gpu256.toml").read_text())
    data.pop("generator")
    data.update(batch_size=1, checkpoint_every=10_000, log_every=1, **overrides)
    return data


DEVICE = "cuda"


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def peak_gib() -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if DEVICE == "cuda" else float("nan")


def reset_peak() -> None:
    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()


def timed_fit(name: str, cfg: dict[str, Any], data: TrainingData) -> tuple[Any, list[float]]:
    stamps: list[float] = []

    def progress(done: int, total: int, losses: dict[str, float]) -> None:
        sync()
        stamps.append(time.perf_counter())

    gen = create_generator(name, cfg)
    t0 = time.perf_counter()
    gen.fit(data, device=DEVICE, progress=progress)
    return gen, [b - a for a, b in zip([t0, *stamps[:-1]], stamps, strict=True)]


def timed_sample(gen: Any, **options: Any) -> float:
    sync()
    t0 = time.perf_counter()
    gen.sample(1, seed=0, **options)
    sync()
    return time.perf_counter() - t0


def measure(name: str, size: int, data: TrainingData) -> dict[str, Any]:
    reset_peak()
    row: dict[str, Any] = {"generator": name, "size": size}
    if name == "ldm":
        gen, dt = timed_fit(name, config(name, steps=8, ae_steps=4), data)
        row["ae_step_s"] = float(np.median(dt[1:4]))
        row["train_step_s"] = float(np.median(dt[5:]))
    else:
        extra = {"mask_source": "train"} if name in ("wgan", "ddpm") else {}
        if name == "ddpm":
            extra["mode"] = "conditioned"
        gen, dt = timed_fit(name, config(name, steps=5, **extra), data)
        row["train_step_s"] = float(np.median(dt[1:]))
    row["train_peak_gib"] = peak_gib()
    reset_peak()
    opts = {} if name == "wgan" else {"sampler": "ddim", "steps": 50}
    row["sample_s"] = timed_sample(gen, **opts)
    row["sample_peak_gib"] = peak_gib()
    if name == "ldm" and size <= 128:
        row["ddpm1000_s"] = timed_sample(gen, sampler="ddpm")
        row["ddpm1000_over_ddim50"] = row["ddpm1000_s"] / row["sample_s"]
    row["params_m"] = sum(p.numel() for m in gen.modules().values() for p in m.parameters()) / 1e6
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--generators", nargs="+", default=["ldm", "wgan", "ddpm", "mask"])
    parser.add_argument("--budget", type=float, default=420.0, help="seconds for the whole script")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    parser.add_argument("--smoke", action="store_true", help="check the script on the CPU at 16^3")
    args = parser.parse_args()
    global DEVICE
    if args.smoke:
        DEVICE, args.sizes = "cpu", [16]
    elif not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU (or --smoke)")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    start, rows = time.perf_counter(), []
    print(torch.cuda.get_device_name(0) if DEVICE == "cuda" else "cpu", "torch", torch.__version__, flush=True)
    for size in args.sizes:
        data = phantom_data(size)
        for name in args.generators:
            if time.perf_counter() - start > args.budget:
                rows.append({"generator": name, "size": size, "skipped": "time budget"})
                continue
            try:
                row = measure(name, size, data)
            except torch.OutOfMemoryError:
                row = {"generator": name, "size": size, "error": "out of GPU memory"}
            except Exception as exc:  # report and go on: one failing model must not hide the others
                row = {"generator": name, "size": size, "error": f"{type(exc).__name__}: {exc}"[:300]}
            if DEVICE == "cuda":
                torch.cuda.empty_cache()
            rows.append(row)
            print(json.dumps(row), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_study_scale.json").write_text(json.dumps(rows, indent=2))
    cols = ["generator", "size", "params_m", "ae_step_s", "train_step_s", "train_peak_gib", "sample_s",
            "sample_peak_gib", "ddpm1000_over_ddim50"]
    print(" | ".join(cols))
    for row in rows:
        cells = [row.get(c, row.get("error", row.get("skipped", "-")) if c == "params_m" else "-") for c in cols]
        print(" | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in cells))


if __name__ == "__main__":
    main()
