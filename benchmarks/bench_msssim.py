"""Batched MS-SSIM (``fidelity.diversity``) against a per-pair loop over MONAI's ``MultiScaleSSIMMetric``.

Run: ``python benchmarks/bench_msssim.py [--n 50] [--shape 64] [--modality ct] [--threads 2]`` (the target: all
1225 pairs of 50 phantoms at 64^3), or ``--smoke`` (6 cases at 32^3, seconds).

Volumes are phantom patients (``make_ct_phantom`` / ``make_mri_phantom`` + ``preprocess_case`` at ``--shape``^3,
on the model range ``[-1, 1]``; MRI has 4 channels). Both sides score the same pairs with the same kernel and
weights (``msssim_params`` of the shape) and data range 2. MONAI is called one pair at a time, as a loop over pairs
would; ``--monai-pairs`` times it on the first that many pairs only and extrapolates its time to all of them (the
value difference is then over those pairs). Printed: the parameters, then one row per method (seconds, pairs per
second) with the largest absolute difference of its values from MONAI's and from the batched float64 path (MONAI's
float32 run rounds by about 1e-5 at 64^3 with an 11-voxel kernel; float64 is the rounding-free reference), and the
speed ratio to MONAI. ``--json PATH`` also writes the headline figures as a flat JSON object (name -> number).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch
from benchlib import print_table
from monai.metrics import MultiScaleSSIMMetric
from threadpoolctl import threadpool_limits

from synthrelease.checks.fidelity.msssim import ms_ssim_pairs, msssim_params
from synthrelease.data.phantoms import make_ct_phantom, make_mri_phantom
from synthrelease.data.preprocess import PreprocessConfig, preprocess_case


def phantoms(n: int, shape: int, modality: str) -> torch.Tensor:
    make, fov = (make_ct_phantom, 240.0) if modality == "ct" else (make_mri_phantom, 220.0)
    cfg = PreprocessConfig.for_modality(modality, spacing=(fov / shape,) * 3, shape=(shape,) * 3)
    return torch.stack([torch.from_numpy(np.asarray(preprocess_case(make(i, shape=shape, seed=0), cfg)[0].image,
                                                    dtype=np.float32)) for i in range(n)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50, help="volumes (all n (n - 1) / 2 pairs are scored)")
    parser.add_argument("--shape", type=int, default=64)
    parser.add_argument("--modality", choices=["ct", "mri"], default="ct")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--monai-pairs", type=int, default=0,
                        help="time MONAI on the first this many pairs and extrapolate (0: all pairs)")
    parser.add_argument("--smoke", action="store_true", help="6 volumes at 32^3")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here (flat JSON object)")
    args = parser.parse_args()
    if args.smoke:
        args.n, args.shape = 6, 32
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)

    t0 = time.perf_counter()
    images = phantoms(args.n, args.shape, args.modality)
    made = time.perf_counter() - t0
    kernel, weights = msssim_params(images.shape[2:])
    pairs = np.array(list(itertools.combinations(range(args.n), 2)))
    print(f"# MS-SSIM: {args.n} {args.modality} phantoms at {args.shape}^3 ({images.shape[1]} channel(s)), "
          f"{len(pairs)} pairs, kernel {kernel}, {len(weights)} scales, weights "
          f"{', '.join(f'{w:.4f}' for w in weights)}, {args.threads} thread(s); phantoms made in {made:.1f} s\n",
          flush=True)

    t0 = time.perf_counter()
    batched = ms_ssim_pairs(images, pairs, kernel_size=kernel, weights=weights, data_range=2.0)
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    exact = ms_ssim_pairs(images, pairs, kernel_size=kernel, weights=weights, data_range=2.0, dtype=torch.float64)
    t_exact = time.perf_counter() - t0

    m = len(pairs) if args.monai_pairs <= 0 else min(args.monai_pairs, len(pairs))
    metric = MultiScaleSSIMMetric(spatial_dims=3, data_range=2.0, kernel_size=kernel, weights=weights,
                                  reduction="none")
    ref = np.empty(m)
    t0 = time.perf_counter()
    for p, (i, j) in enumerate(pairs[:m]):
        ref[p] = float(metric(images[i:i + 1], images[j:j + 1]).item())
    t_monai = (time.perf_counter() - t0) * len(pairs) / m

    note = "" if m == len(pairs) else f"extrapolated from {m} pairs"

    def err(v: np.ndarray, against: np.ndarray) -> str:
        return f"{float(np.abs(v[:m] - against[:m]).max()):.2e}"

    print_table(("method", "seconds", "pairs / s", "max |diff| vs MONAI", "max |diff| vs float64", "speed-up",
                 "note"), [
        ("MONAI MultiScaleSSIMMetric (float32), one pair at a time", f"{t_monai:.2f}", f"{len(pairs) / t_monai:.1f}",
         "-", err(ref, exact), "1x", note),
        ("batched, float32 (what the check runs)", f"{t_batched:.2f}", f"{len(pairs) / t_batched:.1f}",
         err(batched, ref), err(batched, exact), f"{t_monai / t_batched:.1f}x", ""),
        ("batched, float64 (reference)", f"{t_exact:.2f}", f"{len(pairs) / t_exact:.1f}", err(exact, ref), "-",
         f"{t_monai / t_exact:.1f}x", ""),
    ])
    print(f"MS-SSIM over the pairs: mean {batched.mean():.4f}, min {batched.min():.4f}, max {batched.max():.4f}")
    if args.json is not None:
        figures = {"pairs": len(pairs), "monai_timed_pairs": m, "monai_loop_s": round(t_monai, 3),
                   "monai_loop_pairs_per_s": round(len(pairs) / t_monai, 2), "batched_f32_s": round(t_batched, 3),
                   "batched_f32_pairs_per_s": round(len(pairs) / t_batched, 2), "batched_f64_s": round(t_exact, 3),
                   "speedup_f32_x": round(t_monai / t_batched, 2), "speedup_f64_x": round(t_monai / t_exact, 2),
                   "max_diff_f32_vs_monai": float(err(batched, ref)),
                   "max_diff_f32_vs_f64": float(err(batched, exact)), "max_diff_monai_vs_f64": float(err(ref, exact))}
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
