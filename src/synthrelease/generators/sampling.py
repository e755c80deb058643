"""Sample a synthetic cohort into ``WS/synthetic/<set>/`` (nnU-Net raw layout + ``provenance.json``), atomically.

Samples come out of a generator in model range on the workspace grid; here label maps are cleaned (argmax was
taken by the generator; components smaller than ``min_component`` voxels are dropped) and intensities are mapped
back to HU (CT) or the cohort's MR scale with the workspace's intensity reference.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from synthrelease import __version__
from synthrelease.data.nnunet import dataset_json, write_nnunet_case
from synthrelease.data.preprocess import from_model_range
from synthrelease.data.workspace import Workspace
from synthrelease.errors import InputError
from synthrelease.generators.config import config_hash
from synthrelease.generators.runs import load_run, run_dir
from synthrelease.runtime.fs import atomic_directory, sha256_file

__all__ = ["clean_labels", "sample_set"]

_SET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def clean_labels(labels: np.ndarray, min_component: int) -> np.ndarray:
    """Drop connected components (26-connectivity) smaller than ``min_component`` voxels, per label."""
    if min_component <= 1:
        return labels
    out = labels.copy()
    structure = np.ones((3, 3, 3), dtype=bool)
    for value in np.unique(labels):
        if value == 0:
            continue
        comp, n = ndimage.label(labels == value, structure=structure)
        sizes = np.bincount(comp.ravel(), minlength=n + 1)
        small = np.flatnonzero(sizes < min_component)
        small = small[small > 0]
        out[np.isin(comp, small)] = 0
    return out


def sample_set(ws: Workspace, run: str, *, n: int, seed: int, name: str, batch: int | None = None,
               sampler: str | None = None, steps: int | None = None, min_component: int = 0,
               device: str | None = None, progress: Callable[[str, int, int], None] | None = None) -> Path:
    """Sample ``n`` cases from run ``run`` into ``WS/synthetic/<name>``; return that folder."""
    if not _SET_NAME.match(name):
        raise InputError(f"set name {name!r} is not a plain name", fix="use letters, digits, '.', '_' or '-'")
    if n < 1 or (batch is not None and batch < 1) or (steps is not None and steps < 1):
        raise InputError("--n, --batch and --steps must be at least 1")
    gen = load_run(ws, run, device=device)
    spec = gen.spec_
    grid = tuple(ws.config["preprocessing"]["target_shape"])
    if spec.shape != grid or spec.channel_names != ws.channel_names or spec.schema != ws.schema:
        raise InputError(f"run {run!r} was trained on another grid, channels or label schema than this workspace",
                         where=run_dir(ws, run), fix="sample in the workspace the run was trained in")
    options: dict[str, Any] = {}
    if sampler is not None:
        options["sampler"] = sampler
    if steps is not None:
        options["steps"] = steps
    low, high = ws.intensity_reference
    out = ws.dir("synthetic") / name
    size = batch or min(n, 8)
    with atomic_directory(out) as tmp:
        written = 0
        for first in range(0, n, size):
            count = min(size, n - first)
            cases = gen.sample(count, seed, batch=size, offset=first, **options)  # one batch in memory at a time
            for i, case in enumerate(cases):
                labels = clean_labels(case.labels, min_component)
                image = from_model_range(case.image, low, high)
                final = case.with_(case_id=f"syn{first + i:04d}", image=image, labels=labels)
                write_nnunet_case(final, tmp)
            written += count
            if progress:
                progress("sample", written, n)
        data = dataset_json(name=name, schema=ws.schema, modality=ws.modality, channel_names=ws.channel_names,
                            n_cases=n)
        (tmp / "dataset.json").write_text(json.dumps(data, indent=2) + "\n")
        model_path = run_dir(ws, run) / "model.pt"
        provenance = {
            "synthrelease_version": __version__,
            "generator": gen.name,
            "run": run,
            "negative_control": bool(gen.negative_control),
            "config_sha256": config_hash(gen.config),
            "checkpoint_sha256": sha256_file(model_path),
            "seed": seed,
            "n": n,
            "batch": size,
            "sampler": sampler,
            "steps": steps,
            "min_component": min_component,
            "intensity_reference": {"low": list(low), "high": list(high)},
            "grid": {"shape_zyx": list(spec.shape), "spacing_xyz_mm": list(spec.spacing)},
            **gen.provenance(),
        }
        (tmp / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    return out
