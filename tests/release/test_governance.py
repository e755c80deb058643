"""Governance of the release gate: the append-only audit log, the derived gating seed, the tuning split, and the
refusals of export that keep the gate from being shopped (explicit seeds, tuning audits, reports the log does not
know), plus the audit counts the package states."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from synthrelease.audit import audit_directories, audit_workspace, set_sha256
from synthrelease.data.ingest import IngestOptions, ingest
from synthrelease.data.phantoms.cohort import write_phantom_cohort
from synthrelease.data.workspace import Workspace
from synthrelease.errors import InputError, WorkspaceError
from synthrelease.governance import (
    AuditRecord,
    append_audit_log,
    audit_log_path,
    gating_seed,
    read_audit_log,
)
from synthrelease.policy import load_policy
from synthrelease.release import ExportRefused, export_package
from synthrelease_cli.main import cli

POLICY = """name = "gov-release"
release = true
[[rule]]
metric = "privacy.metadata.n_findings"
op = "<="
threshold = {threshold}
severity = "fail"
why = "no identifier of the real cohort in the set"
"""
ONLY = ("--only", "privacy.metadata")  # the one check the policy reads: a passing audit in a second


def run(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A phantom source (6 patients), a workspace with a tuning split, a donor workspace for set contents, and
    two policies: ``pass.toml`` and ``fail.toml`` (the same rule, a threshold no set meets)."""
    root = tmp_path_factory.mktemp("gov")
    src = write_phantom_cohort(root / "src", modality="ct", cases=6, shape=16, seed=0, fmt="nnunet")
    ingest(src, root / "ws", modality="ct", options=IngestOptions(seed=0, holdout=0.34, tuning_holdout=0.34))
    donor = write_phantom_cohort(root / "donor-src", modality="ct", cases=3, shape=16, seed=99, fmt="nnunet")
    ingest(donor, root / "donor", modality="ct", options=IngestOptions(seed=0, holdout=0.34))
    (root / "pass.toml").write_text(POLICY.format(threshold=0))
    (root / "fail.toml").write_text(POLICY.format(threshold=-1))
    return root


def new_set(root: Path, name: str) -> str:
    """A non-copycat set of its own (the donor's cases; dataset.json names the set, so each set has its own
    sha256 and its own audit history)."""
    from synthrelease.data.nnunet import dataset_json, write_nnunet_case
    from synthrelease.data.preprocess import from_model_range

    ws, donor = Workspace(root / "ws"), Workspace(root / "donor")
    out = ws.dir("synthetic") / name
    low, high = ws.intensity_reference
    cases = list(donor.real())
    for i, case in enumerate(cases):
        write_nnunet_case(case.with_(case_id=f"syn{i:04d}", image=from_model_range(case.image, low, high)), out)
    data = dataset_json(name=name, schema=ws.schema, modality=ws.modality, channel_names=ws.channel_names,
                        n_cases=len(cases))
    (out / "dataset.json").write_text(json.dumps(data, indent=2) + "\n")
    (out / "provenance.json").write_text(json.dumps({"generator": "ldm", "negative_control": False, "seed": 7}))
    return name


def audit(root: Path, name: str, *extra: object, policy: str = "pass.toml") -> Result:
    res = run("--quiet", "audit", root / "ws", "--synthetic", name, *ONLY, "--policy", root / policy, *extra)
    assert res.exit_code in (0, 1), res.output
    return res


def report(root: Path, name: str) -> dict:  # type: ignore[type-arg]
    return json.loads((root / "ws" / "audits" / name / "report.json").read_text())


# -- the audit log ---------------------------------------------------------------------------------------------------

def test_each_audit_appends_one_line_and_earlier_bytes_never_change(root: Path) -> None:
    name = new_set(root, "logged")
    log = audit_log_path(root / "ws")
    before = log.read_bytes() if log.is_file() else b""
    sizes = []
    for extra in ((), ("--seed", 5), ("--on", "tuning")):
        assert audit(root, name, *extra).exit_code == 0
        data = log.read_bytes()
        assert data.startswith(before) and data.endswith(b"\n")  # appended, never rewritten
        assert data.count(b"\n") == before.count(b"\n") + 1
        before = data
        sizes.append(len(data))
    assert sizes == sorted(sizes)
    mine = [r for r in read_audit_log(root / "ws") if r.set == name]
    digest = set_sha256(root / "ws" / "synthetic" / name)
    policy = load_policy(root / "pass.toml")
    assert [(r.gating, r.holdout, r.verdict) for r in mine] == [(True, "holdout", "pass"), (False, "holdout", "pass"),
                                                                 (False, "tuning", "pass")]
    assert [r.seed for r in mine[:2]] == [gating_seed(digest, policy.sha256), 5]
    assert all(r.set_sha256 == digest and r.policy == "gov-release" and r.policy_sha256 == policy.sha256
               and r.report == f"audits/{name}/report.json" and r.time.endswith("+00:00") for r in mine)
    path = root / "ws" / "audits" / name / "report.json"
    assert mine[-1].report_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def _record(i: int) -> AuditRecord:
    return AuditRecord(time="2000-01-01T00:00:00+00:00", set=f"s{i}", set_sha256="a" * 64, policy=None,
                       policy_sha256=None, seed=i, gating=False, holdout="holdout", verdict=None,
                       report=f"audits/s{i}/report.json", report_sha256="b" * 64)


def test_reader_ignores_a_cut_last_line_and_refuses_a_corrupt_middle_one(tmp_path: Path) -> None:
    (tmp_path / "audits").mkdir()
    assert read_audit_log(tmp_path) == ()
    log = append_audit_log(tmp_path, _record(0))
    first = log.read_bytes()
    with log.open("ab") as fh:
        fh.write(_record(1).to_line()[:30])  # a crash in the middle of an append
    assert read_audit_log(tmp_path) == (_record(0),)
    append_audit_log(tmp_path, _record(2))  # the fragment, never a record, gives way; the records stay
    assert log.read_bytes() == first + _record(2).to_line()
    assert read_audit_log(tmp_path) == (_record(0), _record(2))
    log.write_bytes(first + b'{"time": "x"}\n' + _record(2).to_line())
    with pytest.raises(InputError, match=r"log.jsonl: line 2 is not an audit record"):
        read_audit_log(tmp_path)


# -- the gating seed -------------------------------------------------------------------------------------------------

def test_gating_seed_is_the_documented_hash_and_follows_set_and_policy() -> None:
    s, p = "ab" * 32, "cd" * 32
    expected = int.from_bytes(hashlib.sha256(b"synthrelease-gate\0" + s.encode() + b"\0" + p.encode()).digest()[:4],
                              "big")
    assert gating_seed(s, p) == gating_seed(s, p) == expected
    assert gating_seed("ef" * 32, p) != expected and gating_seed(s, "ef" * 32) != expected
    assert gating_seed(s, None) != expected and 0 <= gating_seed(s, None) < 2**32


def test_audits_without_seed_use_the_derived_seed_of_each_set(root: Path) -> None:
    a, b = new_set(root, "seed-a"), new_set(root, "seed-b")
    policy = load_policy(root / "pass.toml")
    ws = Workspace(root / "ws")
    seeds = {}
    for name in (a, b):
        outcome = audit_workspace(ws, name, only=["privacy.metadata"], policy=policy)
        assert outcome.report["gating"] is True and outcome.report["holdout"] == "holdout"
        seeds[name] = outcome.report["seed"]
        assert seeds[name] == gating_seed(set_sha256(ws.dir("synthetic") / name), policy.sha256)
    assert seeds[a] != seeds[b]  # another set, another seed
    again = audit_workspace(ws, a, only=["privacy.metadata"], policy=policy)
    assert again.report["seed"] == seeds[a]  # re-running the gate changes nothing


def test_workspace_free_audit_derives_the_seed_and_writes_no_log(root: Path, tmp_path: Path) -> None:
    from synthrelease.data.nnunet import write_nnunet

    ws = Workspace(root / "ws")
    for name, cohort in (("train", ws.train()), ("holdout", ws.holdout())):
        write_nnunet(list(cohort), tmp_path / name, name=name, schema=ws.schema, modality=ws.modality,
                     channel_names=ws.channel_names)
    syn = ws.dir("synthetic") / new_set(root, "free")
    policy = load_policy(root / "pass.toml")
    out = audit_directories(tmp_path / "train", tmp_path / "holdout", syn, tmp_path / "out",
                            only=["privacy.metadata"], policy=policy)
    assert out.report["gating"] is True and out.report["seed"] == gating_seed(set_sha256(syn), policy.sha256)
    explored = audit_directories(tmp_path / "train", tmp_path / "holdout", syn, tmp_path / "out2",
                                 only=["privacy.metadata"], policy=policy, seed=3)
    assert explored.report["gating"] is False and explored.report["seed"] == 3
    assert not list(tmp_path.rglob("*.jsonl"))
    assert all(r.set != "free" for r in read_audit_log(ws))
    res = run("audit", "--train", tmp_path / "train", "--holdout", tmp_path / "holdout", "--synthetic", syn,
              "--out", tmp_path / "out3", "--on", "tuning")
    assert res.exit_code == 2 and "--on tuning needs a workspace" in res.stderr


# -- export refusals and the card ------------------------------------------------------------------------------------

def _export(root: Path, name: str, out: Path) -> Result:
    return run("--quiet", "export", root / "ws", "--synthetic", name, "--out", out, "--date", "2026-01-31")


def test_exploratory_audit_that_passes_is_refused_then_the_gating_one_exports(root: Path, tmp_path: Path) -> None:
    name = new_set(root, "explored")
    res = audit(root, name, "--seed", 11)
    assert res.exit_code == 0  # the exploratory audit passes the gate's rules...
    assert report(root, name)["gating"] is False and report(root, name)["seed"] == 11
    res = _export(root, name, tmp_path / "pkg")
    assert res.exit_code == 1 and "refused:" in res.stderr and "exploratory" in res.stderr  # ...but clears nothing
    assert f"re-run 'synthrelease audit {root / 'ws'} --synthetic {name}' without --seed" in res.stderr
    assert list(tmp_path.iterdir()) == []
    assert audit(root, name).exit_code == 0  # the gating audit
    res = _export(root, name, tmp_path / "pkg")
    assert res.exit_code == 0, res.output
    prov = json.loads((tmp_path / "pkg" / "provenance.json").read_text())
    assert prov["audit"]["gating"] is True
    assert prov["audit"]["history"] == {"n_audits": 2, "n_gating": 1, "n_failed": 0}
    card = (tmp_path / "pkg" / "README.md").read_text()
    assert "records 2 audits of exactly these files (same sha256), 1 gating and 1 exploratory; 0 of them failed" \
        in card


def test_a_gate_rerun_until_it_passed_shows_in_the_card(root: Path, tmp_path: Path) -> None:
    name = new_set(root, "shopped")
    assert audit(root, name, policy="fail.toml").exit_code == 1
    assert audit(root, name, policy="fail.toml").exit_code == 1
    assert audit(root, name).exit_code == 0
    outcome = export_package(root / "ws", name, tmp_path / "pkg", date="2026-01-31")
    card = (outcome.path / "README.md").read_text()
    assert "records 3 audits of exactly these files (same sha256), 3 gating and 0 exploratory; 2 of them failed" \
        in card
    prov = json.loads((outcome.path / "provenance.json").read_text())
    assert prov["audit"]["history"] == {"n_audits": 3, "n_gating": 3, "n_failed": 2}


def test_tuning_audit_is_exploratory_and_refused(root: Path, tmp_path: Path) -> None:
    name = new_set(root, "tuned")
    ws = Workspace(root / "ws")
    assert audit(root, name, "--on", "tuning").exit_code == 0
    rep = report(root, name)
    assert rep["gating"] is False and rep["holdout"] == "tuning"
    assert rep["data"]["n_holdout"] == len(ws.splits.tuning)
    assert rep["seed"] == gating_seed(set_sha256(ws.dir("synthetic") / name), load_policy(root / "pass.toml").sha256)
    res = _export(root, name, tmp_path / "pkg")
    assert res.exit_code == 1 and "tuning split" in res.stderr and "without --seed" in res.stderr
    assert read_audit_log(ws)[-1].holdout == "tuning" and read_audit_log(ws)[-1].gating is False
    with pytest.raises(ExportRefused, match="tuning split"):
        export_package(ws, name, tmp_path / "pkg")
    assert list(tmp_path.iterdir()) == []


def test_a_report_the_log_does_not_record_as_latest_is_refused(root: Path, tmp_path: Path) -> None:
    ws = Workspace(root / "ws")
    name = new_set(root, "original")
    assert audit(root, name).exit_code == 0
    # the same files under another name, with the passing audit folder copied in by hand
    shutil.copytree(ws.dir("synthetic") / name, ws.dir("synthetic") / "copied")
    shutil.copytree(ws.dir("audits") / name, ws.dir("audits") / "copied")
    with pytest.raises(ExportRefused, match="does not record this report as the latest gating audit"):
        export_package(ws, "copied", tmp_path / "pkg")
    # a gating report put back after a later exploratory audit of the folder
    saved = (ws.dir("audits") / name / "report.json").read_bytes()
    assert audit(root, name, "--seed", 2).exit_code == 0
    (ws.dir("audits") / name / "report.json").write_bytes(saved)
    with pytest.raises(ExportRefused, match="does not record this report as the latest gating audit"):
        export_package(ws, name, tmp_path / "pkg")
    assert list(tmp_path.iterdir()) == []


# -- the tuning split ------------------------------------------------------------------------------------------------

BEFORE = """{
  "train": [
    "sr-827c7641",
    "sr-bdc0fcd6",
    "sr-c7c2ab61",
    "sr-cc4158c8"
  ],
  "holdout": [
    "sr-343cb3e6",
    "sr-34a67675"
  ],
  "seed": 0
}
"""  # splits.json of this source, seed and holdout as written before tuning splits existed


def test_tuning_split_is_disjoint_and_leaves_the_holdout_alone(root: Path, tmp_path: Path) -> None:
    res = run("--quiet", "ingest", root / "src", "--out", tmp_path / "plain", "--modality", "ct", "--holdout", 0.34,
              "--seed", 0, "--json")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "plain" / "splits.json").read_text() == BEFORE  # no tuning split: the same bytes as before
    plain = Workspace(tmp_path / "plain")
    assert plain.splits.tuning == () and "tuning" not in plain.config["split"]
    with pytest.raises(WorkspaceError, match="has no tuning split"):
        plain.tuning()
    tuned = Workspace(root / "ws")
    s = tuned.splits
    assert len(s.tuning) == 2 and len(s.train) == 2
    assert not (set(s.train) & set(s.holdout) or set(s.train) & set(s.tuning) or set(s.holdout) & set(s.tuning))
    assert s.holdout == plain.splits.holdout  # the gate holdout is the same with or without a tuning split
    assert set(s.train) | set(s.tuning) == set(plain.splits.train)
    assert json.loads((tuned.root / "splits.json").read_text())["tuning"] == list(s.tuning)
    assert tuned.tuning().case_ids == list(s.tuning)
    assert tuned.config["split"]["n_tuning"] == 2 and tuned.config["data"]["n_cases"] == 6
    res = run("ingest", root / "src", "--out", tmp_path / "bad", "--modality", "ct", "--holdout", 0.5,
              "--tuning-holdout", 0.5)
    assert res.exit_code == 2 and "--tuning-holdout" in res.stderr and not (tmp_path / "bad").exists()


def test_tuning_split_is_reproducible(root: Path, tmp_path: Path) -> None:
    again = ingest(root / "src", tmp_path / "again", modality="ct",
                   options=IngestOptions(seed=0, holdout=0.34, tuning_holdout=0.34))
    assert (again.root / "splits.json").read_bytes() == (root / "ws" / "splits.json").read_bytes()


def test_audit_on_tuning_needs_a_tuning_split(root: Path, tmp_path: Path) -> None:
    plain = ingest(root / "src", tmp_path / "plain", modality="ct", options=IngestOptions(seed=0, holdout=0.34))
    shutil.copytree(root / "ws" / "synthetic" / new_set(root, "no-tuning"), plain.dir("synthetic") / "s")
    res = run("audit", plain.root, "--synthetic", "s", *ONLY, "--on", "tuning")
    assert res.exit_code == 2 and "has no tuning split" in res.stderr
    assert not audit_log_path(plain).exists()
