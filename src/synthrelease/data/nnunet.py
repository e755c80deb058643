"""The nnU-Net raw layout: synthrelease's one on-disk cohort format (real splits, synthetic sets, packages).

```
<root>/dataset.json                 channel_names, labels, numTraining, file_ending (+ our image_modality, regions)
<root>/imagesTr/<case>_<XXXX>.nii.gz  one file per channel
<root>/labelsTr/<case>.nii.gz
```
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synthrelease import __version__
from synthrelease.data.case import Case
from synthrelease.data.cohort import CaseRef, Cohort
from synthrelease.data.nifti import read_nifti, write_nifti
from synthrelease.data.schema import LabelSchema, Modality
from synthrelease.errors import DataError, GeometryError, LabelError, LayoutError

__all__ = ["NnunetCaseFiles", "load_nnunet_case", "read_nnunet", "scan_nnunet", "write_nnunet", "write_nnunet_case"]

FILE_ENDING = ".nii.gz"


@dataclass(frozen=True)
class NnunetCaseFiles:
    """The files of one case of an nnU-Net raw folder."""

    case_id: str
    images: tuple[Path, ...]
    label: Path


@dataclass(frozen=True)
class NnunetIndex:
    """What ``dataset.json`` and the folder listing say about a raw folder."""

    root: Path
    channel_names: tuple[str, ...]
    schema: LabelSchema
    modality: Modality
    cases: tuple[NnunetCaseFiles, ...]


def _load_dataset_json(root: Path) -> dict[str, Any]:
    path = root / "dataset.json"
    if not path.is_file():
        raise LayoutError("has no dataset.json", where=root, fix="point to an nnU-Net raw dataset folder")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LayoutError(f"is not valid JSON ({exc.msg if hasattr(exc, 'msg') else exc})", where=path,
                          fix="repair the file") from None
    for key in ("channel_names", "labels"):
        if key not in data:
            raise LayoutError(f"lacks the {key!r} entry", where=path, fix="add it as nnU-Net v2 describes")
    return dict(data)


def _modality_of(data: dict[str, Any], channels: Sequence[str], modality: Modality | str | None) -> Modality:
    if modality is not None:
        return Modality.parse(modality)
    if "image_modality" in data:
        return Modality.parse(data["image_modality"])
    legacy = data.get("modality")  # synthrelease 0.1 wrote a string here; nnU-Net v1 a {"0": "CT"} map
    if isinstance(legacy, str):
        return Modality.parse(legacy)
    if isinstance(legacy, dict) and legacy:
        return Modality.CT if [str(v).upper() for v in legacy.values()] == ["CT"] else Modality.MR
    return Modality.CT if [c.upper() for c in channels] == ["CT"] else Modality.MR


def scan_nnunet(root: Path, *, modality: Modality | str | None = None) -> NnunetIndex:
    """Index a raw folder: every label in ``labelsTr`` must have one image per channel in ``imagesTr``."""
    root = Path(root)
    if not root.is_dir():
        raise LayoutError("folder not found", where=root, fix="check the path")
    data = _load_dataset_json(root)
    ending = data.get("file_ending", FILE_ENDING)
    if ending not in (".nii.gz", ".nii"):
        raise LayoutError(f"file_ending {ending!r} is not NIfTI", where=root / "dataset.json",
                          fix="convert the images to .nii.gz")
    channel_map = data["channel_names"]
    channels = tuple(str(channel_map[k]) for k in sorted(channel_map, key=int))
    schema = LabelSchema.from_dataset_json(data["labels"], data.get("regions"))
    labels_dir, images_dir = root / "labelsTr", root / "imagesTr"
    if not labels_dir.is_dir() or not images_dir.is_dir():
        raise LayoutError("lacks imagesTr/ or labelsTr/", where=root, fix="use the nnU-Net raw layout")
    cases = []
    for label in sorted(labels_dir.glob(f"*{ending}")):
        case_id = label.name[: -len(ending)]
        images = tuple(images_dir / f"{case_id}_{i:04d}{ending}" for i in range(len(channels)))
        missing = [p for p in images if not p.is_file()]
        if missing:
            raise LayoutError(f"label map without its image {missing[0].name}", where=label,
                              fix="add the image file or remove the label map")
        cases.append(NnunetCaseFiles(case_id, images, label))
    labelled = {c.case_id for c in cases}
    orphans = sorted(p for p in images_dir.glob(f"*{ending}") if p.name[: -len(ending) - 5] not in labelled)
    if orphans:
        raise LayoutError("image without a label map in labelsTr/", where=orphans[0],
                          fix="add its label map or move the image out of imagesTr/")
    if not cases:
        raise LayoutError("holds no cases (labelsTr/ is empty)", where=root, fix="point to a folder with cases")
    return NnunetIndex(root, channels, schema, _modality_of(data, channels, modality), tuple(cases))


def load_nnunet_case(files: NnunetCaseFiles, index: NnunetIndex, *, case_id: str | None = None) -> Case:
    """Read one case; image and label map must share one grid."""
    labels, geom = read_nifti(files.label)
    channels = []
    for path in files.images:
        arr, g = read_nifti(path)
        if arr.shape != labels.shape or not g.matches(geom):
            raise GeometryError(
                f"image grid {arr.shape} spacing {tuple(round(s, 4) for s in g.spacing)} differs from label map "
                f"{files.label.name} grid {labels.shape} spacing {tuple(round(s, 4) for s in geom.spacing)}",
                where=path, fix="resample the label map onto the image grid (nearest neighbour)")
        if not np.all(np.isfinite(arr)):
            raise DataError("holds NaN or infinite voxels", where=path, fix="repair or exclude the scan")
        channels.append(arr.astype(np.float32, copy=False))
    try:
        return Case(case_id=case_id or files.case_id, image=np.stack(channels), labels=labels, geometry=geom,
                    modality=index.modality, channel_names=index.channel_names, schema=index.schema)
    except DataError as exc:
        where = files.label if isinstance(exc, LabelError) else files.images[0]
        raise type(exc)(exc.problem, where=where, fix=exc.fix) from None


def read_nnunet(root: Path, *, modality: Modality | str | None = None, name: str | None = None) -> Cohort:
    """A lazily loaded cohort from an nnU-Net raw folder."""
    index = scan_nnunet(root, modality=modality)
    refs = [CaseRef(f.case_id, functools.partial(load_nnunet_case, f, index)) for f in index.cases]
    return Cohort(refs, schema=index.schema, modality=index.modality, channel_names=index.channel_names,
                  name=name or Path(root).name)


def dataset_json(*, name: str, schema: LabelSchema, modality: Modality, channel_names: Sequence[str],
                 n_cases: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A fresh nnU-Net v2 ``dataset.json`` (plus synthrelease's ``image_modality``, ``regions`` and version keys).

    The modality is not stored under ``modality``: nnU-Net v2 still reads that (v1) key and counts input channels as
    its length, so a string ``"CT"`` there made two channels and broke ``nnUNetv2_train``."""
    data: dict[str, Any] = {
        "name": name,
        "channel_names": {str(i): c for i, c in enumerate(channel_names)},
        "labels": schema.labels_json(),
        "numTraining": n_cases,
        "file_ending": FILE_ENDING,
        "image_modality": Modality.parse(modality).value,
    }
    if schema.regions:
        data["regions"] = schema.regions_json()
    data["synthrelease_version"] = __version__
    data.update(extra or {})
    return data


def write_nnunet_case(case: Case, root: Path) -> NnunetCaseFiles:
    """Write one case's channels and label map into ``root/imagesTr`` and ``root/labelsTr``."""
    images = tuple(
        write_nifti(case.image[i], case.geometry, root / "imagesTr" / f"{case.case_id}_{i:04d}{FILE_ENDING}")
        for i in range(case.n_channels)
    )
    label = write_nifti(case.labels, case.geometry, root / "labelsTr" / f"{case.case_id}{FILE_ENDING}")
    return NnunetCaseFiles(case.case_id, images, label)


def write_nnunet(cases: Iterable[Case], root: Path, *, name: str, schema: LabelSchema, modality: Modality | str,
                 channel_names: Sequence[str], extra: dict[str, Any] | None = None) -> Path:
    """Write cases (one at a time: ``cases`` may be a lazy cohort) and ``dataset.json``."""
    root = Path(root)
    n = 0
    for case in cases:
        if case.channel_names != tuple(channel_names):
            raise DataError(f"channels {case.channel_names} differ from {tuple(channel_names)}",
                            where=f"case {case.case_id}")
        write_nnunet_case(case, root)
        n += 1
    data = dataset_json(name=name, schema=schema, modality=Modality.parse(modality), channel_names=channel_names,
                        n_cases=n, extra=extra)
    (root / "dataset.json").write_text(json.dumps(data, indent=2) + "\n")
    return root
