"""Built-in phantoms: determinism, case invariants, anatomy and contrast, distinct patients, scale, API errors."""

from __future__ import annotations

import json
from functools import cache

import numpy as np
import pytest

from synthrelease.data.case import Case
from synthrelease.data.phantoms import MRI_CHANNELS, make_ct_phantom, make_mri_phantom, make_phantom
from synthrelease.data.schema import BRATS_SCHEMA, CT_HEAD_NECK_SCHEMA, Modality
from synthrelease.errors import InputError


@cache
def ct(index: int, shape: int = 24, seed: int = 0) -> Case:
    return make_ct_phantom(index, shape=shape, seed=seed)


@cache
def mri(index: int, shape: int = 24, seed: int = 0) -> Case:
    return make_mri_phantom(index, shape=shape, seed=seed)


def ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a.ravel().astype(np.float64) - a.mean()
    b = b.ravel().astype(np.float64) - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def z_index(case: Case, z_mm: float) -> int:
    return round((z_mm - case.geometry.origin[2]) / case.geometry.spacing[2])


# -- determinism ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [make_ct_phantom, make_mri_phantom])
def test_same_seed_and_index_give_identical_bytes(make):
    a, b = make(3, shape=20, seed=7), make(3, shape=20, seed=7)
    assert a.image.tobytes() == b.image.tobytes()
    assert a.labels.tobytes() == b.labels.tobytes()


@pytest.mark.parametrize("make", [make_ct_phantom, make_mri_phantom])
def test_other_index_or_seed_gives_another_patient(make):
    base = make(0, shape=20, seed=0)
    for other in (make(1, shape=20, seed=0), make(0, shape=20, seed=1)):
        assert not np.array_equal(base.image, other.image)
        assert not np.array_equal(base.labels, other.labels)


def test_case_does_not_depend_on_cohort_size():
    alone = make_ct_phantom(2, shape=16, seed=5)
    cohort = [make_ct_phantom(i, shape=16, seed=5) for i in range(4)]
    assert cohort[2].image.tobytes() == alone.image.tobytes()
    assert [c.case_id for c in cohort] == ["phantom000", "phantom001", "phantom002", "phantom003"]


# -- case invariants -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [16, 24])
def test_ct_case_invariants(shape):
    case = ct(7, shape)
    case.validate()
    assert case.case_id == "phantom007"
    assert case.image.shape == (1, shape, shape, shape) and case.image.dtype == np.float32
    assert case.labels.shape == (shape,) * 3 and case.labels.dtype == np.uint8
    assert case.channel_names == ("CT",) and case.modality is Modality.CT and case.schema == CT_HEAD_NECK_SCHEMA
    h = 240.0 / shape
    assert case.geometry.spacing == (h, h, h)
    assert np.allclose(np.asarray(case.geometry.origin) + (shape - 1) / 2 * h, 0.0)  # centred on (0, 0, 0)
    assert case.image.min() >= -1024 and case.image.max() <= 3071
    assert case.image[0, :2, :2, :2].mean() < -900  # air in the corner
    json.dumps(case.meta)  # plain JSON types only


@pytest.mark.parametrize("shape", [16, 24])
def test_mri_case_invariants(shape):
    case = mri(7, shape)
    case.validate()
    assert case.image.shape == (4, shape, shape, shape) and case.image.dtype == np.float32
    assert case.channel_names == MRI_CHANNELS and case.modality is Modality.MR and case.schema == BRATS_SCHEMA
    assert case.geometry.spacing == (220.0 / shape,) * 3
    assert case.image.min() >= 0 and case.image.max() < 2500
    json.dumps(case.meta)


# -- labels and contrast -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("index", range(5))
def test_every_label_present_at_the_smallest_shape(index):
    assert set(np.unique(ct(index, 16).labels)) == {0, 1, 2}
    assert set(np.unique(mri(index, 16).labels)) == {0, 1, 2, 3}


@pytest.mark.parametrize("index", range(4))
def test_ct_tumour_inside_body_and_bone_bright(index):
    case = ct(index, 32)
    hu, labels = case.image[0], case.labels
    assert hu[labels == 1].min() > -500  # tumour never in air nor outside the body
    assert hu[labels == 2].mean() > 300
    assert hu[labels == 2].mean() > hu[labels == 1].mean() + 200
    assert 5.0 < case.label_volumes_ml()["tumour"] < 160.0  # a 30-52 mm lesion, lobulated


@pytest.mark.parametrize("index", range(6))
def test_ct_tumour_stands_out_from_the_tissue_around_it_at_32(index):
    """At 7.5 mm voxels the tumour must stay conspicuous (the utility proof learns it from 24 patients): its mean
    lies at least 40 HU above the median of the soft tissue in a one-voxel shell around it."""
    from scipy import ndimage

    case = ct(index, 32)
    hu, tumour = case.image[0], case.labels == 1
    shell = ndimage.binary_dilation(tumour) & (case.labels == 0) & (hu > -200) & (hu < 200)
    assert tumour.sum() >= 15
    assert hu[tumour].mean() > np.median(hu[shell]) + 40.0


@pytest.mark.parametrize("index", range(4))
def test_mri_contrasts(index):
    case = mri(index, 32)
    t1c, t1n, t2w, t2f = case.image
    lab = case.labels
    assert t1c[lab == 3].mean() > t1c[lab == 1].mean() + 200  # enhancing rim around a dark necrotic core
    assert t1c[lab == 3].mean() > t1n[lab == 3].mean() + 100  # ET enhances only with contrast
    normal = (lab == 0) & (t2f > 200)  # head tissue outside the tumour, mostly brain
    assert t2f[lab == 2].mean() > 1.5 * np.median(t2f[normal])  # oedema bright on FLAIR
    assert t2w[lab == 2].mean() > np.median(t2w[normal])
    vol = case.label_volumes_ml()
    assert vol["SNFH"] > vol["ET"] and vol["SNFH"] > vol["NCR"]


# -- face ----------------------------------------------------------------------------------------------------------
def _front_mm(case: Case, z_mm: float) -> float:
    """Most anterior (min y) body voxel, in mm, of a 3-slice slab around height ``z_mm``."""
    k = z_index(case, z_mm)
    body = case.image[0, max(k - 1, 0):k + 2] > -500
    ys = np.nonzero(body.any(axis=(0, 2)))[0]
    return case.geometry.origin[1] + float(ys.min()) * case.geometry.spacing[1]


@pytest.mark.parametrize("index", range(4))
def test_ct_face_has_a_nose(index):
    case = ct(index, 32)
    marks = case.meta["phantom"]["landmarks_mm"]
    nose, neck_z = marks["nose_tip"], marks["chin_bottom"][2] - 20.0
    assert _front_mm(case, nose[2]) < _front_mm(case, neck_z) - 30.0  # face protrudes anteriorly (-y) over the neck
    assert abs(_front_mm(case, nose[2]) - nose[1]) < 2 * case.geometry.spacing[1]  # ... at the nose tip
    k = z_index(case, nose[2])
    fronts = [_front_mm(case, case.geometry.origin[2] + z * case.geometry.spacing[2]) for z in range(3, 29)]
    assert min(fronts) <= _front_mm(case, nose[2]) + case.geometry.spacing[1]  # nothing sticks out further
    assert 0 < k < 31


# -- distinct patients, scale --------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [ct, mri])
def test_patients_are_distinguishable(make):
    a, b = make(0, 32), make(1, 32)
    assert ncc(a.image, a.image) == pytest.approx(1.0)
    assert ncc(a.image, b.image) < 0.98
    assert ncc(a.labels > 0, b.labels > 0) < 0.9


@pytest.mark.parametrize("index", range(3))
def test_anatomy_scales_with_the_grid(index):
    small, large = ct(index, 16).label_volumes_ml(), ct(index, 48).label_volumes_ml()
    assert 0.5 < small["tumour"] / large["tumour"] < 2.0
    assert 0.7 < small["bone"] / large["bone"] < 1.4
    wt_small = sum(mri(index, 16).label_volumes_ml().values())
    wt_large = sum(mri(index, 48).label_volumes_ml().values())
    assert 0.5 < wt_small / wt_large < 2.0


# -- API -----------------------------------------------------------------------------------------------------------
def test_mri_channel_subset_and_order():
    full = mri(2, 20)
    part = make_mri_phantom(2, shape=20, channels=("t2f", "t1c"))
    assert part.channel_names == ("t2f", "t1c")
    assert np.array_equal(part.image[0], full.image[3]) and np.array_equal(part.image[1], full.image[0])
    assert np.array_equal(part.labels, full.labels)


@pytest.mark.parametrize("channels", [("t1c", "dwi"), ("t1c", "t1c"), ()])
def test_bad_mri_channels_raise(channels):
    with pytest.raises(InputError, match="t1c"):
        make_mri_phantom(0, shape=16, channels=channels)


@pytest.mark.parametrize("make", [make_ct_phantom, make_mri_phantom])
def test_too_small_or_bad_request_raises(make):
    with pytest.raises(InputError, match="shape >= 16"):
        make(0, shape=15)
    with pytest.raises(InputError):
        make(-1, shape=16)
    with pytest.raises(InputError):
        make(0, shape=16, fov_mm=0.0)


def test_make_phantom_dispatches_by_modality():
    assert make_phantom("ct", 1, shape=16).image.tobytes() == make_ct_phantom(1, shape=16).image.tobytes()
    mr = make_phantom("mri", 1, shape=16, channels=("t2w",))
    assert mr.modality is Modality.MR and mr.channel_names == ("t2w",)
    assert make_phantom(Modality.MR, 1, shape=16, seed=3).labels.tobytes() == mri(1, 16, 3).labels.tobytes()
