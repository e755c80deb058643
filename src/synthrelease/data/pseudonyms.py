"""Random case pseudonyms and the patient-level train/holdout split.

Pseudonyms are drawn from a seeded generator, never derived from a source name, record number or date: knowing
a pseudonym tells nothing about the patient. (The same seed over the same source gives the same pseudonyms, so a
re-ingest is reproducible; the seed is the steward's and stays in the private workspace.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from synthrelease.errors import InputError

__all__ = ["PSEUDONYM_PREFIX", "draw_pseudonyms", "split_patients"]

PSEUDONYM_PREFIX = "sr-"


def draw_pseudonyms(n: int, rng: np.random.Generator, *, prefix: str = PSEUDONYM_PREFIX) -> list[str]:
    """``n`` distinct random pseudonyms such as ``sr-3fa9c2e1``."""
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        token = f"{prefix}{int(rng.integers(0, 2**32)):08x}"
        if token not in seen:
            seen.add(token)
            out.append(token)
    return out


def split_patients(patient_keys: Sequence[str], holdout: float,
                   rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """Indices of train and holdout cases; all cases of one patient fall on the same side.

    The holdout takes ``round(holdout * n_patients)`` patients (at least one when ``holdout > 0`` and there are
    two or more patients), chosen at random.
    """
    patients = sorted(set(patient_keys))
    if holdout > 0 and len(patients) < 2:
        raise InputError(f"a holdout needs at least 2 patients; the source has {len(patients)}",
                         fix="add patients or pass --holdout 0")
    n_hold = 0 if holdout <= 0 else min(len(patients) - 1, max(1, round(holdout * len(patients))))
    order = rng.permutation(len(patients))
    held = {patients[i] for i in order[:n_hold]}
    train = [i for i, k in enumerate(patient_keys) if k not in held]
    hold = [i for i, k in enumerate(patient_keys) if k in held]
    return train, hold
