"""The demo's own choices (its end-to-end run is tested as a subprocess in tests/cli/test_end_to_end.py)."""

from __future__ import annotations

import inspect
import tomllib
from pathlib import Path
from typing import Any

import pytest
import torch

from synthrelease.audit import set_sha256
from synthrelease.data.nnunet import read_nnunet
from synthrelease.demo import (
    DEMO_CASES,
    DEMO_GENERATORS,
    DEMO_HOLDOUT,
    DEMO_STEPS,
    _StageClock,
    demo_config,
    demo_holdout,
    demo_outcome,
    demo_precision,
    run_demo,
)
from synthrelease.errors import InputError
from synthrelease.generators import create_generator
from synthrelease.runtime import precision


@pytest.mark.parametrize("generator", sorted(DEMO_GENERATORS))
def test_demo_configs_are_valid_generator_configs(generator):
    config = tomllib.loads(demo_config(generator, DEMO_STEPS[generator], seed=3))
    assert config.pop("generator") == generator
    gen = create_generator(generator, config)
    assert gen.config.steps == DEMO_STEPS[generator] and gen.config.seed == 3


def test_the_wgan_demo_draws_its_masks_from_the_shape_model():
    config = tomllib.loads(demo_config("wgan", 300, 0))
    gen = create_generator("wgan", {k: v for k, v in config.items() if k != "generator"})
    assert gen.config.mask_source == "generated" and gen.config.mask_generator == "shape"
    assert gen.config.ema_decay == 0.0  # 300 steps: the last weights draw more varied images than their average
    assert gen.config.mode_seeking_weight > 0  # or a 300-step run ignores z
    # pooled (full-resolution modes lean towards the training maps), few modes (each keeps less of any one member)
    assert gen.config.mask == {"modes": 5, "factor": 2}
    assert not gen.config.cpu_bf16  # fp32 by default: the verdict must not depend on the instruction set
    bf16 = tomllib.loads(demo_config("wgan", 300, 0, cpu_bf16=True))  # --cpu-bf16
    assert bf16.pop("cpu_bf16") is True and {k: v for k, v in config.items() if k != "cpu_bf16"} == bf16
    ldm = tomllib.loads(demo_config("ldm", 600, 0))
    assert ldm["ae_steps"] == 150  # a quarter of the steps train the autoencoder


def test_an_unknown_demo_generator_is_bad_input(tmp_path):
    with pytest.raises(InputError, match="unknown"):
        run_demo(tmp_path / "D", generator="ddpm")
    assert not (tmp_path / "D").exists()


def test_the_demo_holds_out_enough_patients_for_the_policy_to_pass_a_private_set():
    assert demo_holdout(DEMO_CASES) == DEMO_HOLDOUT == 150  # the default cohort: 150 train, 150 unseen
    assert demo_holdout(140) == 70 and demo_holdout(8) == 4 and demo_holdout(6) == 3  # half of a smaller cohort
    assert demo_holdout(140, 40) == 40
    for bad in (0, 139, 140):
        with pytest.raises(InputError, match="holdout"):
            demo_holdout(140, bad)


def test_a_holdout_leaving_no_training_patients_is_bad_input(tmp_path):
    with pytest.raises(InputError, match="holdout"):
        run_demo(tmp_path / "D", cases=8, holdout=7)
    assert not (tmp_path / "D").exists()


def test_the_demo_wgan_recipe_is_the_committed_example_config():
    """examples/configs/wgan-shape-private-ct-cpu32.toml documents the demo's route: the two must not drift."""
    path = Path(__file__).resolve().parents[1] / "examples" / "configs" / "wgan-shape-private-ct-cpu32.toml"
    example = tomllib.loads(path.read_text())
    demo = tomllib.loads(demo_config("wgan", DEMO_STEPS["wgan"], seed=0))
    assert example.pop("generator") == demo.pop("generator") == "wgan"
    assert create_generator("wgan", {**example, "seed": 0}).config == create_generator("wgan", demo).config


# -- the demo's verdict on itself (the exit code of 'synthrelease demo') --------------------------------------------

def _outcome_summary(*, verdict: str = "pass", verified: bool | None = True, control: str | None = "fail",
                     leaks: int = 0) -> dict[str, Any]:
    """A hand-made summary: the demo set's verdict, the package's verification (None: not exported), the
    copycat control's verdict (None: not audited) and the identifiers found in the workspace."""
    failed = [] if verdict == "pass" else [{"metric": "utility.segmentation.dice_ratio", "value": 0.669,
                                            "reason": "0.669 is not >= 0.7"}]
    summary: dict[str, Any] = {"deidentification": {"planted_strings": 70, "found_in_workspace": leaks},
                               "training": {"generator": "wgan", "steps": 400},
                               "audit": {"demo": {"verdict": verdict, "failed_rules": failed}}}
    if control is not None:
        summary["audit"]["copycat-control"] = {"verdict": control, "failed_rules": []}
    if verified is not None:
        summary["release"] = {"verified": verified, "problems": [] if verified else ["manifest.json: bad signature"]}
    return summary


def test_the_demo_holds_only_when_the_set_passed_was_exported_verified_and_the_copycat_was_refused():
    ok, reason = demo_outcome(_outcome_summary())
    assert ok and "passed the gate" in reason and "verified" in reason and "copycat" in reason
    cases = {  # what broke -> what the reason must name
        "gate": (_outcome_summary(verdict="fail", verified=None), "gate failed the demo set "
                                                                  "(utility.segmentation.dice_ratio)"),
        "unverified": (_outcome_summary(verified=False), "failed verification (manifest.json: bad signature)"),
        "not exported": (_outcome_summary(verified=None), "no package was exported"),
        "copycat passed": (_outcome_summary(control="pass"), "let the copycat control through"),
        "copycat not audited": (_outcome_summary(control=None), "copycat control was not audited"),
        "leaks": (_outcome_summary(leaks=3), "3 planted identifier(s) reached the workspace"),
    }
    for what, (summary, needle) in cases.items():
        ok, reason = demo_outcome(summary)
        assert not ok and needle in reason, (what, reason)
    ok, reason = demo_outcome(_outcome_summary(verdict="fail", verified=None, control="pass", leaks=1))
    assert not ok and all(n in reason for n in ("gate failed", "copycat", "1 planted"))  # every shortfall


def test_a_demo_without_training_claims_only_the_identifier_search():
    quiet = {"deidentification": {"planted_strings": 53, "found_in_workspace": 0}}  # --train-steps 0
    ok, reason = demo_outcome(quiet)
    assert ok and "--train-steps 0" in reason
    leaked = {"deidentification": {"planted_strings": 53, "found_in_workspace": 1}}
    assert demo_outcome(leaked) == (False, "1 planted identifier(s) reached the workspace")


def test_stage_lines_carry_the_demo_time_and_the_previous_stage_duration():
    lines: list[str] = []
    times = iter([0.0, 0.4, 42.0, 101.9, 700.0, 700.0])
    stage = _StageClock(lines.append, clock=lambda: next(times))
    stage("1/3 writing")
    stage("2/3 ingesting")
    stage("3/3 searching")
    stage.finish()
    assert lines == ["[ 0:00] 1/3 writing", "[ 0:42] 2/3 ingesting (1/3 took 0:41)",
                     "[ 1:41] 3/3 searching (2/3 took 0:59)", "[11:40] finished in 11:40 (3/3 took 9:58)"]


# -- precision: fp32 by default, said, and the same result where the CPU has no native bf16 --------------------------

def test_the_demo_runs_fp32_by_default_and_says_which_precision_ran(monkeypatch):
    assert inspect.signature(run_demo).parameters["cpu_bf16"].default is False  # the verdict must not depend on
    monkeypatch.setattr(precision, "cpu_bf16_supported", lambda: True)  # ... the instruction set
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert demo_precision("wgan", False)["text"] == "fp32"
    bf16 = demo_precision("wgan", True)
    assert bf16["text"] == "bf16 autocast (CPU has native bf16)" and bf16["generator"] == bf16["utility"] == "bf16"
    assert demo_precision("ldm", True)["text"] == "generator fp32; utility models bf16 autocast (CPU has native bf16)"
    monkeypatch.setattr(precision, "cpu_bf16_supported", lambda: False)  # e.g. AVX2 only
    none = demo_precision("wgan", True)
    assert none["generator"] == none["utility"] == "fp32" and none["cpu_bf16_requested"] is True
    assert none["text"].startswith("fp32 ") and "no native bf16" in none["text"]
    assert "falls back to fp32" in none["text"]


def _stub_audits(monkeypatch, settings_seen: list[Any]) -> None:
    """The demo's audits replaced by a refusing stand-in (they are the minutes; the utility models' own precision
    fallback is tested in tests/segmentation/test_engines.py): this keeps phantoms, ingest, training, sampling."""
    import synthrelease.demo as demo_module

    def audit(ws, name, progress, settings, fail_fast=False):
        settings_seen.append(settings)
        return {"verdict": "fail", "report_html": str(ws.root / "r.html"), "failed_rules": [], "not_run": [],
                "warnings": [], "metrics": {}, "utility_precision": None}

    monkeypatch.setattr(demo_module, "_audit_summary", audit)
    monkeypatch.setattr(demo_module, "_copycat_control", lambda ws, n, seed, progress, settings: audit(ws, "c", None,
                                                                                                       settings))


def _synthetic_arrays(summary: dict[str, Any]) -> list[tuple[str, bytes, bytes]]:
    return [(c.case_id, c.image.tobytes(), c.labels.tobytes()) for c in read_nnunet(summary["synthetic"]["path"])]


TINY = {"cases": 8, "shape": 16, "n_samples": 3, "train_steps": 3, "utility_steps": 1}


@pytest.mark.usefixtures("one_torch_thread")
def test_without_native_bf16_the_demo_flag_changes_nothing_but_the_request(monkeypatch, tmp_path):
    """--cpu-bf16 on a CPU without native bf16: the same generator, samples, losses and set hash (from which the
    gating audit's seed is derived) as fp32, and it says so; where bf16 runs (detection forced on) the same flag does
    reach the generator and the audit."""
    settings: list[Any] = []
    _stub_audits(monkeypatch, settings)
    monkeypatch.setattr(precision, "cpu_bf16_supported", lambda: False)
    runs = {flag: run_demo(tmp_path / f"D-{flag}", cpu_bf16=flag, **TINY) for flag in (True, False)}
    assert [s.utility_cpu_bf16 for s in settings] == [False] * 4  # the audits are told what will run: fp32
    for summary in runs.values():
        assert summary["training"]["precision"] == "fp32"  # as run.json recorded it
        assert summary["precision"]["generator"] == summary["precision"]["utility"] == "fp32"
    assert "falls back to fp32" in runs[True]["precision"]["text"] and runs[False]["precision"]["text"] == "fp32"
    assert runs[True]["training"]["final_losses"] == runs[False]["training"]["final_losses"]
    assert _synthetic_arrays(runs[True]) == _synthetic_arrays(runs[False])
    # every file of the set alike (provenance.json names the config's and the checkpoint's hashes): the same seed
    assert set_sha256(Path(runs[True]["synthetic"]["path"])) == set_sha256(Path(runs[False]["synthetic"]["path"]))

    settings.clear()
    monkeypatch.setattr(precision, "cpu_bf16_supported", lambda: True)
    native = run_demo(tmp_path / "D-native", cpu_bf16=True, **TINY)
    assert native["training"]["precision"] == "bf16" and native["precision"]["generator"] == "bf16"
    assert native["training"]["final_losses"] != runs[False]["training"]["final_losses"]  # bf16 shows in the losses
    assert [s.utility_cpu_bf16 for s in settings] == [True, True]


def _comparable(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary without paths, times and the precision entry (it records the request)."""
    drop = {"workspace", "demo_folder", "report_html", "path", "seconds", "package", "tarball", "public_key",
            "precision"}

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in drop}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(summary)


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_without_native_bf16_the_demo_gives_the_same_audit_either_way(monkeypatch, tmp_path):
    """The whole tiny demo (audits included: about a minute each on one thread) with and without --cpu-bf16 on a CPU
    without native bf16: the same verdicts, failed rules and metrics."""
    monkeypatch.setattr(precision, "cpu_bf16_supported", lambda: False)
    runs = {flag: run_demo(tmp_path / f"D-{flag}", cpu_bf16=flag, cases=8, shape=16, n_samples=4, train_steps=2,
                           utility_steps=2) for flag in (True, False)}
    for summary in runs.values():
        assert summary["training"]["precision"] == "fp32"
        assert set(summary["audit"]["demo"]["utility_precision"].values()) == {"fp32"}
    assert runs[True]["audit"]["demo"]["metrics"] == runs[False]["audit"]["demo"]["metrics"]
    assert _comparable(runs[True]) == _comparable(runs[False])
    assert _synthetic_arrays(runs[True]) == _synthetic_arrays(runs[False])
