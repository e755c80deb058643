"""The BraTS folder layout, 2023 and 2021 namings.

```
2023: <root>/<case>/<case>-t1c.nii.gz  -t1n  -t2w  -t2f  -seg      labels 1 NCR, 2 SNFH, 3 ET
2021: <root>/<case>/<case>_t1ce.nii.gz _t1   _t2   _flair _seg     labels 1 NCR, 2 ED, 4 ET (read as 3)
```
Channels are always named in the 2023 way (``t1c``, ``t1n``, ``t2w``, ``t2f``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthrelease.data.nifti import NIFTI_SUFFIXES
from synthrelease.errors import InputError, LayoutError

__all__ = ["BRATS_CHANNELS", "BratsCaseFiles", "looks_like_brats", "remap_brats_labels", "scan_brats"]

BRATS_CHANNELS = ("t1c", "t1n", "t2w", "t2f")
_SUFFIX_2023 = {"t1c": "-t1c", "t1n": "-t1n", "t2w": "-t2w", "t2f": "-t2f", "seg": "-seg"}
_SUFFIX_2021 = {"t1c": "_t1ce", "t1n": "_t1", "t2w": "_t2", "t2f": "_flair", "seg": "_seg"}
_PATIENT_2023 = re.compile(r"^(BraTS-[A-Za-z]+-\d+)-\d+$")


@dataclass(frozen=True)
class BratsCaseFiles:
    """One BraTS case folder: channel files in the requested order, the label file, the naming year."""

    name: str
    images: tuple[Path, ...]
    label: Path
    naming: int  # 2023 or 2021

    @property
    def patient_key(self) -> str:
        """Cases of one patient (2023: ``BraTS-GLI-00001-000`` and ``-001``) share this key."""
        m = _PATIENT_2023.match(self.name)
        return m.group(1) if m else self.name


def _find(folder: Path, stem: str) -> Path | None:
    for suffix in NIFTI_SUFFIXES:
        path = folder / f"{stem}{suffix}"
        if path.is_file():
            return path
    return None


def _naming_of(folder: Path) -> int | None:
    name = folder.name
    if _find(folder, name + _SUFFIX_2023["seg"]) or _find(folder, name + _SUFFIX_2023["t1c"]):
        return 2023
    if _find(folder, name + _SUFFIX_2021["seg"]) or _find(folder, name + _SUFFIX_2021["t1c"]):
        return 2021
    return None


def looks_like_brats(root: Path) -> bool:
    """True when a sub-folder of ``root`` holds files named the BraTS way after the folder."""
    return any(p.is_dir() and _naming_of(p) for p in sorted(root.iterdir()))


def scan_brats(root: Path, channels: Sequence[str] = BRATS_CHANNELS) -> list[BratsCaseFiles]:
    """Index every case folder under ``root``; each must hold the requested channels and a ``seg`` file."""
    unknown = [c for c in channels if c not in BRATS_CHANNELS]
    if unknown or not channels:
        raise InputError(f"unknown BraTS channels {unknown or '(none)'}", fix=f"choose from {list(BRATS_CHANNELS)}")
    cases = []
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        naming = _naming_of(folder)
        if naming is None:
            raise LayoutError("is not a BraTS case folder (no <case>-t1c/-seg or <case>_t1ce/_seg files)",
                              where=folder, fix="remove the folder or choose another --layout")
        suffixes = _SUFFIX_2023 if naming == 2023 else _SUFFIX_2021
        found = {key: _find(folder, folder.name + suffixes[key]) for key in (*channels, "seg")}
        missing = [folder.name + suffixes[k] + ".nii.gz" for k, p in found.items() if p is None]
        if missing:
            fix = ("BraTS validation folders ship no labels: ingest the training folders"
                   if "seg" in [k for k, p in found.items() if p is None]
                   else "add the file or restrict channels with --channels")
            raise LayoutError(f"lacks {', '.join(missing)}", where=folder, fix=fix)
        images = tuple(p for k in channels if (p := found[k]) is not None)
        label = found["seg"]
        assert label is not None
        cases.append(BratsCaseFiles(folder.name, images, label, naming))
    if not cases:
        raise LayoutError("holds no BraTS case folders", where=root, fix="point to the folder of case folders")
    return cases


def remap_brats_labels(labels: np.ndarray, naming: int) -> np.ndarray:
    """BraTS 2021 marks enhancing tumour with 4; BraTS 2023 (and synthrelease) with 3."""
    if naming != 2021:
        return labels
    out = np.asarray(labels).copy()
    if np.any(out == 3) and np.any(out == 4):
        return out  # both present: not BraTS-2021 numbering; leave for the schema check to report
    out[out == 4] = 3
    return out
