"""Write a phantom cohort to disk in a source layout, with fake PHI planted where real data carries it.

- ``nnunet``: nnU-Net raw folder; case names hold the fake record number; NIfTI ``descrip``/``aux_file``/
  ``intent_name``/``db_name`` hold fake identifiers.
- ``brats`` / ``brats2021``: BraTS case folders (2023 or 2021 naming); the case number is the fake record number.
- ``dicom``: one folder per patient (named after the fake patient) with an image series and an RTSTRUCT (or
  DICOM-SEG), every file carrying fake names, IDs, dates, institution, UIDs and a private tag.

``PLANTED_PHI.json`` at the root lists, per case, every planted string: a workspace made from this folder must
contain none of them.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from synthrelease.data.brats import BRATS_CHANNELS
from synthrelease.data.case import Case
from synthrelease.data.nifti import write_nifti
from synthrelease.data.nnunet import dataset_json, write_nnunet_case
from synthrelease.data.parallel import WorkerPool, resolve_workers
from synthrelease.data.phantoms.ct import make_ct_phantom
from synthrelease.data.phantoms.identity import FakeIdentity, make_identity
from synthrelease.data.phantoms.mri import make_mri_phantom
from synthrelease.data.schema import Modality
from synthrelease.errors import InputError
from synthrelease.runtime.fs import atomic_directory

__all__ = ["PhantomFormat", "write_phantom_cohort"]

PLANTED_PHI_FILE = "PLANTED_PHI.json"


class PhantomFormat(StrEnum):
    NIFTI = "nifti"  # nnunet for CT, brats (2023) for MRI
    NNUNET = "nnunet"
    BRATS = "brats"
    BRATS2021 = "brats2021"
    DICOM = "dicom"


def _plant_nifti_header(path: Path, identity: FakeIdentity) -> None:
    """Put fake identifiers into the free-text NIfTI header fields (as careless exports do)."""
    img = nib.Nifti1Image.from_filename(str(path))
    header = img.header
    header["descrip"] = f"{identity.patient_name} {identity.patient_id}".encode()[:79]
    header["aux_file"] = identity.accession_number.encode()[:23]
    header["intent_name"] = identity.birth_date.encode()[:15]
    header["db_name"] = identity.patient_id.encode()[:17]
    data = np.asanyarray(img.dataobj)
    out = nib.Nifti1Image(data, img.affine, header)
    nib.save(out, str(path))


def _write_nnunet_case(case: Case, root: Path, name: str, identity: FakeIdentity) -> None:
    files = write_nnunet_case(case.with_(case_id=name), root)
    for path in (*files.images, files.label):
        _plant_nifti_header(path, identity)


_BRATS = {2023: {"t1c": "-t1c", "t1n": "-t1n", "t2w": "-t2w", "t2f": "-t2f", "seg": "-seg"},
          2021: {"t1c": "_t1ce", "t1n": "_t1", "t2w": "_t2", "t2f": "_flair", "seg": "_seg"}}


def _write_brats_case(case: Case, root: Path, name: str, identity: FakeIdentity, naming: int) -> None:
    folder = root / name
    suffix = _BRATS[naming]
    labels = case.labels.copy()
    if naming == 2021:
        labels[labels == 3] = 4
    paths = [write_nifti(case.image[i], case.geometry, folder / f"{name}{suffix[c]}.nii.gz")
             for i, c in enumerate(case.channel_names)]
    paths.append(write_nifti(labels, case.geometry, folder / f"{name}{suffix['seg']}.nii.gz"))
    for path in paths:
        _plant_nifti_header(path, identity)


def _write_case(i: int, modality: Modality, shape: int, seed: int, fmt: PhantomFormat,
                channels: tuple[str, ...] | None, dicom_labels: str, root: Path
                ) -> tuple[str, dict[str, Any], tuple[Any, Modality, tuple[str, ...]]]:
    """Make and write phantom patient ``i`` (in process or in a worker): its folder/case name, its planted-PHI
    entry and what ``dataset.json`` needs (schema, modality, channel names)."""
    case = (make_ct_phantom(i, shape=shape, seed=seed) if modality is Modality.CT
            else make_mri_phantom(i, shape=shape, seed=seed, channels=channels or BRATS_CHANNELS))
    ident = make_identity(i, seed)
    if fmt is PhantomFormat.NNUNET:
        name = f"HN_{ident.patient_id}" if modality is Modality.CT else f"GLI_{ident.patient_id}"
        _write_nnunet_case(case, root, name, ident)
    elif fmt in (PhantomFormat.BRATS, PhantomFormat.BRATS2021):
        digits = "".join(ch for ch in ident.patient_id if ch.isdigit())
        naming = 2023 if fmt is PhantomFormat.BRATS else 2021
        name = f"BraTS-GLI-{digits}-000" if naming == 2023 else f"BraTS2021_{digits}"
        _write_brats_case(case, root, name, ident, naming)
    else:
        from synthrelease.data.dicom.write import write_dicom_case

        family, given = ident.patient_name.split("^")
        name = f"{family}_{given}_{ident.patient_id}"
        write_dicom_case(case, root / name, ident, labels="seg" if dicom_labels == "seg" else "rtstruct",
                         uid_seed=seed * 100003 + i)
    entry = {"identity": ident.to_dict(), "strings": [name, *ident.planted_strings()]}
    return name, entry, (case.schema, case.modality, case.channel_names)


def write_phantom_cohort(out: Path, *, modality: Modality | str, cases: int, shape: int = 32, seed: int = 0,
                         fmt: PhantomFormat | str = PhantomFormat.NIFTI, channels: tuple[str, ...] | None = None,
                         dicom_labels: str = "rtstruct", workers: int | None = None) -> Path:
    """Write ``cases`` phantom patients to the new folder ``out`` (atomically). Same seed -> same bytes.

    ``workers``: processes that make and write the patients (1: in this process; ``None`` or 0: auto, see
    ``synthrelease.data.parallel.resolve_workers``); the bytes are the same whatever the count.
    """
    modality = Modality.parse(modality)
    fmt = PhantomFormat(fmt)
    if dicom_labels not in ("rtstruct", "seg"):
        raise InputError(f"--dicom-labels {dicom_labels!r} is unknown", fix="use rtstruct or seg")
    if cases < 1:
        raise InputError(f"--cases {cases} must be at least 1", fix="ask for one or more cases")
    if fmt is PhantomFormat.NIFTI:
        fmt = PhantomFormat.NNUNET if modality is Modality.CT else PhantomFormat.BRATS
    if fmt in (PhantomFormat.BRATS, PhantomFormat.BRATS2021) and modality is not Modality.MR:
        raise InputError("the BraTS layout holds MRI", fix="use --modality mri or --format nnunet|dicom")
    n_workers = resolve_workers(workers, cases)
    planted: dict[str, Any] = {}
    with atomic_directory(Path(out)) as tmp, WorkerPool(n_workers) as pool:
        tasks = [(i, modality, shape, seed, fmt, channels, dicom_labels, tmp) for i in range(cases)]
        first = None
        for name, entry, meta in pool.map(_write_case, tasks):
            first = first or meta
            planted[name] = entry
        if fmt is PhantomFormat.NNUNET and first is not None:
            schema, case_modality, channel_names = first
            data = dataset_json(name="phantoms", schema=schema, modality=case_modality, channel_names=channel_names,
                                n_cases=cases)
            (tmp / "dataset.json").write_text(json.dumps(data, indent=2) + "\n")
        (tmp / PLANTED_PHI_FILE).write_text(json.dumps(planted, indent=2) + "\n")
    return Path(out)
