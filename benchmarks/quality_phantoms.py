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

``--utility-steps N`` (N > 0) adds what the release gate's ``utility.segmentation.dice_ratio`` measures: a MONAI
DynUNet segmenter trained for N steps on the real training patients and one on the samples (the same seed and
budget), both tested on the holdout patients; it prints each arm's Dice per class and the ratio of their means.
The share of samples with both labels says nothing of whether the anatomy is right; this does.
``--window soft`` trains on the soft-tissue CT window that workspaces use by default; with ``--patients 60
--holdout 20`` that is the demo's data (real arm tumour / bone Dice 0.82 / 0.87 at 500 steps). On the wide window
the tumour is faint for a segmenter (real arm tumour Dice 0.36 with 32 training patients).

``--json PATH`` also writes these figures as a flat JSON object (name -> number or string).
"""

from __future__ import annotations

import argparse
import json
import tempfile
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


def segmentation_utility(train: list[Case], holdout: list[Case], samples: list[Case], steps: int) -> dict[str, Any]:
    """Dice per class on the holdout of a segmenter trained on ``train`` ("real") and on ``samples`` ("synthetic")."""
    from synthrelease.data.nifti import read_nifti
    from synthrelease.data.nnunet import dataset_json, write_nnunet_case
    from synthrelease.segmentation import SegmentationConfig, create_engine, score_case

    def write(cases: list[Case], root: Path) -> Path:
        for case in cases:
            write_nnunet_case(case, root)
        (root / "dataset.json").write_text(json.dumps(dataset_json(
            name=root.name, schema=cases[0].schema, modality=cases[0].modality,
            channel_names=cases[0].channel_names, n_cases=len(cases))))
        return root

    names = list(holdout[0].schema.foreground)
    engine = create_engine("monai")
    config = SegmentationConfig(steps=steps, seed=0, network="dynunet")
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="quality-utility-") as tmp:
        root = Path(tmp)
        test = write(holdout, root / "holdout")
        for arm, cases in (("real", train), ("synthetic", samples)):
            model = engine.train([write(cases, root / arm)], root / f"model-{arm}", config)
            pred = engine.predict(model, test, root / f"pred-{arm}")
            rows = [score_case(c.case_id, read_nifti(pred / f"{c.case_id}.nii.gz")[0], c.labels, c.schema,
                               c.geometry.spacing[::-1]) for c in holdout]
            for name in names:
                out[f"dice_{arm}_{name}"] = round(float(np.nanmean([r.dice[name] for r in rows])), 3)
    real = float(np.mean([out[f"dice_real_{n}"] for n in names]))
    synthetic = float(np.mean([out[f"dice_synthetic_{n}"] for n in names]))
    out["dice_ratio"] = round(synthetic / real, 3) if real > 0 else None  # undefined when the real arm learnt nothing
    return out


def mri_row(args: argparse.Namespace, train: list[Case], holdout: list[Case], samples: list[Case], train_s: float,
            train_cpu: float, sample_s: float) -> dict[str, Any]:
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
    figures: dict[str, Any] = {
        "generator": args.generator, "modality": "mri", "train_s": round(train_s, 1),
        "train_cpu_s": round(train_cpu, 1), "sample_per_volume_s": round(sample_s, 3),
        "all_labels_frac": round(float(every), 3), "tumour_voxels": round(float(tumour_vox), 1),
        "real_tumour_voxels": round(float(real_vox), 1), "not_copies_frac": round(float(distinct), 3),
        "holdout_tau": round(tau, 4)}
    for name, (m, r) in means.items():
        figures[f"{name}_mean"], figures[f"{name}_real_mean"] = round(m, 3), round(r, 3)
    return figures


def ct_row(args: argparse.Namespace, train: list[Case], holdout: list[Case], samples: list[Case], train_s: float,
           train_cpu: float, sample_s: float) -> dict[str, Any]:
    both = np.mean([np.any(s.labels == 1) and np.any(s.labels == 2) for s in samples])
    tumour_vox = np.mean([np.sum(s.labels == 1) for s in samples])
    real_vox = np.mean([np.sum(c.labels == 1) for c in train])
    if args.window != "wide":  # HU is measurable on the wide window only (the soft one clips bone)
        print("generator | window | threads | train (s) | both labels (tumour voxels, real)")
        print(f"{args.generator} | {args.window} | {args.threads} | {train_s:.0f} | {both:.0%} ({tumour_vox:.0f}, "
              f"{real_vox:.0f})")
        return {"generator": args.generator, "window": args.window, "train_s": round(train_s, 1),
                "both_labels_frac": round(float(both), 3), "tumour_voxels": round(float(tumour_vox), 1),
                "real_tumour_voxels": round(float(real_vox), 1)}
    train_hu = [hu(c) for c in train]
    tau = min(nearest_mae(hu(h), train_hu) for h in holdout)
    bone = np.concatenate([hu(s)[s.labels == 2] for s in samples])
    tumour = np.concatenate([hu(s)[s.labels == 1] for s in samples])
    real_tumour = np.concatenate([hu(c)[c.labels == 1] for c in train])
    distinct = np.mean([nearest_mae(hu(s), train_hu) > tau for s in samples])
    print("generator | threads | train (s) | CPU (s) | sample (s/vol) | both labels (tumour voxels, real) | bone HU | "
          "tumour HU (real) | not copies (holdout tau, HU)")
    print(f"{args.generator} | {args.threads} | {train_s:.0f} | {train_cpu:.0f} | {sample_s:.2f} | {both:.0%} "
          f"({tumour_vox:.0f}, {real_vox:.0f}) | {bone.mean():.0f} | "
          f"{tumour.mean():.0f} ({real_tumour.mean():.0f}) | {distinct:.0%} ({tau:.1f})")
    return {"generator": args.generator, "train_s": round(train_s, 1), "train_cpu_s": round(train_cpu, 1),
            "sample_per_volume_s": round(sample_s, 3), "both_labels_frac": round(float(both), 3),
            "tumour_voxels": round(float(tumour_vox), 1), "real_tumour_voxels": round(float(real_vox), 1),
            "bone_hu": round(float(bone.mean()), 1), "tumour_hu": round(float(tumour.mean()), 1),
            "real_tumour_hu": round(float(real_tumour.mean()), 1), "not_copies_frac": round(float(distinct), 3),
            "holdout_tau_hu": round(tau, 2)}


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
    parser.add_argument("--window", choices=["wide", "soft"], default="wide", help="CT window (HU figures: wide only)")
    parser.add_argument("--utility-steps", type=int, default=0,
                        help="> 0: also train segmenters on real and synthetic cases and report the Dice ratio")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.modality == "ct":
        pre = PreprocessConfig.for_modality("ct", spacing=(7.5, 7.5, 7.5), shape=(32, 32, 32), ct_window=args.window)
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
        figures = mri_row(args, train, holdout, samples, train_s, train_cpu, sample_s)
    else:
        figures = ct_row(args, train, holdout, samples, train_s, train_cpu, sample_s)
    if args.utility_steps > 0:
        t0 = time.perf_counter()
        figures.update(segmentation_utility(train, holdout, samples, args.utility_steps))
        names = list(train[0].schema.foreground)
        print(f"utility (DynUNet, {args.utility_steps} steps per arm, {time.perf_counter() - t0:.0f} s): Dice on the "
              "holdout, real arm / synthetic arm: "
              + ", ".join(f"{n} {figures[f'dice_real_{n}']:.3f} / {figures[f'dice_synthetic_{n}']:.3f}" for n in names)
              + f"; dice_ratio {figures['dice_ratio']}")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
