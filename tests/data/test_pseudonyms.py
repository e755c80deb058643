"""Pseudonyms and patient-level splits."""

from __future__ import annotations

import numpy as np
import pytest

from synthrelease.data.pseudonyms import draw_pseudonyms, split_patients
from synthrelease.errors import InputError


def test_pseudonyms_unique_random_and_seeded():
    a = draw_pseudonyms(500, np.random.default_rng(3))
    assert len(set(a)) == 500 and all(p.startswith("sr-") and len(p) == 11 for p in a)
    assert a == draw_pseudonyms(500, np.random.default_rng(3))
    assert a != draw_pseudonyms(500, np.random.default_rng(4))


def test_split_keeps_patients_together():
    keys = ["p1", "p1", "p2", "p3", "p3", "p3", "p4", "p5", "p6", "p7"]
    train, hold = split_patients(keys, 0.3, np.random.default_rng(0))
    assert sorted(train + hold) == list(range(len(keys)))
    assert {keys[i] for i in train}.isdisjoint({keys[i] for i in hold})
    assert len({keys[i] for i in hold}) == 2  # round(0.3 * 7)


def test_split_edge_cases():
    train, hold = split_patients(["a", "b"], 0.01, np.random.default_rng(0))
    assert len(hold) == 1 and len(train) == 1  # at least one held out
    train, hold = split_patients(["a", "b", "c"], 0.0, np.random.default_rng(0))
    assert hold == [] and train == [0, 1, 2]
    with pytest.raises(InputError, match="at least 2 patients"):
        split_patients(["a", "a"], 0.2, np.random.default_rng(0))
