"""``shape``: the statistical shape model of label maps (the fast mask source of conditioned generators)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from synthrelease.data.cohort import Cohort
from synthrelease.errors import InputError
from synthrelease.generators import create_generator
from synthrelease.generators.data import TrainingData, shift_volume
from synthrelease.generators.shape import ShapeModelGenerator, centroid_offset, signed_distance
from synthrelease.generators.wgan import WGANGenerator


def test_signed_distance_is_negative_inside_positive_outside_and_clipped():
    mask = np.zeros((9, 9, 9), dtype=bool)
    mask[2:7, 2:7, 2:7] = True
    sd = signed_distance(mask, clip=3.0)
    assert np.all(sd[mask] < 0) and np.all(sd[~mask] > 0)
    assert sd.min() >= -3.0 and sd.max() == 3.0  # the corners are farther than 3 voxels
    assert sd[4, 4, 4] == -3.0 and sd[4, 4, 7] == 1.0
    assert np.all(signed_distance(np.zeros((4, 4, 4), dtype=bool), clip=2.0) == 2.0)


@pytest.fixture(scope="module")
def model(cohort: Cohort) -> ShapeModelGenerator:
    gen = create_generator("shape", {"modes": 3, "seed": 0}).fit(cohort)
    assert isinstance(gen, ShapeModelGenerator)
    return gen


def test_fit_keeps_at_most_n_minus_1_modes_and_the_volume_statistics(model, cohort):
    assert model.modes_.shape[0] == 3 and 0 < model.explained_ <= 1
    assert np.all(np.diff(model.sigma_.numpy()) <= 0)  # principal modes, largest variance first
    many = create_generator("shape", {"modes": 50}).fit(cohort)
    assert many.modes_.shape[0] == len(cohort) - 1
    assert many.explained_ == pytest.approx(1.0)
    data = TrainingData.from_cohort(cohort)
    tumour = (data.classes == 1).flatten(1).sum(1).double()
    assert float(model.presence_[1]) == float((tumour > 0).double().mean())
    assert float(model.log_volume_[1, 0]) == pytest.approx(float(tumour[tumour > 0].log().mean()), rel=1e-5)


def test_samples_are_label_maps_with_the_training_volumes_not_training_maps(model, cohort):
    data = TrainingData.from_cohort(cohort)
    samples = model.sample(24, seed=4)
    labels = np.stack([c.labels for c in samples])
    assert np.all(np.stack([c.image for c in samples]) == -1.0)  # a mask source: images are empty
    assert set(np.unique(labels)) <= {0, 1, 2}
    real_bone = float((data.classes == 2).flatten(1).sum(1).double().mean())
    bone = (labels == 2).reshape(24, -1).sum(1)
    tumour = (labels == 1).reshape(24, -1).sum(1)
    assert np.all(tumour > 0) and np.all(bone > 0)  # every training map holds both: presence 1
    # volumes drawn from the training log-normals (the tumour overrides some bone, as in the training maps)
    assert 0.5 * real_bone < bone.mean() < 1.5 * real_bone
    for lab in labels:  # the tumour is kept as one 26-connected component
        assert ndimage.label(lab == 1, structure=np.ones((3, 3, 3)))[1] == 1
    train = data.classes.numpy()
    assert not any(np.array_equal(s, t) for s in labels for t in train)
    assert len({s.tobytes() for s in labels}) == 24  # every sample is its own map


def test_a_zero_level_cut_would_lose_the_volumes_the_quantile_cut_keeps(model):
    """Why classes are cut at a drawn volume: the mean of the distance maps is inside bone in far fewer voxels."""
    mean_bone = model.mean_.view(2, *model.spec_.shape)[1]
    drawn = np.stack([c.labels for c in model.sample(8, seed=1)])
    assert int((mean_bone < 0).sum()) < 0.8 * (drawn == 2).reshape(8, -1).sum(1).mean()


def test_an_absent_class_is_never_drawn_and_a_sometimes_absent_one_sometimes(cohort):
    data = TrainingData.from_cohort(cohort)
    classes = data.classes.clone()
    classes[classes == 1] = 0  # no training map holds a tumour
    no_tumour = TrainingData(data.images, classes, data.spec, data.case_ids)
    gen = create_generator("shape", {"modes": 2}).fit(no_tumour)
    assert float(gen.presence_[1]) == 0.0
    assert not any(np.any(c.labels == 1) for c in gen.sample(6, seed=0))
    half = data.classes.clone()
    half[: len(half) // 2][half[: len(half) // 2] == 1] = 0
    gen = create_generator("shape", {"modes": 2}).fit(TrainingData(data.images, half, data.spec, data.case_ids))
    present = [bool(np.any(c.labels == 1)) for c in gen.sample(40, seed=0)]
    assert 0 < sum(present) < 40


def test_factor_works_on_a_coarser_grid_and_must_divide_it(cohort):
    gen = create_generator("shape", {"modes": 2, "factor": 2}).fit(cohort)
    assert gen.mean_.numel() == 2 * 8**3
    case = gen.sample(1, seed=0)[0]
    assert case.shape == cohort[0].shape and np.any(case.labels == 1)
    with pytest.raises(InputError, match="not divisible"):
        create_generator("shape", {"factor": 3}).fit(cohort)


@pytest.mark.parametrize("bad", [{"modes": 0}, {"clip": 0.0}, {"sd_scale": -1.0}, {"factor": 0},
                                 {"volume_sd_limit": 0.0}, {"largest_component": [1]}])
def test_bad_configs_are_input_errors(bad):
    with pytest.raises(InputError):
        create_generator("shape", bad)


def test_sampling_options_are_refused(model):
    with pytest.raises(InputError, match="no sampling options"):
        model.sample(1, seed=0, steps=5)


def test_wgan_takes_its_masks_from_the_shape_model(cohort):
    wgan = WGANGenerator({"steps": 2, "batch_size": 2, "channels": [4, 8], "z_dim": 8, "w_dim": 8,
                          "mapping_layers": 2, "mask_generator": "shape", "mask": {"modes": 2}}).fit(cohort)
    assert wgan.provenance() == {"mode": "conditioned", "mask_source": "generated", "mask_generator": "shape"}
    masks = wgan.mask_source_.draw(3, torch.Generator().manual_seed(0))
    cases = wgan.sample(3, seed=0)
    assert [np.any(c.labels == 1) for c in cases] == [True] * 3
    assert not torch.equal(masks[0], masks[1])


def test_align_models_position_apart_from_shape(cohort):
    """Maps that differ only by where they lie: aligned, they are one shape (no variance left for the modes), and
    the samples keep that shape at positions spread like the training ones."""
    spec = TrainingData.from_cohort(cohort).spec
    base = torch.zeros(16, 16, 16, dtype=torch.long)
    base[6:11, 5:9, 6:10] = 2
    base[7:9, 6:8, 7:9] = 1
    shifts = [(0, 0, 0), (1, 0, 0), (0, 2, 0), (0, 0, -1), (2, 1, 0), (-1, -1, 1)]
    classes = torch.stack([shift_volume(base[None], list(s), 0)[0] for s in shifts])
    data = TrainingData(torch.zeros(len(shifts), 1, 16, 16, 16), classes, spec, [f"c{i}" for i in range(6)])
    aligned = create_generator("shape", {"modes": 3}).fit(data)
    assert float(aligned.sigma_.max()) < 1e-4  # one shape once aligned
    offsets = torch.tensor(shifts, dtype=torch.float32)
    assert torch.allclose(aligned.position_[1], offsets.std(0), atol=1e-5)
    samples = [torch.from_numpy(c.labels.astype(np.int64)) for c in aligned.sample(30, seed=2)]
    assert all(int((s == 2).sum()) == int((base == 2).sum()) for s in samples)  # the same bone and tumour ...
    centres = torch.stack([centroid_offset(s) for s in samples])
    assert float(centres.std(0).min()) > 0.3  # ... at drawn positions
    plain = create_generator("shape", {"modes": 3, "align": False}).fit(data)
    assert float(plain.sigma_.max()) > 1.0 and torch.equal(plain.position_, torch.zeros(2, 3))


def test_brats_label_maps_keep_their_three_sub_regions():
    from synthrelease.data.phantoms import make_mri_phantom
    from synthrelease.data.preprocess import PreprocessConfig, preprocess_case

    cfg = PreprocessConfig.for_modality("mri", spacing=(220 / 16,) * 3, shape=(16, 16, 16))
    mri = Cohort.from_cases([preprocess_case(make_mri_phantom(i, shape=16, seed=0), cfg)[0] for i in range(6)])
    gen = create_generator("shape", {"modes": 3, "largest_component": []}).fit(mri)
    values = sorted(mri.schema.values)
    for case in gen.sample(4, seed=0):
        assert case.image.shape[0] == 4 and set(np.unique(case.labels)) <= set(values)
        assert all(np.any(case.labels == v) for v in values if v)  # every training map holds all three
