"""Atomic output folders."""

from __future__ import annotations

import pytest

from synthrelease.errors import InputError
from synthrelease.runtime.fs import atomic_directory


def test_success_renames_into_place(tmp_path):
    with atomic_directory(tmp_path / "out") as tmp:
        (tmp / "f.txt").write_text("x")
        assert not (tmp_path / "out").exists()
    assert (tmp_path / "out" / "f.txt").read_text() == "x"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_failure_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic_directory(tmp_path / "out") as tmp:
        (tmp / "f.txt").write_text("x")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_existing_target_refused_unless_replace(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old").write_text("old")
    with pytest.raises(InputError, match="already exists"), atomic_directory(tmp_path / "out"):
        pass
    with pytest.raises(ValueError), atomic_directory(tmp_path / "out", replace=True):
        raise ValueError
    assert (tmp_path / "out" / "old").exists()  # a failed replace keeps the old folder
    with atomic_directory(tmp_path / "out", replace=True) as tmp:
        (tmp / "new").write_text("new")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["new"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
