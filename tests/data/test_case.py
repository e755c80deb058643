"""Case, Geometry, LabelSchema and Cohort invariants."""

from __future__ import annotations

import numpy as np
import pytest

from synthrelease.data.case import Case, Geometry
from synthrelease.data.cohort import CaseRef, Cohort
from synthrelease.data.schema import BRATS_SCHEMA, CT_HEAD_NECK_SCHEMA, LabelSchema, Modality
from synthrelease.errors import DataError, GeometryError, LabelError


def test_valid_case_normalizes_dtypes(make_case):
    case = make_case()
    assert case.image.dtype == np.float32 and case.image.ndim == 4
    assert case.labels.dtype == np.uint8
    assert case.shape == (16, 18, 20)
    assert case.modality is Modality.CT


def test_three_d_image_becomes_one_channel(make_case):
    case = make_case()
    again = case.with_(image=case.image[0])
    assert again.image.shape == (1, 16, 18, 20)


@pytest.mark.parametrize(
    ("change", "error", "needle"),
    [
        (lambda c: {"labels": c.labels[:-1]}, GeometryError, "differs from label-map grid"),
        (lambda c: {"image": np.where(c.labels == 1, np.nan, c.image)}, DataError, "NaN"),
        (lambda c: {"image": np.where(c.labels == 1, np.inf, c.image)}, DataError, "infinite"),
        (lambda c: {"labels": np.where(c.labels == 1, 7, c.labels)}, LabelError, "[7]"),
        (lambda c: {"geometry": Geometry(spacing=(1.0, 0.0, 1.0))}, GeometryError, "spacing"),
        (lambda c: {"geometry": Geometry(spacing=(1.0, -1.0, 1.0))}, GeometryError, "spacing"),
        (lambda c: {"geometry": Geometry(spacing=(1, 1, 1), direction=(1, 0, 0, 0, 2, 0, 0, 0, 1))},
         GeometryError, "orthonormal"),
        (lambda c: {"geometry": Geometry(spacing=(1, 1, 1), direction=(1, 0, 0, 1, 0, 0, 0, 0, 1))},
         GeometryError, "orthonormal"),
        (lambda c: {"channel_names": ("CT", "extra")}, DataError, "channel names"),
        (lambda c: {"labels": c.labels.astype(float) + 0.5}, LabelError, "non-integer"),
    ],
)
def test_case_rejects_broken_invariants(make_case, change, error, needle):
    case = make_case()
    with pytest.raises(error) as info:
        case.with_(**change(case))
    assert needle in str(info.value)
    assert "case c000" in str(info.value)


def test_case_id_must_be_a_plain_name(make_case):
    with pytest.raises(DataError, match="separator"):
        make_case("a/b")


def test_oblique_orthonormal_direction_is_accepted(make_case):
    a = np.deg2rad(30)
    rot = (np.cos(a), -np.sin(a), 0, np.sin(a), np.cos(a), 0, 0, 0, 1)
    case = make_case().with_(geometry=Geometry(spacing=(1, 1, 1), direction=rot))
    assert np.allclose(case.geometry.direction, rot)


def test_label_volumes_use_spacing(make_case):
    case = make_case()
    vols = case.label_volumes_ml()
    n_tumour = int((case.labels == 1).sum())
    assert vols["tumour"] == pytest.approx(n_tumour * 1.5 * 1.25 * 2.0 / 1000)
    assert set(vols) == {"tumour", "bone"}


def test_schema_requires_background_and_unique_values():
    with pytest.raises(LabelError):
        LabelSchema(labels={"tumour": 1})
    with pytest.raises(LabelError):
        LabelSchema(labels={"background": 0, "a": 1, "b": 1})
    with pytest.raises(LabelError):
        LabelSchema(labels={"background": 0, "a": 1}, regions={"r": (1, 5)})


def test_brats_regions_and_dataset_json_round_trip():
    labels = np.array([[[0, 1, 2, 3]]], dtype=np.uint8)
    assert BRATS_SCHEMA.region_mask(labels, "WT").tolist() == [[[False, True, True, True]]]
    assert BRATS_SCHEMA.region_mask(labels, "TC").tolist() == [[[False, True, False, True]]]
    assert BRATS_SCHEMA.region_mask(labels, "ET").tolist() == [[[False, False, False, True]]]
    again = LabelSchema.from_dataset_json(BRATS_SCHEMA.labels_json(), BRATS_SCHEMA.regions_json())
    assert again == BRATS_SCHEMA
    assert all(isinstance(v, int) for v in BRATS_SCHEMA.labels_json().values())  # nnU-Net trains per label


def test_nnunet_region_style_labels_are_read_as_regions():
    schema = LabelSchema.from_dataset_json({"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enh": 3})
    assert schema.regions["whole"] == (1, 2, 3)
    assert set(schema.values) == {0, 1, 2, 3}


def test_cohort_is_lazy_and_ordered(make_case):
    loads: list[str] = []

    def ref(cid: str) -> CaseRef:
        def load() -> Case:
            loads.append(cid)
            return make_case(cid)

        return CaseRef(cid, load)

    cohort = Cohort([ref("b"), ref("a"), ref("c")], schema=CT_HEAD_NECK_SCHEMA, modality="ct", channel_names=["CT"])
    assert loads == [] and len(cohort) == 3
    assert cohort.case_ids == ["b", "a", "c"]
    assert cohort["a"].case_id == "a" and loads == ["a"]
    assert [c.case_id for c in cohort.subset(["c", "b"])] == ["c", "b"]
    with pytest.raises(KeyError):
        cohort["zzz"]


def test_cohort_rejects_duplicates_and_mismatched_cases(make_case):
    with pytest.raises(DataError):
        Cohort.from_cases([make_case("a"), make_case("a")])
    mixed = Cohort([CaseRef("m", lambda: make_case("m", modality="MR"))], schema=CT_HEAD_NECK_SCHEMA,
                   modality="CT", channel_names=["CT"])
    with pytest.raises(DataError, match="modality"):
        mixed[0]
