"""Every example config is valid for its generator; both sizes exist for CT and MRI."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from synthrelease.generators import available_generators, create_generator

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "examples" / "configs").glob("*.toml"))


def test_each_generator_has_cpu_and_gpu_configs_for_ct_and_mri():
    names = {p.stem for p in CONFIGS}
    for gen in set(available_generators()) - {"copycat"}:
        for modality in ("ct", "mri"):
            assert {f"{gen}-{modality}-cpu32", f"{gen}-{modality}-gpu256"} <= names, gen


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_is_valid(path):
    data = tomllib.loads(path.read_text())
    name = data.pop("generator")
    assert path.stem.startswith(name + "-")
    gen = create_generator(name, data)  # validates every field (unknown keys, types, ranges)
    assert gen.config.steps >= 1
