"""What the engines read and write: the images of a cohort folder (labels optional) and label maps on its grid."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthrelease.data.case import Geometry
from synthrelease.data.nifti import read_nifti, write_nifti
from synthrelease.errors import LayoutError

__all__ = ["ImageCase", "image_files", "iter_images", "write_label_map"]

_CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})\.nii(\.gz)?$")


@dataclass(frozen=True)
class ImageCase:
    case_id: str
    image: np.ndarray  # (C, Z, Y, X) float32
    geometry: Geometry


def _images_folder(cohort_dir: Path) -> Path:
    """``imagesTr`` of an nnU-Net raw folder, else ``imagesTs``, else the folder itself (nnU-Net's predict input)."""
    for sub in ("imagesTr", "imagesTs"):
        if (cohort_dir / sub).is_dir():
            return cohort_dir / sub
    return cohort_dir


def image_files(cohort_dir: Path) -> dict[str, list[Path]]:
    """``case id -> [channel files in order]`` of ``<case>_<XXXX>.nii.gz`` files; every case has every channel."""
    cohort_dir = Path(cohort_dir)
    folder = _images_folder(cohort_dir)
    by_case: dict[str, dict[int, Path]] = {}
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        m = _CHANNEL_FILE.match(path.name)
        if m:
            by_case.setdefault(m["case"], {})[int(m["channel"])] = path
    if not by_case:
        raise LayoutError("holds no <case>_<XXXX>.nii.gz images", where=folder,
                          fix="point to an nnU-Net raw folder (imagesTr/) or a folder of such files")
    n_channels = max(len(c) for c in by_case.values())
    dataset = cohort_dir / "dataset.json"
    if dataset.is_file():
        n_channels = len(json.loads(dataset.read_text()).get("channel_names", {})) or n_channels
    out = {}
    for case, channels in by_case.items():
        if sorted(channels) != list(range(n_channels)):
            raise LayoutError(f"case {case} has channels {sorted(channels)}, expected 0..{n_channels - 1}",
                              where=folder, fix="give every case one file per channel")
        out[case] = [channels[i] for i in range(n_channels)]
    return out


def iter_images(cohort_dir: Path) -> Iterator[ImageCase]:
    """Each case's channels stacked ``(C, Z, Y, X)``, one case at a time."""
    for case, paths in image_files(cohort_dir).items():
        arrays, geometry = [], None
        for p in paths:
            arr, g = read_nifti(p)
            arrays.append(arr.astype(np.float32, copy=False))
            geometry = geometry or g
        assert geometry is not None
        yield ImageCase(case, np.stack(arrays), geometry)


def write_label_map(labels: np.ndarray, geometry: Geometry, out: Path, case_id: str) -> Path:
    return write_nifti(np.asarray(labels, dtype=np.uint8), geometry, Path(out) / f"{case_id}.nii.gz")
