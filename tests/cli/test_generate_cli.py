"""``train`` and ``sample`` through the CLI: runs, sets, provenance, determinism and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from synthrelease.data.ingest import IngestOptions, ingest
from synthrelease.data.nnunet import read_nnunet
from synthrelease.data.phantoms.cohort import write_phantom_cohort
from synthrelease_cli.main import cli


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    src = write_phantom_cohort(root / "src", modality="ct", cases=5, shape=16, seed=0, fmt="nnunet")
    return ingest(src, root / "ws", modality="ct", options=IngestOptions(seed=0)).root


def _files(path):
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_train_then_sample_writes_a_set_in_hu(ws):
    res = run("train", ws, "--generator", "copycat", "--name", "cc")
    assert res.exit_code == 0, res.output
    run_json = json.loads((ws / "models" / "cc" / "run.json").read_text())
    assert run_json["status"] == "complete" and run_json["negative_control"] is True
    res = run("sample", ws, "--model", "cc", "--n", 3, "--seed", 4, "--name", "s1", "--batch", 2)
    assert res.exit_code == 0, res.output
    out = ws / "synthetic" / "s1"
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["generator"] == "copycat" and prov["negative_control"] is True and prov["seed"] == 4
    assert len(prov["checkpoint_sha256"]) == 64 and prov["mask_source"] == "train"
    cohort = read_nnunet(out)
    assert len(cohort) == 3
    case = cohort[0]
    assert case.image.min() >= -200.0 - 1e-3 and case.image.max() <= 200.0 + 1e-3  # back on the HU window
    assert case.image.max() > 100.0  # bone, in HU
    res = run("sample", ws, "--model", "cc", "--n", 3, "--seed", 4, "--name", "s2", "--batch", 2)
    assert res.exit_code == 0
    a, b = _files(out), _files(ws / "synthetic" / "s2")
    assert a.pop("dataset.json").replace(b'"s1"', b'"s2"') == b.pop("dataset.json")  # differs by set name only
    assert a == b  # same seed -> same bytes (volumes, label maps, provenance)


def test_sample_refuses_existing_set_and_unknown_model(ws):
    run("train", ws, "--generator", "copycat", "--name", "cc2")
    assert run("sample", ws, "--model", "cc2", "--n", 1, "--seed", 0, "--name", "dup").exit_code == 0
    res = run("sample", ws, "--model", "cc2", "--n", 1, "--seed", 0, "--name", "dup")
    assert res.exit_code == 2 and "already exists" in res.stderr
    res = run("sample", ws, "--model", "ghost", "--n", 1, "--seed", 0, "--name", "g")
    assert res.exit_code == 2 and "no trained model" in res.stderr
    assert not (ws / "synthetic" / "g").exists()


def test_bad_configs_and_wrong_workspace_exit_2(ws, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("steps = 'many'\n")
    res = run("train", ws, "--generator", "copycat", "--config", bad, "--name", "b1")
    assert res.exit_code == 2 and "steps" in res.stderr
    bad.write_text("no_such_option = 1\n")
    res = run("train", ws, "--generator", "copycat", "--config", bad, "--name", "b2")
    assert res.exit_code == 2 and "unknown config keys" in res.stderr
    bad.write_text("this is [not toml\n")
    res = run("train", ws, "--generator", "copycat", "--config", bad, "--name", "b3")
    assert res.exit_code == 2 and "not valid TOML" in res.stderr
    res = run("train", ws, "--generator", "copycat", "--config", tmp_path / "missing.toml", "--name", "b4")
    assert res.exit_code == 2 and "not found" in res.stderr
    bad.write_text('generator = "ldm"\n')
    res = run("train", ws, "--generator", "copycat", "--config", bad, "--name", "b5")
    assert res.exit_code == 2 and "for generator 'ldm'" in res.stderr
    res = run("train", tmp_path, "--generator", "copycat")
    assert res.exit_code == 2 and "not a synthrelease workspace" in res.stderr
    res = run("train", ws, "--generator", "nope")
    assert res.exit_code == 2 and "unknown generator" in res.stderr
    res = run("train", ws, "--generator", "copycat", "--name", "../escape")
    assert res.exit_code == 2 and "plain name" in res.stderr
    assert not any((ws / "models").glob("b*"))


def test_existing_run_needs_resume(ws):
    assert run("train", ws, "--generator", "copycat", "--name", "r1").exit_code == 0
    res = run("train", ws, "--generator", "copycat", "--name", "r1")
    assert res.exit_code == 2 and "--resume" in res.stderr
    res = run("train", ws, "--generator", "copycat", "--name", "r1", "--resume")
    assert res.exit_code == 0, res.output
    res = run("train", ws, "--generator", "copycat", "--name", "fresh", "--resume")
    assert res.exit_code == 2 and "no run to resume" in res.stderr


def test_sets_hold_no_training_case_id(ws):
    res = run("train", ws, "--generator", "copycat", "--name", "ids")
    assert res.exit_code == 0
    assert run("sample", ws, "--model", "ids", "--n", 2, "--seed", 1, "--name", "ids").exit_code == 0
    train_ids = json.loads((ws / "splits.json").read_text())["train"]
    blob = b"".join(_files(ws / "synthetic" / "ids").values())
    assert not any(cid.encode() in blob for cid in train_ids)
    assert np.isfinite(read_nnunet(ws / "synthetic" / "ids")[1].image).all()
