"""Workspace opening, splits and summary."""

from __future__ import annotations

import json

import pytest

from synthrelease.data.ingest import IngestOptions, ingest
from synthrelease.data.nnunet import write_nnunet
from synthrelease.data.summary import summarize_workspace
from synthrelease.data.workspace import Splits, Workspace
from synthrelease.errors import WorkspaceError


@pytest.fixture
def ws(tmp_path, make_case):
    cases = [make_case(f"c{i}", seed=i) for i in range(5)]
    src = write_nnunet(cases, tmp_path / "src", name="src", schema=cases[0].schema, modality="CT",
                       channel_names=("CT",))
    return ingest(src, tmp_path / "ws", modality="ct", options=IngestOptions(holdout=0.4, seed=2))


def test_layout_on_disk(ws):
    for sub in ("real", "models", "synthetic", "cache", "audits"):
        assert (ws.root / sub).is_dir()
    assert (ws.root / "real" / "dataset.json").is_file()
    records = ws.preprocessing_records()
    assert sorted(records) == sorted(ws.splits.train + ws.splits.holdout)
    assert all(set(r["labels_lost"].values()) <= {0} for r in records.values())


def test_train_and_holdout_cohorts(ws):
    assert len(ws.train()) == 3 and len(ws.holdout()) == 2
    assert set(ws.train().case_ids).isdisjoint(ws.holdout().case_ids)
    assert ws.intensity_reference == ((-200.0,), (200.0,))


def test_summary_counts_and_labels(ws):
    summary = summarize_workspace(ws)
    assert summary["splits"]["train"]["n_cases"] == 3
    tumour = summary["splits"]["train"]["labels"]["tumour"]
    assert tumour["cases_with_label"] == 3 and tumour["mean_ml"] > 0
    lo, hi = summary["splits"]["holdout"]["image_range"]
    assert -1.0 <= lo < hi <= 1.0
    json.dumps(summary)  # JSON-safe


def test_not_a_workspace_and_broken_splits(tmp_path, ws):
    with pytest.raises(WorkspaceError, match=r"workspace\.toml"):
        Workspace(tmp_path)
    (ws.root / "splits.json").write_text("{}")
    with pytest.raises(WorkspaceError, match="malformed"):
        Workspace(ws.root)
    with pytest.raises(WorkspaceError, match="both"):
        Splits(("a", "b"), ("b",), 0)
