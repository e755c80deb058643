"""One contract suite over every registered generator (scikit-learn's parametrize_with_checks, our way)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from synthrelease.data.cohort import Cohort
from synthrelease.data.phantoms import make_ct_phantom
from synthrelease.data.preprocess import PreprocessConfig, preprocess_case
from synthrelease.errors import InputError, SynthReleaseError
from synthrelease.generators import available_generators, create_generator, get_generator_class
from synthrelease.generators.base import Generator

# The smallest configs that exercise each generator end to end in seconds.
_DIFFUSION = {"channels": [8, 16], "attention_levels": [False, False], "norm_num_groups": 4,
              "num_train_timesteps": 20, "sample_steps": 3}
TINY: dict[str, dict[str, Any]] = {
    "copycat": {},
    "ldm": {"ae_steps": 1, "ae_channels": [8, 16], "latent_channels": 3, "norm_groups": 8, "unet_channels": [16, 32],
            "unet_attention": [False, True], "head_channels": 16},
    "ddpm": _DIFFUSION,
    "mask": _DIFFUSION,
    "shape": {"modes": 2},
    "wgan": {"channels": [4, 8], "z_dim": 8, "w_dim": 8, "mapping_layers": 2, "mask_source": "train"},
}


def tiny_config(name: str) -> dict[str, Any]:
    return {"steps": 2, "batch_size": 2, "checkpoint_every": 1, **TINY.get(name, {})}


@pytest.fixture(scope="module")
def cohort() -> Cohort:
    cfg = PreprocessConfig.for_modality("ct", spacing=(15.0, 15.0, 15.0), shape=(16, 16, 16))
    return Cohort.from_cases([preprocess_case(make_ct_phantom(i, shape=16, seed=3), cfg)[0] for i in range(4)])


@pytest.fixture(scope="module")
def fitted(cohort: Cohort) -> dict[str, Generator]:
    return {name: create_generator(name, tiny_config(name)).fit(cohort) for name in available_generators()}


def test_registry_names_match_classes():
    for name in available_generators():
        cls = get_generator_class(name)
        assert issubclass(cls, Generator) and cls.name == name
    with pytest.raises(InputError, match="unknown generator"):
        get_generator_class("nope")


@pytest.mark.parametrize("name", available_generators())
def test_init_only_stores_config(name):
    gen = create_generator(name, tiny_config(name))
    assert gen.config.steps == 2
    assert not hasattr(gen, "spec_")
    with pytest.raises(SynthReleaseError, match="not trained"):
        gen.sample(1, seed=0)


@pytest.mark.parametrize("name", available_generators())
def test_unknown_config_key_is_bad_input(name):
    with pytest.raises(InputError, match="unknown config keys"):
        create_generator(name, {"no_such_key": 1})
    with pytest.raises(InputError):
        create_generator(name, {"steps": 0})


@pytest.mark.parametrize("name", available_generators())
def test_samples_are_cases_on_the_training_grid(name, fitted, cohort):
    cases = fitted[name].sample(3, seed=5)
    assert [c.case_id for c in cases] == ["syn0000", "syn0001", "syn0002"]
    first = cohort[0]
    for case in cases:
        assert case.shape == first.shape and case.channel_names == first.channel_names
        assert case.geometry.spacing == first.geometry.spacing
        assert set(np.unique(case.labels)) <= set(cohort.schema.values)
        assert case.image.min() >= -1.0 and case.image.max() <= 1.0


@pytest.mark.parametrize("name", available_generators())
def test_same_seed_same_samples_and_batches_compose(name, fitted):
    gen = fitted[name]
    a = gen.sample(4, seed=11, batch=2)
    b = gen.sample(2, seed=11, batch=2) + gen.sample(2, seed=11, batch=2, offset=2)
    c = gen.sample(4, seed=12, batch=2)
    assert all(np.array_equal(x.image, y.image) and np.array_equal(x.labels, y.labels) for x, y in zip(a, b,
                                                                                                       strict=True))
    assert [x.case_id for x in b] == [x.case_id for x in a]
    assert any(not (np.array_equal(x.image, y.image) and np.array_equal(x.labels, y.labels))
               for x, y in zip(a, c, strict=True))  # another seed, other samples (mask: other label maps)


@pytest.mark.parametrize("name", available_generators())
def test_save_load_round_trip(name, fitted, tmp_path):
    gen = fitted[name]
    path = gen.save(tmp_path / "m.pt")
    again = Generator.load(path)
    assert type(again) is type(gen) and again.config == gen.config
    x, y = gen.sample(2, seed=3)[0], again.sample(2, seed=3)[0]
    assert np.array_equal(x.image, y.image) and np.array_equal(x.labels, y.labels)


@pytest.mark.parametrize("name", available_generators())
def test_provenance_is_json_and_names_the_mask_source(name, fitted):
    prov = fitted[name].provenance()
    json.dumps(prov)
    assert prov.get("mode") == "mask" or prov["mask_source"] in {"joint", "generated", "train"}
    assert isinstance(fitted[name].negative_control, bool)
    assert fitted[name].negative_control == (name == "copycat")


@pytest.mark.parametrize("name", available_generators())
def test_resume_equals_uninterrupted(name, cohort, tmp_path):
    cfg = {**tiny_config(name), "steps": 4, "checkpoint_every": 2}
    full = create_generator(name, cfg).fit(cohort, run_dir=tmp_path / "full")
    create_generator(name, {**cfg, "steps": 2}).fit(cohort, run_dir=tmp_path / "part")
    resumed = create_generator(name, cfg).fit(cohort, run_dir=tmp_path / "part", resume=True)
    for key, module in full.modules().items():
        other = resumed.modules()[key].state_dict()
        for pname, tensor in module.state_dict().items():
            assert np.array_equal(tensor.numpy(), other[pname].numpy()), (key, pname)
    assert np.array_equal(full.sample(1, seed=0)[0].image, resumed.sample(1, seed=0)[0].image)
