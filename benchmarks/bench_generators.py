"""Generator speed on the CPU: train step time and sampling time per volume, at 32^3 and 64^3.

Run: ``python benchmarks/bench_generators.py [--sizes 32 64] [--steps 4] [--threads 2] [--json PATH]``. Prints a
table; ``--json`` also writes its figures as a flat JSON object (name -> seconds or ratio).
Configs are each generator's defaults (the tiny CPU configs) with batch 2 (``shape``: its "train step" is its whole
fit, timed on the 4 phantoms; the fit is one SVD, so it grows with patients x voxels); the DDIM-50 vs DDPM-1000 sampling
speed ratio is measured on the same model (``--ddpm-size``, default 32^3, where 1000 steps stay affordable).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from synthrelease.data.cohort import Cohort
from synthrelease.data.phantoms import make_ct_phantom
from synthrelease.data.preprocess import PreprocessConfig, preprocess_case
from synthrelease.generators import create_generator
from synthrelease.generators.data import TrainingData

EXTRA: dict[str, dict[str, Any]] = {
    "ldm": {"ae_steps": 0},  # set per run: half the timed steps train the autoencoder
    "wgan": {"mask_source": "train"},  # the mask generator is timed on its own row
}


def cohort(size: int, n: int = 4) -> TrainingData:
    cfg = PreprocessConfig.for_modality("ct", spacing=(240 / size,) * 3, shape=(size,) * 3)
    return TrainingData.from_cohort(Cohort.from_cases(
        [preprocess_case(make_ct_phantom(i, shape=size, seed=0), cfg)[0] for i in range(n)]))


def train_times(name: str, data: TrainingData, steps: int) -> dict[str, float]:
    stamps: list[float] = []
    cfg: dict[str, Any] = {"steps": steps, "batch_size": 2, "checkpoint_every": 10**6, **EXTRA.get(name, {})}
    if name == "ldm":
        cfg["ae_steps"] = steps // 2
    gen = create_generator(name, cfg)
    t0 = time.perf_counter()
    gen.fit(data, progress=lambda done, total, losses: stamps.append(time.perf_counter()))
    dt = [b - a for a, b in zip([t0, *stamps[:-1]], stamps, strict=True)]
    out = {"gen": gen}
    if name == "ldm":
        half = steps // 2
        out.update(ae_step=sum(dt[1:half]) / max(1, half - 1), step=sum(dt[half + 1 :]) / max(1, steps - half - 1))
    elif name == "shape":  # fitted before its first step (the PCA); its steps do nothing
        out.update(step=dt[0])
    else:
        out.update(step=sum(dt[1:]) / max(1, steps - 1))
    return out


def sample_time(gen: Any, **options: Any) -> float:
    t0 = time.perf_counter()
    gen.sample(1, seed=0, **options)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--generators", nargs="+", default=["ldm", "ddpm", "wgan", "mask", "shape"])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ddpm-size", type=int, default=32)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here (flat JSON object)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("generator | size | AE step (s) | train step (s) | DDIM-50 sample (s/volume) | DDPM-1000 (s) | ratio")
    print("--- | --- | --- | --- | --- | --- | ---")
    figures: dict[str, float] = {}
    for size in args.sizes:
        data = cohort(size)
        for name in args.generators:
            res = train_times(name, data, args.steps)
            gen = res.pop("gen")
            diffusion = name not in ("wgan", "shape")  # one pass: no sampler, no steps
            ddim = sample_time(gen, sampler="ddim", steps=50) if diffusion else sample_time(gen)
            key = f"{name}_{size}"
            figures[f"{key}_train_step_s"] = round(res["step"], 4)
            figures[f"{key}_ddim50_sample_s" if diffusion else f"{key}_sample_s"] = round(ddim, 3)
            full = ratio = "-"
            if diffusion and size == args.ddpm_size:
                t = sample_time(gen, sampler="ddpm")
                full, ratio = f"{t:.1f}", f"{t / ddim:.1f}x"
                figures[f"{key}_ddpm1000_sample_s"] = round(t, 2)
                figures[f"{key}_ddpm_over_ddim_x"] = round(t / ddim, 2)
            ae = f"{res['ae_step']:.3f}" if "ae_step" in res else "-"
            if "ae_step" in res:
                figures[f"{key}_ae_step_s"] = round(res["ae_step"], 4)
            print(f"{name} | {size}^3 | {ae} | {res['step']:.3f} | {ddim:.2f} | {full} | {ratio}", flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
