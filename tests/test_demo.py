"""The demo's own choices (its end-to-end run is tested as a subprocess in tests/cli/test_end_to_end.py)."""

from __future__ import annotations

import tomllib

import pytest

from synthrelease.demo import DEMO_GENERATORS, DEMO_STEPS, demo_config, run_demo
from synthrelease.errors import InputError
from synthrelease.generators import create_generator


@pytest.mark.parametrize("generator", sorted(DEMO_GENERATORS))
def test_demo_configs_are_valid_generator_configs(generator):
    config = tomllib.loads(demo_config(generator, DEMO_STEPS[generator], seed=3))
    assert config.pop("generator") == generator
    gen = create_generator(generator, config)
    assert gen.config.steps == DEMO_STEPS[generator] and gen.config.seed == 3


def test_the_wgan_demo_draws_its_masks_from_the_shape_model():
    gen = create_generator("wgan", {k: v for k, v in tomllib.loads(demo_config("wgan", 300, 0)).items()
                                    if k != "generator"})
    assert gen.config.mask_source == "generated" and gen.config.mask_generator == "shape"
    assert gen.config.ema_decay == 0.0  # 300 steps: the last weights draw more varied images than their average
    ldm = tomllib.loads(demo_config("ldm", 600, 0))
    assert ldm["ae_steps"] == 150  # a quarter of the steps train the autoencoder


def test_an_unknown_demo_generator_is_bad_input(tmp_path):
    with pytest.raises(InputError, match="unknown"):
        run_demo(tmp_path / "D", generator="ddpm")
    assert not (tmp_path / "D").exists()
