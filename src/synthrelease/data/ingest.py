"""Ingest: protected source folder -> de-identified, pseudonymized, preprocessed private workspace.

What reaches the workspace: voxel arrays and grids written into fresh NIfTI headers, random pseudonyms in place of
every source name, and (for DICOM) a de-identified summary of technical acquisition attributes. Nothing else of
the source headers is ever copied. The pseudonym <-> source mapping is written only when asked for
(``keep_id_map``), and only inside the workspace.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synthrelease import __version__
from synthrelease.data.case import Case
from synthrelease.data.nnunet import dataset_json, write_nnunet_case
from synthrelease.data.parallel import WorkerPool, picklable, resolve_workers
from synthrelease.data.preprocess import PreprocessConfig, preprocess_case, reference_range
from synthrelease.data.pseudonyms import draw_pseudonyms, split_patients
from synthrelease.data.sources import Layout, Source, open_source
from synthrelease.data.workspace import SUBDIRS, Splits, Workspace, write_workspace_toml
from synthrelease.errors import InputError, LabelError
from synthrelease.runtime.fs import atomic_directory

__all__ = ["IngestOptions", "carve_tuning", "ingest", "plan_grid"]

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
"""``progress(task, done, total)``: called as work advances (the CLI draws a bar)."""


@dataclass(frozen=True)
class IngestOptions:
    """How to ingest. ``spacing``/``shape`` None means: derive from the source (per-axis medians)."""

    layout: Layout | str = Layout.AUTO
    holdout: float = 0.2
    seed: int = 0
    spacing: tuple[float, float, float] | None = None
    shape: tuple[int, int, int] | None = None
    ct_window: str | tuple[float, float] = "soft"
    interpolation: str = "linear"
    channels: Sequence[str] | None = None
    roi_map: Sequence[tuple[int, str]] | None = None
    keep_id_map: bool = False
    allow_empty_labels: bool = False
    tuning_holdout: float = 0.0  # a further patient-level split for exploratory audits (0: none)

    def validate(self) -> None:
        if not 0.0 <= self.holdout < 1.0:
            raise InputError(f"--holdout {self.holdout} is outside [0, 1)", fix="use a fraction such as 0.2")
        if not 0.0 <= self.tuning_holdout < 1.0 or self.holdout + self.tuning_holdout >= 1.0:
            raise InputError(f"--tuning-holdout {self.tuning_holdout} is outside [0, 1) or leaves no training "
                             f"patient beside --holdout {self.holdout}", fix="use a fraction such as 0.1")
        if self.seed < 0:
            raise InputError(f"--seed {self.seed} is negative", fix="use a non-negative integer")


def _round_up(n: float, multiple: int = 8) -> int:
    return int(max(multiple, multiple * np.ceil(n / multiple)))


def plan_grid(source: Source, spacing: tuple[float, float, float] | None,
              shape: tuple[int, int, int] | None) -> tuple[tuple[float, float, float], tuple[int, int, int]]:
    """Target spacing (x, y, z) and shape (Z, Y, X): given, or per-axis medians of the source (shape to x8)."""
    if spacing is not None and shape is not None:
        return spacing, shape
    headers = [c.header() for c in source.cases]  # cheap: DICOM grids come from the scan, NIfTI headers are small
    spacings = np.array([g.spacing for _, g in headers])
    target_spacing = spacing or tuple(float(v) for v in np.round(np.median(spacings, axis=0), 4))
    if shape is None:
        extents = np.array([np.array(s[::-1]) * np.array(g.spacing) for s, g in headers])  # (x, y, z) mm
        median_xyz = np.median(extents, axis=0) / np.array(target_spacing)
        shape = tuple(_round_up(v) for v in median_xyz[::-1])  # type: ignore[assignment]
    assert shape is not None
    return (target_spacing[0], target_spacing[1], target_spacing[2]), shape


def carve_tuning(patient_keys: Sequence[str], train_idx: Sequence[int], fraction: float,
                 seed: int) -> tuple[list[int], list[int]]:
    """Move ``round(fraction * n_patients)`` patients (at least one) from the training indices to a tuning split;
    all cases of one patient stay together. Drawn from its own seeded stream, after the train/holdout split, so the
    holdout is the same with or without a tuning split (and without one nothing changes at all)."""
    if fraction <= 0:
        return list(train_idx), []
    patients = sorted({patient_keys[i] for i in train_idx})
    n_tune = max(1, round(fraction * len(set(patient_keys))))
    if n_tune >= len(patients):
        raise InputError(f"--tuning-holdout {fraction} takes {n_tune} of the {len(patients)} training patients "
                         "and leaves none to train on", fix="lower --tuning-holdout or --holdout, or add patients")
    order = np.random.default_rng(np.random.SeedSequence([seed, 0x7E57])).permutation(len(patients))
    tuned = {patients[i] for i in order[:n_tune]}
    return [i for i in train_idx if patient_keys[i] not in tuned], [i for i in train_idx if patient_keys[i] in tuned]


def _check_labels(case: Case, source_name: str, allow_empty: bool) -> None:
    if not allow_empty and not np.any(case.labels):
        raise LabelError("label map is empty (all background)", where=f"source case {source_name}",
                         fix="check the ROI names (--roi-map) or pass --allow-empty-labels")


def _ingest_case(load: Callable[[str], tuple[Case, dict[str, Any]]], pid: str, select: tuple[str, ...] | None,
                 source_name: str, allow_empty: bool, config: PreprocessConfig,
                 real_dir: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, int]]:
    """Load, check, preprocess and write one case (in process or in a worker): its record, header summary and the
    labelled voxels the crop lost."""
    case, header = load(pid)
    if select:
        case = case.select_channels(select)
    _check_labels(case, source_name, allow_empty)
    processed, record = preprocess_case(case, config)
    write_nnunet_case(processed, real_dir)
    return record.to_dict(), header, {k: v for k, v in record.labels_lost.items() if v}


def ingest(src: Path, out: Path, *, modality: str, options: IngestOptions | None = None,
           progress: Progress | None = None, workers: int | None = None) -> Workspace:
    """Create the workspace ``out`` from the source folder ``src``; atomic: all or nothing.

    ``workers``: processes that read, de-identify, preprocess and write the cases (1: in this process; ``None`` or
    0: auto, see ``synthrelease.data.parallel.resolve_workers``). The workspace is byte-identical whatever the count.
    """
    opts = options or IngestOptions()
    opts.validate()
    rng = np.random.default_rng(np.random.SeedSequence([opts.seed, 0x16E5]))
    source = open_source(Path(src), layout=opts.layout, modality=modality, channels=opts.channels,
                         roi_map=opts.roi_map, uid_salt=rng.bytes(16))
    channels = tuple(opts.channels or source.channel_names)
    n_workers = resolve_workers(workers, len(source.cases))
    if n_workers > 1 and not picklable(*(c.load for c in source.cases[:1])):
        n_workers = 1  # a source built with closures: it can only be read here
    spacing, shape = plan_grid(source, opts.spacing, opts.shape)
    config = PreprocessConfig.for_modality(source.modality, spacing=spacing, shape=shape, ct_window=opts.ct_window,
                                           interpolation=opts.interpolation)
    n = len(source.cases)
    pseudonyms = draw_pseudonyms(n, rng)
    keys = [c.patient_key for c in source.cases]
    train_idx, holdout_idx = split_patients(keys, opts.holdout, rng)
    train_idx, tuning_idx = carve_tuning(keys, train_idx, opts.tuning_holdout, opts.seed)

    with atomic_directory(Path(out)) as tmp:
        for sub in SUBDIRS:
            (tmp / sub).mkdir()
        records: dict[str, Any] = {}
        headers: dict[str, Any] = {}
        select = channels if opts.channels else None
        pool = WorkerPool(n_workers)  # (starts its processes on first use)
        tasks = [(sc.load, pid, select, sc.source_name, opts.allow_empty_labels, config, tmp / "real")
                 for sc, pid in zip(source.cases, pseudonyms, strict=True)]
        if progress:
            progress("ingest", 0, n)
        try:
            for i, (record, header, lost) in enumerate(pool.map(_ingest_case, tasks)):
                pid = pseudonyms[i]
                if lost:
                    log.warning("case %s: the %s crop cut away labelled voxels %s; pass a larger --shape or a "
                                "coarser --spacing to keep them", pid, "x".join(map(str, shape)), lost)
                records[pid] = record
                if header:
                    headers[pid] = header
                if progress and i + 1 < n:
                    progress("ingest", i + 1, n)
        finally:
            pool.close()  # every worker has stopped before a failed build is removed
        if progress:
            progress("ingest", n, n)
        _write_real_metadata(tmp, source, channels, records, headers)
        low, high = reference_range([_record(r) for r in records.values()])
        splits = Splits(tuple(sorted(pseudonyms[i] for i in train_idx)),
                        tuple(sorted(pseudonyms[i] for i in holdout_idx)), opts.seed,
                        tuple(sorted(pseudonyms[i] for i in tuning_idx)))
        (tmp / "splits.json").write_text(splits.to_json())
        write_workspace_toml(tmp, _workspace_config(source, channels, config, low, high, opts, splits))
        if opts.keep_id_map:
            id_map = {pid: {"source": sc.source_name, "patient": sc.patient_key}
                      for sc, pid in zip(source.cases, pseudonyms, strict=True)}
            (tmp / "id_map.json").write_text(json.dumps(dict(sorted(id_map.items())), indent=2) + "\n")
    log.info("ingested %d cases into %s", n, out)
    return Workspace(Path(out))


def _record(d: dict[str, Any]) -> Any:
    from synthrelease.data.preprocess import CaseRecord

    return CaseRecord.from_dict(d)


def _write_real_metadata(tmp: Path, source: Source, channels: tuple[str, ...], records: dict[str, Any],
                         headers: dict[str, Any]) -> None:
    data = dataset_json(name="real", schema=source.schema, modality=source.modality, channel_names=channels,
                        n_cases=len(records))
    (tmp / "real" / "dataset.json").write_text(json.dumps(data, indent=2) + "\n")
    (tmp / "real" / "preprocessing.json").write_text(
        json.dumps({"cases": dict(sorted(records.items()))}, indent=2) + "\n")
    if headers:
        (tmp / "real" / "headers").mkdir()
        for pid, header in sorted(headers.items()):
            (tmp / "real" / "headers" / f"{pid}.json").write_text(json.dumps(header, indent=2, sort_keys=True) + "\n")


def _workspace_config(source: Source, channels: tuple[str, ...], config: PreprocessConfig,
                      low: Sequence[float], high: Sequence[float], opts: IngestOptions,
                      splits: Splits) -> dict[str, Any]:
    data: dict[str, Any] = {
        "modality": source.modality.value,
        "channels": list(channels),
        "source_layout": source.layout.value,
        "n_cases": len(splits.train) + len(splits.holdout) + len(splits.tuning),
        "labels": source.schema.labels_json(),
    }
    if source.schema.regions:
        data["regions"] = source.schema.regions_json()
    pre = config.to_dict()
    pre["reference"] = {"low": [float(v) for v in low], "high": [float(v) for v in high]}
    split: dict[str, Any] = {"unit": "patient", "seed": opts.seed, "holdout_fraction": opts.holdout,
                             "n_train": len(splits.train), "n_holdout": len(splits.holdout)}
    if splits.tuning:  # only then: a workspace without a tuning split keeps its bytes
        split |= {"tuning_fraction": opts.tuning_holdout, "n_tuning": len(splits.tuning)}
    return {
        "synthrelease_version": __version__,
        "data": data,
        "preprocessing": pre,
        "split": split,
        "privacy": {"id_map_written": opts.keep_id_map},
    }
