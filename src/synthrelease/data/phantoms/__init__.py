"""Built-in phantom cohorts: synthetic patients made on the fly for demos, tests and de-identification drills.

- ``make_ct_phantom``: head-and-neck CT in HU, labels ``{0 background, 1 tumour, 2 bone}``.
- ``make_mri_phantom``: brain glioma MRI (t1c, t1n, t2w, t2f), BraTS labels ``{1 NCR, 2 SNFH, 3 ET}``.
- ``make_phantom``: either, by modality.

Every patient ``index`` of a cohort ``seed`` is its own person (size, pose, face, bones, tumour), the same at every
grid size, and made from its own random stream: case ``i`` never depends on how many cases are made.
``make_identity`` gives the fake PHI that ``cohort.write_phantom_cohort`` plants into files.
"""

from __future__ import annotations

from typing import Any

from synthrelease.data.case import Case
from synthrelease.data.phantoms.ct import TUMOUR_SITES, make_ct_phantom
from synthrelease.data.phantoms.identity import FakeIdentity, make_identity
from synthrelease.data.phantoms.mri import MRI_CHANNELS, make_mri_phantom
from synthrelease.data.schema import Modality

__all__ = [
    "MRI_CHANNELS",
    "TUMOUR_SITES",
    "FakeIdentity",
    "make_ct_phantom",
    "make_identity",
    "make_mri_phantom",
    "make_phantom",
]


def make_phantom(modality: Modality | str, index: int, *, shape: int = 64, seed: int = 0, **kw: Any) -> Case:
    """Phantom patient ``index`` of cohort ``seed``: CT (``"ct"``) or MRI (``"mri"``/``"mr"``); ``kw`` goes to the
    modality's maker (``fov_mm``; ``channels`` for MRI)."""
    if Modality.parse(modality) is Modality.CT:
        return make_ct_phantom(index, shape=shape, seed=seed, **kw)
    return make_mri_phantom(index, shape=shape, seed=seed, **kw)
