"""The steward's private workspace: preprocessed real cohort, splits, and everything derived from them.

```
workspace/
  workspace.toml   modality, label schema, preprocessing, seeds
  splits.json      {"train": [...], "holdout": [...], "seed": int}  (patient-level; optional "tuning": [...])
  real/            preprocessed real cohort, nnU-Net raw layout (+ preprocessing.json, headers/)
  models/ synthetic/ cache/ audits/
```
A workspace is created atomically: built in a hidden sibling folder and renamed into place at the end.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from synthrelease.data.cohort import Cohort
from synthrelease.data.nnunet import read_nnunet
from synthrelease.data.preprocess import PreprocessConfig
from synthrelease.data.schema import LabelSchema, Modality
from synthrelease.errors import WorkspaceError

__all__ = ["SUBDIRS", "Splits", "Workspace", "write_workspace_toml"]

FORMAT_VERSION = 1
SUBDIRS = ("real", "models", "synthetic", "cache", "audits")


@dataclass(frozen=True)
class Splits:
    """Patient-level split of the real cohort: ``train`` (the generator sees it), ``holdout`` (never seen; the
    release gate's privacy baseline and test set) and, optionally, ``tuning`` (never seen either, nor part of the
    gate holdout: exploratory audits compare against it while generator settings are chosen)."""

    train: tuple[str, ...]
    holdout: tuple[str, ...]
    seed: int
    tuning: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        named = (("train", self.train), ("holdout", self.holdout), ("tuning", self.tuning))
        for i, (a, ids_a) in enumerate(named):
            for b, ids_b in named[i + 1:]:
                both = set(ids_a) & set(ids_b)
                if both:
                    raise WorkspaceError(f"cases {sorted(both)[:3]} are in both {a} and {b}",
                                         fix="re-create the workspace with ingest")

    def to_json(self) -> str:
        """The ``splits.json`` text; "tuning" only when there is one (workspaces without it keep their bytes)."""
        data: dict[str, Any] = {"train": list(self.train), "holdout": list(self.holdout)}
        if self.tuning:
            data["tuning"] = list(self.tuning)
        return json.dumps({**data, "seed": self.seed}, indent=2) + "\n"

    @classmethod
    def read(cls, path: Path) -> Splits:
        try:
            d = json.loads(path.read_text())
            return cls(tuple(d["train"]), tuple(d["holdout"]), int(d["seed"]), tuple(d.get("tuning", ())))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise WorkspaceError("is missing or malformed", where=path,
                                 fix="re-create the workspace with 'synthrelease ingest'") from None


class Workspace:
    """An existing workspace on disk (see ``synthrelease.data.ingest`` to create one)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        path = self.root / "workspace.toml"
        if not path.is_file():
            raise WorkspaceError("is not a synthrelease workspace (no workspace.toml)", where=self.root,
                                 fix="create one with 'synthrelease ingest SRC --out WS'")
        try:
            self.config: dict[str, Any] = tomllib.loads(path.read_text())
            data = self.config["data"]
            self.modality = Modality.parse(data["modality"])
            self.channel_names: tuple[str, ...] = tuple(data["channels"])
            self.schema = LabelSchema.from_dataset_json(data["labels"], data.get("regions"))
            self.preprocessing = PreprocessConfig.from_dict(self.config["preprocessing"])
        except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
            raise WorkspaceError(f"is malformed ({exc})", where=path,
                                 fix="re-create the workspace with 'synthrelease ingest'") from None
        self.splits = Splits.read(self.root / "splits.json")

    @property
    def intensity_reference(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel values that [-1, 1] maps back to (HU for CT, the cohort's MR scale for MRI)."""
        ref = self.config["preprocessing"]["reference"]
        return tuple(ref["low"]), tuple(ref["high"])

    def dir(self, name: str) -> Path:
        if name not in SUBDIRS:
            raise WorkspaceError(f"has no sub-folder {name!r}", where=self.root)
        return self.root / name

    def real(self) -> Cohort:
        """Every preprocessed real case (train, holdout and tuning), lazily loaded."""
        return read_nnunet(self.dir("real"), modality=self.modality, name="real")

    def train(self) -> Cohort:
        return self.real().subset(list(self.splits.train), name="train")

    def holdout(self) -> Cohort:
        return self.real().subset(list(self.splits.holdout), name="holdout")

    def tuning(self) -> Cohort:
        """The tuning split (``ingest --tuning-holdout``): real patients neither the generator nor the gate sees."""
        if not self.splits.tuning:
            raise WorkspaceError("has no tuning split", where=self.root / "splits.json",
                                 fix="re-create the workspace with 'synthrelease ingest ... --tuning-holdout 0.1', "
                                     "or audit on the holdout")
        return self.real().subset(list(self.splits.tuning), name="tuning")

    def preprocessing_records(self) -> dict[str, Any]:
        return dict(json.loads((self.dir("real") / "preprocessing.json").read_text())["cases"])

    def __repr__(self) -> str:
        tuning = f", tuning={len(self.splits.tuning)}" if self.splits.tuning else ""
        return (f"Workspace({str(self.root)!r}, modality={self.modality.value}, train={len(self.splits.train)}, "
                f"holdout={len(self.splits.holdout)}{tuning})")


def write_workspace_toml(root: Path, config: dict[str, Any]) -> None:
    """Write ``workspace.toml`` (data only: TOML is never evaluated)."""
    (root / "workspace.toml").write_text(tomli_w.dumps({"format_version": FORMAT_VERSION, **config}))
