"""Tests of preprocessing: resampling, reorientation, crop/pad around the body, intensity scaling and its inverse."""

from __future__ import annotations

import math

import numpy as np
import pytest

from synthrelease.data.case import IDENTITY_DIRECTION, Case, Geometry
from synthrelease.data.preprocess import (
    CT_WINDOWS,
    CaseRecord,
    Interpolation,
    PreprocessConfig,
    body_mask,
    crop_or_pad,
    from_model_range,
    normalize_intensity,
    preprocess_case,
    reference_range,
    resample_case,
    to_model_range,
)
from synthrelease.data.schema import BRATS_SCHEMA, CT_HEAD_NECK_SCHEMA, Modality
from synthrelease.errors import DataError, InputError

# -- helpers ------------------------------------------------------------------------------------------------------


def _ellipsoid(shape: tuple[int, int, int], centre: tuple[float, ...], radii: tuple[float, ...]) -> np.ndarray:
    zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    return ((zz - centre[0]) / radii[0]) ** 2 + ((yy - centre[1]) / radii[1]) ** 2 + (
        (xx - centre[2]) / radii[2]
    ) ** 2 <= 1.0


def _phys(case: Case, idx_zyx: np.ndarray) -> np.ndarray:
    """Physical (x, y, z) position of continuous index ``(Z, Y, X)``."""
    g = case.geometry
    d = np.asarray(g.direction).reshape(3, 3)
    return np.asarray(g.origin) + d @ (np.asarray(g.spacing) * np.asarray(idx_zyx, dtype=float)[::-1])


def _label_centroid(case: Case, value: int) -> np.ndarray:
    return _phys(case, np.argwhere(case.labels == value).mean(axis=0))


def _reoriented(case: Case, perm: tuple[int, int, int], signs: tuple[int, int, int]) -> Case:
    """The same physical content stored with a signed-permutation direction (index axis i -> physical perm[i])."""
    assert case.geometry.direction == IDENTITY_DIRECTION
    img = case.image.transpose(0, 3, 2, 1)  # (C, x, y, z)
    lab = case.labels.transpose(2, 1, 0)
    n_xyz = case.shape[::-1]
    sp_a, o_a = np.asarray(case.geometry.spacing), np.asarray(case.geometry.origin)
    d = np.zeros((3, 3))
    start_a = np.zeros(3)
    for i in range(3):
        d[perm[i], i] = signs[i]
        if signs[i] < 0:
            img = np.flip(img, axis=1 + perm[i])
            lab = np.flip(lab, axis=perm[i])
            start_a[perm[i]] = n_xyz[perm[i]] - 1
    img = img.transpose(0, *(1 + p for p in perm)).transpose(0, 3, 2, 1)
    lab = lab.transpose(perm).transpose(2, 1, 0)
    geo = Geometry(spacing=tuple(sp_a[list(perm)]), origin=tuple(o_a + sp_a * start_a),
                   direction=tuple(d.ravel()))
    return case.with_(image=img.copy(), labels=lab.copy(), geometry=geo)


# -- fixtures -----------------------------------------------------------------------------------------------------
CT_SHAPE = (20, 28, 32)
CT_BODY_CENTRE = (9.0, 10.0, 9.0)


@pytest.fixture
def ct_case() -> Case:
    """Head-and-neck-like CT: an off-centre body ellipsoid in air, bone and tumour inside it."""
    rng = np.random.default_rng(0)
    body = _ellipsoid(CT_SHAPE, CT_BODY_CENTRE, (6, 7, 7))
    bone = _ellipsoid(CT_SHAPE, (9, 8, 7), (3, 3, 3))
    tumour = _ellipsoid(CT_SHAPE, (10, 13, 11), (2, 2, 2))
    image = np.full(CT_SHAPE, -1000.0) + rng.normal(0, 10, CT_SHAPE)
    image[body] = 40.0 + rng.normal(0, 10, int(body.sum()))
    image[bone] = 700.0
    image[tumour] = 90.0
    labels = np.zeros(CT_SHAPE, np.uint8)
    labels[bone] = 2
    labels[tumour] = 1
    return Case("ct001", image.astype(np.float32), labels,
                Geometry(spacing=(1.0, 1.0, 2.5), origin=(-12.5, 30.0, 100.0)), Modality.CT, ("CT",),
                CT_HEAD_NECK_SCHEMA)


MR_SHAPE = (24, 24, 24)


@pytest.fixture
def mr_case() -> Case:
    """Two-channel glioma-like MRI: off-centre head; NCR (1) and ET (3) touch; SNFH (2) apart."""
    rng = np.random.default_rng(1)
    head = _ellipsoid(MR_SHAPE, (12, 10, 13), (8, 8, 8))
    tumour = _ellipsoid(MR_SHAPE, (12, 10, 14), (3, 3, 3))
    xx = np.mgrid[: MR_SHAPE[0], : MR_SHAPE[1], : MR_SHAPE[2]][2]
    labels = np.zeros(MR_SHAPE, np.uint8)
    labels[tumour & (xx < 14)] = 1
    labels[tumour & (xx >= 14)] = 3
    labels[_ellipsoid(MR_SHAPE, (12, 6, 8), (1.5, 1.5, 1.5))] = 2
    image = np.abs(rng.normal(0, 5, (2, *MR_SHAPE)))
    image[0][head] = 200.0 + rng.normal(0, 30, int(head.sum()))
    image[1][head] = 500.0 + rng.normal(0, 60, int(head.sum()))
    image[0][labels == 3] = 450.0
    image[1][labels == 1] = 900.0
    return Case("mr001", image.astype(np.float32), labels,
                Geometry(spacing=(1.0, 1.0, 1.5), origin=(5.0, -20.0, 40.0)), Modality.MR, ("T1c", "FLAIR"),
                BRATS_SCHEMA)


# -- resampling ---------------------------------------------------------------------------------------------------
def test_resample_changes_shape_keeps_extent_and_labels(ct_case: Case) -> None:
    spacing = (2.0, 1.5, 1.25)
    out = resample_case(ct_case, spacing, "linear")
    n_in = np.asarray(ct_case.shape[::-1])
    sp_in = np.asarray(ct_case.geometry.spacing)
    n_out = np.asarray(out.shape[::-1])
    assert out.geometry.spacing == spacing
    assert tuple(n_out) == tuple(round(float(n * s / t)) for n, s, t in zip(n_in, sp_in, spacing, strict=True))
    assert np.all(np.abs(n_out * spacing - n_in * sp_in) <= np.asarray(spacing))  # extent within one voxel
    centre_in = _phys(ct_case, (np.asarray(ct_case.shape) - 1) / 2)
    centre_out = _phys(out, (np.asarray(out.shape) - 1) / 2)
    assert np.allclose(centre_in, centre_out, atol=1e-4)
    assert set(np.unique(out.labels)) == set(np.unique(ct_case.labels))
    assert out.labels.dtype == np.uint8 and out.image.dtype == np.float32
    for v in (1, 2):  # labels stay where they were
        assert np.all(np.abs(_label_centroid(out, v) - _label_centroid(ct_case, v)) <= np.asarray(spacing))


@pytest.mark.parametrize("interp", [Interpolation.LINEAR, Interpolation.BSPLINE])
def test_labels_resampled_nearest_only(mr_case: Case, interp: Interpolation) -> None:
    touching = mr_case.with_(labels=np.where(mr_case.labels == 2, 0, mr_case.labels).astype(np.uint8))
    out = resample_case(touching, (0.7, 0.6, 0.9), interp)
    assert set(np.unique(out.labels).tolist()) <= {0, 1, 3}  # linear mixing of 1 and 3 would make 2
    ml_in, ml_out = touching.label_volumes_ml(), out.label_volumes_ml()
    for name in ("NCR", "ET"):
        assert ml_out[name] == pytest.approx(ml_in[name], rel=0.25)


def test_resample_raises_when_a_label_vanishes(ct_case: Case) -> None:
    labels = np.zeros(CT_SHAPE, np.uint8)
    labels[0, 0, 0] = 1  # one voxel at the corner: no sample of a 4x coarser grid lands on it
    case = ct_case.with_(labels=labels, geometry=Geometry(spacing=(1.0, 1.0, 1.0)))
    with pytest.raises(DataError, match=r"ct001.*tumour.*finer"):
        resample_case(case, (4.0, 4.0, 4.0), "linear")


def test_bspline_stays_within_input_range(ct_case: Case) -> None:
    lo, hi = float(ct_case.image.min()), float(ct_case.image.max())
    spline = resample_case(ct_case, (0.6, 0.6, 1.1), Interpolation.BSPLINE)
    linear = resample_case(ct_case, (0.6, 0.6, 1.1), Interpolation.LINEAR)
    assert spline.image.min() >= lo and spline.image.max() <= hi
    assert not np.allclose(spline.image, linear.image)  # B-spline was really used


def test_reorientation_of_flipped_permuted_direction(ct_case: Case) -> None:
    flipped = _reoriented(ct_case, perm=(1, 0, 2), signs=(-1, 1, -1))
    assert not np.allclose(flipped.geometry.direction, IDENTITY_DIRECTION)
    for v in (1, 2):  # the fixture helper keeps physical content
        assert np.allclose(_label_centroid(flipped, v), _label_centroid(ct_case, v))
    out = resample_case(flipped, None, "linear")
    assert out.geometry.direction == IDENTITY_DIRECTION
    assert out.geometry.matches(ct_case.geometry)
    assert np.array_equal(out.labels, ct_case.labels) and np.array_equal(out.image, ct_case.image)
    resampled = resample_case(flipped, (1.5, 1.5, 1.5), "linear")
    assert resampled.geometry.direction == IDENTITY_DIRECTION
    for v in (1, 2):
        assert np.all(np.abs(_label_centroid(resampled, v) - _label_centroid(ct_case, v)) <= 0.75)


def test_oblique_direction_resampled_onto_identity_grid(mr_case: Case) -> None:
    a = math.radians(30)
    rot = (math.cos(a), -math.sin(a), 0.0, math.sin(a), math.cos(a), 0.0, 0.0, 0.0, 1.0)
    oblique = mr_case.with_(geometry=Geometry(spacing=mr_case.geometry.spacing, origin=mr_case.geometry.origin,
                                              direction=rot))
    out = resample_case(oblique, (1.0, 1.0, 1.0), "linear")
    assert out.geometry.direction == IDENTITY_DIRECTION
    assert set(np.unique(out.labels)) == set(np.unique(mr_case.labels))
    for v in (1, 2, 3):
        assert np.all(np.abs(_label_centroid(out, v) - _label_centroid(oblique, v)) <= 0.5)
    assert out.image.min() >= 0.0  # corners outside the scan take the channel minimum, not 0 or garbage


# -- crop / pad ---------------------------------------------------------------------------------------------------
def test_crop_window_holds_whole_body_and_is_not_centred(ct_case: Case) -> None:
    shape = (16, 16, 16)
    body_in = body_mask(ct_case.image, "ct")
    out, start, lost = crop_or_pad(ct_case, shape, "ct")
    assert out.shape == shape
    assert body_mask(out.image, "ct").sum() == body_in.sum()  # the whole body is in the window
    assert lost == {"tumour": 0, "bone": 0}
    assert np.array_equal(np.bincount(out.labels.ravel())[1:], np.bincount(ct_case.labels.ravel())[1:])
    centred = tuple((n - w) // 2 for n, w in zip(CT_SHAPE, shape, strict=True))
    assert start != centred
    window = tuple(slice(s, s + w) for s, w in zip(centred, shape, strict=True))
    assert body_in[window].sum() < body_in.sum()  # the blindly centred window would cut the body


def test_crop_shifts_window_to_keep_labels(ct_case: Case) -> None:
    labels = np.zeros(CT_SHAPE, np.uint8)
    labels[_ellipsoid(CT_SHAPE, (9, 15, 13), (1, 1, 1))] = 1  # tumour at the edge of the body
    case = ct_case.with_(labels=labels)
    out, start, lost = crop_or_pad(case, (8, 8, 8), "ct")
    body_centred_y = int(np.floor(CT_BODY_CENTRE[1] - 3.5 + 0.5))
    assert start[1] != body_centred_y  # shifted off the body centre to take the tumour in
    assert lost["tumour"] == 0 and (out.labels == 1).sum() == (labels == 1).sum()


def test_crop_reports_lost_labels_when_they_do_not_fit(ct_case: Case) -> None:
    out, _, lost = crop_or_pad(ct_case, (8, 8, 8), "ct")
    n_in = np.bincount(ct_case.labels.ravel(), minlength=3)
    n_out = np.bincount(out.labels.ravel(), minlength=3)
    assert lost == {"tumour": int(n_in[1] - n_out[1]), "bone": int(n_in[2] - n_out[2])}
    assert lost["bone"] + lost["tumour"] > 0


@pytest.mark.parametrize(("fixture", "pad"), [("ct_case", -1024.0), ("mr_case", 0.0)])
def test_padding_value_and_content_kept(fixture: str, pad: float, request: pytest.FixtureRequest) -> None:
    case: Case = request.getfixturevalue(fixture)
    shape = tuple(n + 8 for n in case.shape)
    out, start, lost = crop_or_pad(case, shape, case.modality)
    assert all(s < 0 for s in start)
    inner = tuple(slice(-s, -s + n) for s, n in zip(start, case.shape, strict=True))
    assert np.array_equal(out.image[(slice(None), *inner)], case.image)
    assert np.array_equal(out.labels[inner], case.labels)
    outside = np.ones(shape, bool)
    outside[inner] = False
    assert np.all(out.image[:, outside] == pad) and np.all(out.labels[outside] == 0)
    assert sum(lost.values()) == 0


@pytest.mark.parametrize("shape", [(12, 12, 12), (30, 20, 40)])
def test_marked_voxel_keeps_physical_position(ct_case: Case, shape: tuple[int, int, int]) -> None:
    image = ct_case.image.copy()
    mark = (9, 11, 10)
    image[(0, *mark)] = 3000.0
    case = ct_case.with_(image=image)
    out, _, _ = crop_or_pad(case, shape, "ct")
    found = np.argwhere(out.image[0] == 3000.0)
    assert len(found) == 1
    assert np.allclose(_phys(out, found[0]), _phys(case, mark))


# -- intensities --------------------------------------------------------------------------------------------------
def test_ct_window_maps_and_clips(ct_case: Case) -> None:
    values = np.array([-1000.0, -200.0, 0.0, 100.0, 200.0, 1500.0], np.float32)
    image = np.resize(values, CT_SHAPE).astype(np.float32)
    case = ct_case.with_(image=image)
    out, lows, highs = normalize_intensity(case, PreprocessConfig())
    assert lows == (-200.0,) and highs == (200.0,)
    got = {float(v): float(out.image[0][image == v][0]) for v in values}
    assert got == pytest.approx({-1000.0: -1.0, -200.0: -1.0, 0.0: 0.0, 100.0: 0.5, 200.0: 1.0, 1500.0: 1.0})
    wide, _, _ = normalize_intensity(case, PreprocessConfig.for_modality("ct", ct_window="wide"))
    assert float(wide.image[0][image == -1000.0][0]) == pytest.approx(-1.0)
    assert float(wide.image[0][image == 1500.0][0]) == pytest.approx(1.0)
    assert float(wide.image[0][image == 100.0][0]) == pytest.approx(0.1)


def test_mri_percentile_scaling(mr_case: Case) -> None:
    image = mr_case.image.copy()
    image[:, 0:3, 20:24, 0:4] = 300.0  # a bright artefact outside the head (not part of the largest component)
    mr_case = mr_case.with_(image=image)
    out, lows, highs = normalize_intensity(mr_case, PreprocessConfig())
    mask = body_mask(mr_case.image, "mri")
    assert not mask[0:3, 20:24, 0:4].any()
    assert out.image.dtype == np.float32
    assert out.image.min() >= -1.0 and out.image.max() <= 1.0
    assert np.all(out.image[:, ~mask] == -1.0)
    for c in range(2):
        # (clipping the tail moves the interpolated percentile of the output a little inwards)
        assert np.percentile(out.image[c][mask], 99.9) == pytest.approx(1.0, abs=5e-3)
        assert np.percentile(out.image[c][mask], 0.1) == pytest.approx(-1.0, abs=5e-3)
        assert lows[c] == pytest.approx(np.percentile(mr_case.image[c][mask], 0.1))
        assert highs[c] == pytest.approx(np.percentile(mr_case.image[c][mask], 99.9))
    assert highs[1] > highs[0]  # per channel


def test_body_mask_largest_component_holes_filled(ct_case: Case, mr_case: Case) -> None:
    image = ct_case.image.copy()
    body = _ellipsoid(CT_SHAPE, CT_BODY_CENTRE, (6, 7, 7))
    image[0][_ellipsoid(CT_SHAPE, CT_BODY_CENTRE, (2, 2, 2))] = -1000.0  # an air cavity inside
    image[0, 15:18, 24:27, 27:30] = 0.0  # a separate small object
    mask = body_mask(image, "ct")
    assert np.array_equal(mask, body)
    head = _ellipsoid(MR_SHAPE, (12, 10, 13), (8, 8, 8))
    overlap = (body_mask(mr_case.image, "mr") & head).sum() / head.sum()
    assert overlap > 0.97 and body_mask(mr_case.image, "mr").sum() <= head.sum() * 1.05


def test_model_range_round_trip() -> None:
    rng = np.random.default_rng(2)
    lows, highs = (-200.0, 12.5), (200.0, 873.0)
    x = np.stack([rng.uniform(lo, hi, (6, 7, 8)) for lo, hi in zip(lows, highs, strict=True)]).astype(np.float32)
    y = to_model_range(x, lows, highs)
    assert y.min() >= -1.0 and y.max() <= 1.0 and y.dtype == np.float32
    assert np.allclose(from_model_range(y, lows, highs), x, rtol=0, atol=1e-3)
    assert np.allclose(to_model_range(np.array([-500.0, 500.0]).reshape(1, 2, 1, 1), [-200], [200]).ravel(),
                       [-1.0, 1.0])
    assert np.allclose(from_model_range(np.array([-3.0, 0.0, 3.0]).reshape(1, 3, 1, 1), [-200], [200]).ravel(),
                       [-200.0, 0.0, 200.0])
    with pytest.raises(InputError):
        to_model_range(x, (0.0,), (1.0,))  # one range for two channels


# -- whole pipeline -----------------------------------------------------------------------------------------------
def test_preprocess_case_end_to_end(ct_case: Case) -> None:
    flipped = _reoriented(ct_case, perm=(0, 2, 1), signs=(1, -1, 1))
    config = PreprocessConfig.for_modality("ct", spacing=(1.5, 1.5, 1.5), shape=(24, 16, 16))
    out, record = preprocess_case(flipped, config)
    assert out.shape == (24, 16, 16) and out.image.dtype == np.float32 and out.labels.dtype == np.uint8
    assert out.image.min() >= -1.0 and out.image.max() <= 1.0
    assert out.geometry.direction == IDENTITY_DIRECTION and out.geometry.spacing == (1.5, 1.5, 1.5)
    resampled = resample_case(flipped, (1.5, 1.5, 1.5), "linear")
    assert record.resampled_shape == resampled.shape
    assert np.allclose(out.geometry.origin, _phys(resampled, record.crop_start))
    assert record.intensity_low == (-200.0,) and record.intensity_high == (200.0,)
    assert record.labels_lost == {"tumour": 0, "bone": 0}
    for v in (1, 2):
        assert np.all(np.abs(_label_centroid(out, v) - _label_centroid(ct_case, v)) <= 0.75)
    assert CaseRecord.from_dict(record.to_dict()) == record
    assert reference_range([record, record]) == ((-200.0,), (200.0,))


def test_preprocess_mri_records_and_reference_range(mr_case: Case) -> None:
    config = PreprocessConfig.for_modality("mri", shape=(16, 16, 16))
    out, rec = preprocess_case(mr_case, config)
    assert out.image.min() >= -1.0 and out.image.max() <= 1.0 and len(rec.intensity_low) == 2
    brighter = mr_case.with_(image=mr_case.image * 2.0)
    _, rec2 = preprocess_case(brighter, config)
    _, rec3 = preprocess_case(mr_case.with_(image=mr_case.image * 3.0), config)
    lows, highs = reference_range([rec, rec2, rec3])
    assert lows == pytest.approx(rec2.intensity_low) and highs == pytest.approx(rec2.intensity_high)
    assert highs[0] == pytest.approx(2 * rec.intensity_high[0], rel=1e-4)
    with pytest.raises(InputError):
        reference_range([])


# -- configuration ------------------------------------------------------------------------------------------------
def test_config_round_trip_and_toml_safe() -> None:
    config = PreprocessConfig.for_modality("CT", spacing=(1, 1, 2.5), shape=(32, 64, 64), ct_window="wide",
                                           interpolation="bspline")
    assert config.ct_window == CT_WINDOWS["wide"] and config.interpolation is Interpolation.BSPLINE
    d = config.to_dict()
    assert PreprocessConfig.from_dict(d) == config
    in_workspace = {**d, "reference": {"low": [-1000.0], "high": [1000.0]}}  # workspace.toml keeps it beside
    assert PreprocessConfig.from_dict(in_workspace) == config

    def toml_safe(v: object) -> bool:
        if isinstance(v, list):
            return all(toml_safe(x) for x in v)
        return isinstance(v, str | int | float) and not isinstance(v, bool) and v is not None

    assert all(isinstance(k, str) and toml_safe(v) for k, v in d.items())
    default = PreprocessConfig()
    assert "target_spacing" not in default.to_dict() and PreprocessConfig.from_dict(default.to_dict()) == default
    mri = PreprocessConfig.for_modality("mri", shape=(16, 16, 16))
    assert mri.mri_percentiles == (0.1, 99.9) and mri.target_shape == (16, 16, 16)
    assert PreprocessConfig.for_modality("ct", ct_window=(-100, 300)).ct_window == (-100.0, 300.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"target_spacing": (0.0, 1.0, 1.0)},
        {"target_spacing": (-1.0, 1.0, 1.0)},
        {"target_spacing": (1.0, 1.0)},
        {"target_shape": (4, 16, 16)},
        {"target_shape": (16.5, 16, 16)},
        {"ct_window": (200.0, -200.0)},
        {"ct_window": (100.0, 100.0)},
        {"mri_percentiles": (50.0, 50.0)},
        {"mri_percentiles": (-1.0, 99.0)},
        {"mri_percentiles": (1.0, 101.0)},
        {"interpolation": "cubic"},
    ],
)
def test_bad_config_raises_input_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(InputError) as err:
        PreprocessConfig(**kwargs)  # type: ignore[arg-type]
    assert err.value.fix


def test_bad_config_from_dict_and_for_modality() -> None:
    with pytest.raises(InputError, match="fix"):
        PreprocessConfig.from_dict({"target_spacing": [1, 1, 1], "spacing": [1, 1, 1]}, strict=True)
    with pytest.raises(InputError, match="fix"):
        PreprocessConfig.from_dict({"target_spacing": [1, 1, 0]})
    with pytest.raises(InputError, match="fix"):
        PreprocessConfig.for_modality("ct", ct_window="bone")
