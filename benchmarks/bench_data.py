"""Data-layer speed: phantom generation, NIfTI I/O, preprocessing and ingest, per volume size.

Run: ``python benchmarks/bench_data.py [--sizes 32 64 128] [--cases 4] [--json PATH]``. Prints a table (seconds
per case); ``--json`` also writes its figures as a flat JSON object (name -> seconds).
Targets live here, not in tests: a 128^3 case should phantom + preprocess in a few seconds on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from synthrelease.data.ingest import IngestOptions, ingest
from synthrelease.data.nifti import read_nifti, write_nifti
from synthrelease.data.phantoms.cohort import write_phantom_cohort
from synthrelease.data.phantoms.ct import make_ct_phantom
from synthrelease.data.phantoms.mri import make_mri_phantom
from synthrelease.data.preprocess import PreprocessConfig, preprocess_case


def timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--cases", type=int, default=4, help="cases per ingest run")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here (flat JSON object)")
    args = parser.parse_args()
    rows = []
    for size in args.sizes:
        t_ct, ct = timed(lambda s=size: make_ct_phantom(0, shape=s), repeat=2)
        t_mr, _mr = timed(lambda s=size: make_mri_phantom(0, shape=s), repeat=2)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "ct.nii.gz"
            t_w, _ = timed(lambda p=path, c=ct: write_nifti(c.image[0], c.geometry, p))
            t_r, _ = timed(lambda p=path: read_nifti(p))
            config = PreprocessConfig.for_modality("ct", spacing=(240 / size * 1.5,) * 3, shape=(size // 2,) * 3)
            t_pre, _ = timed(lambda c=ct, cfg=config: preprocess_case(c, cfg))
            src = write_phantom_cohort(Path(tmp) / "src", modality="ct", cases=args.cases, shape=size, fmt="dicom")
            t_ing, _ = timed(lambda s=src, t=tmp: ingest(s, Path(t) / "ws", modality="ct", options=IngestOptions()))
        rows.append((size, t_ct, t_mr, t_w, t_r, t_pre, t_ing / args.cases))
    head = ("size", "CT phantom", "MRI phantom (4 ch)", "write nii.gz", "read nii.gz", "preprocess CT",
            "DICOM ingest / case")
    print(" | ".join(head))
    print(" | ".join("---" for _ in head))
    for size, *times in rows:
        print(" | ".join([f"{size}^3", *(f"{t:.3f} s" for t in times)]))
    if args.json is not None:
        keys = ("ct_phantom", "mri_phantom", "write_niigz", "read_niigz", "preprocess_ct", "dicom_ingest_per_case")
        figures = {f"{k}_{size}_s": round(t, 4) for size, *times in rows for k, t in zip(keys, times, strict=True)}
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
