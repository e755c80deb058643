"""Sample quality of a generator trained on phantoms: the generators issue's quality bar, measured.

Run: ``python benchmarks/quality_phantoms.py --generator ldm [--modality ct|mri] [--config FILE] [--patients 40]
[--samples 20]``. Phantoms at 32^3 go through the real preprocessing, split into train / holdout patients; the
generator trains on train only. Prints one table row:

- train (s): wall time of ``fit``; CPU (s): its process CPU time (with one thread, the time on an unshared core);
- not copies: share of samples whose nearest training case (mean absolute difference) is farther than the nearest
  training case of every holdout patient is (the memorization threshold of the privacy checks). Unaligned: a
  shifted copy passes it (``--generator copycat`` scores 100%); ``synthrelease audit``'s memorization check, with
  its alignment search, is the test of copying.

CT (head and neck; wide window [-1000, 1000] HU, so bone HU is measurable; samples mapped back to HU):

- both labels: share of samples holding tumour and bone (mean tumour voxels per sample, real mean beside it);
- bone HU / tumour HU: mean HU inside the sampled labels (real tumour mean beside it).

MRI (glioma, t1c / t1n / t2w / t2f, BraTS labels; the model range [-1, 1] of the percentile normalization):

- all labels: share of samples holding NCR, SNFH and ET (mean tumour voxels, real mean beside it);
- the mean intensity inside each label in the sequence that shows it (NCR and ET in t1c, SNFH in t2f), real
  mean beside it.

``--json PATH`` also writes these figures as a flat JSON object (name -> number or string).
"""

from __future__ import annotations

import argparse
import json
import time
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthrelease.data.case import Case
from synthrelease.data.cohort import Cohort
from synthrelease.data.phantoms import make_ct_phantom, make_mri_phantom
from synthrelease.data.preprocess import PreprocessConfig, from_model_range, preprocess_case
from synthrelease.generators import create_generator

WINDOW = (-1000.0, 1000.0)


def hu(case: Case) -> np.ndarray:
    return np.asarray(from_model_range(case.image, [WINDOW[0]], [WINDOW[1]])[0])


def nearest_mae(volume: np.ndarray, others: list[np.ndarray]) -> float:
    return float(min(np.mean(np.abs(volume - o)) for o in others))


def mri_row(args: argparse.Namespace, train: list[Case], holdout: list[Case], samples: list[Case], train_s: float,
            train_cpu: float, sample_s: float) -> None:
    channels = train[0].channel_names
    shown = {"NCR": ("t1c", 1), "SNFH": ("t2f", 2), "ET": ("t1c", 3)}  # label -> (sequence that shows it, value)

    def mean_inside(cases: list[Case], seq: str, value: int) -> float:
        k = channels.index(seq)
        vals = np.concatenate([np.asarray(c.image[k])[c.labels == value] for c in cases])
        return float(vals.mean()) if len(vals) else float("nan")

    images = [np.asarray(c.image) for c in train]
    tau = min(nearest_mae(np.asarray(h.image), images) for h in holdout)
    every = np.mean([all(np.any(s.labels == v) for _, v in shown.values()) for s in samples])
    tumour_vox = np.mean([np.sum(s.labels > 0) for s in samples])
    real_vox = np.mean([np.sum(c.labels > 0) for c in train])
    distinct = np.mean([nearest_mae(np.asarray(s.image), images) > tau for s in samples])
    means = {name: (mean_inside(samples, seq, v), mean_inside(train, seq, v)) for name, (seq, v) in shown.items()}
    print("generator | threads | train (s) | CPU (s) | sample (s/vol) | all labels (tumour voxels, real) | "
          + " | ".join(f"{n} in {seq} (real)" for n, (seq, _) in shown.items()) + " | not copies (holdout tau)")
    print(f"{args.generator} | {args.threads} | {train_s:.0f} | {train_cpu:.0f} | {sample_s:.2f} | {every:.0%} "
          f"({tumour_vox:.0f}, {real_vox:.0f}) | "
          + " | ".join(f"{m:+.2f} ({r:+.2f})" for m, r in means.values()) + f" | {distinct:.0%} ({tau:.3f})")
    if args.json is not None:
        figures: dict[str, Any] = {
            "generator": args.generator, "modality": "mri", "train_s": round(train_s, 1),
            "train_cpu_s": round(train_cpu, 1), "sample_per_volume_s": round(sample_s, 3),
            "all_labels_frac": round(float(every), 3), "tumour_voxels": round(float(tumour_vox), 1),
            "real_tumour_voxels": round(float(real_vox), 1), "not_copies_frac": round(float(distinct), 3),
            "holdout_tau": round(tau, 4)}
        for name, (m, r) in means.items():
            figures[f"{name}_mean"], figures[f"{name}_real_mean"] = round(m, 3), round(r, 3)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--generator", default="ldm")
    parser.add_argument("--config", type=Path, default=None, help="TOML config (default: the generator's defaults)")
    parser.add_argument("--set", nargs="*", default=[], help="overrides key=value (TOML values)")
    parser.add_argument("--patients", type=int, default=40)
    parser.add_argument("--holdout", type=int, default=8)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here (flat JSON object)")
    parser.add_argument("--modality", choices=["ct", "mri"], default="ct")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.modality == "ct":
        pre = PreprocessConfig.for_modality("ct", spacing=(7.5, 7.5, 7.5), shape=(32, 32, 32), ct_window="wide")
        cases = [preprocess_case(make_ct_phantom(i, shape=32, seed=0), pre)[0] for i in range(args.patients)]
    else:
        pre = PreprocessConfig.for_modality("mri", spacing=(220 / 32,) * 3, shape=(32, 32, 32))
        cases = [preprocess_case(make_mri_phantom(i, shape=32, seed=0), pre)[0] for i in range(args.patients)]
    train, holdout = cases[: -args.holdout], cases[-args.holdout :]
    config: dict[str, Any] = {}
    if args.config:
        config = tomllib.loads(args.config.read_text())
        config.pop("generator", None)
    for item in args.set:
        config.update(tomllib.loads(item))
    gen = create_generator(args.generator, config)
    t0, c0 = time.perf_counter(), time.process_time()
    gen.fit(Cohort.from_cases(train))
    train_s, train_cpu = time.perf_counter() - t0, time.process_time() - c0
    t0 = time.perf_counter()
    samples = gen.sample(args.samples, seed=1)
    sample_s = (time.perf_counter() - t0) / args.samples

    if args.modality == "mri":
        mri_row(args, train, holdout, samples, train_s, train_cpu, sample_s)
        return
    train_hu = [hu(c) for c in train]
    tau = min(nearest_mae(hu(h), train_hu) for h in holdout)
    both = np.mean([np.any(s.labels == 1) and np.any(s.labels == 2) for s in samples])
    bone = np.concatenate([hu(s)[s.labels == 2] for s in samples])
    tumour = np.concatenate([hu(s)[s.labels == 1] for s in samples])
    real_tumour = np.concatenate([hu(c)[c.labels == 1] for c in train])
    tumour_vox = np.mean([np.sum(s.labels == 1) for s in samples])
    real_vox = np.mean([np.sum(c.labels == 1) for c in train])
    distinct = np.mean([nearest_mae(hu(s), train_hu) > tau for s in samples])
    print("generator | threads | train (s) | CPU (s) | sample (s/vol) | both labels (tumour voxels, real) | bone HU | "
          "tumour HU (real) | not copies (holdout tau, HU)")
    print(f"{args.generator} | {args.threads} | {train_s:.0f} | {train_cpu:.0f} | {sample_s:.2f} | {both:.0%} "
          f"({tumour_vox:.0f}, {real_vox:.0f}) | {bone.mean():.0f} | "
          f"{tumour.mean():.0f} ({real_tumour.mean():.0f}) | {distinct:.0%} ({tau:.1f})")
    if args.json is not None:
        figures = {"generator": args.generator, "train_s": round(train_s, 1), "train_cpu_s": round(train_cpu, 1),
                   "sample_per_volume_s": round(sample_s, 3), "both_labels_frac": round(float(both), 3),
                   "tumour_voxels": round(float(tumour_vox), 1), "real_tumour_voxels": round(float(real_vox), 1),
                   "bone_hu": round(float(bone.mean()), 1), "tumour_hu": round(float(tumour.mean()), 1),
                   "real_tumour_hu": round(float(real_tumour.mean()), 1), "not_copies_frac": round(float(distinct), 3),
                   "holdout_tau_hu": round(tau, 2)}
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
