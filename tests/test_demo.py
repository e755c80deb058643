"""The demo's own choices (its end-to-end run is tested as a subprocess in tests/cli/test_end_to_end.py)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from synthrelease.demo import DEMO_GENERATORS, DEMO_HOLDOUT, DEMO_STEPS, demo_config, demo_holdout, run_demo
from synthrelease.errors import InputError
from synthrelease.generators import create_generator


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
    assert gen.config.mask == {"modes": 10, "factor": 2}  # full-resolution modes lean towards the training maps
    assert gen.config.cpu_bf16  # bf16 where the CPU runs it natively: the demo's minutes
    fp32 = tomllib.loads(demo_config("wgan", 300, 0, cpu_bf16=False))  # --no-cpu-bf16
    assert fp32.pop("cpu_bf16") is False and {k: v for k, v in config.items() if k != "cpu_bf16"} == fp32
    ldm = tomllib.loads(demo_config("ldm", 600, 0))
    assert ldm["ae_steps"] == 150  # a quarter of the steps train the autoencoder


def test_an_unknown_demo_generator_is_bad_input(tmp_path):
    with pytest.raises(InputError, match="unknown"):
        run_demo(tmp_path / "D", generator="ddpm")
    assert not (tmp_path / "D").exists()


def test_the_demo_holds_out_enough_patients_for_the_policy_to_pass_a_private_set():
    assert demo_holdout(140) == DEMO_HOLDOUT == 60  # the default cohort: 80 train, 60 unseen
    assert demo_holdout(8) == 4 and demo_holdout(6) == 3  # a small cohort keeps half for training
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
