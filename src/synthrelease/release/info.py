"""What a package says about itself: ``provenance.json`` and the facts the dataset card and Croissant share.

``provenance.json`` is built from an allow-list of the set's sampling provenance (generator, mode, mask source,
seeds, config and checkpoint sha256, grid) plus the audit's policy, verdict and gating seed, and the audit log's
count of every audit of these exact files (so a gate re-run until it passed shows). An allow-list, not a deny-list: a
field added to sampling provenance later (a run name, a path) stays in the workspace until someone decides it may
leave. No real case id, no workspace path, no run name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from synthrelease import __version__
from synthrelease.errors import InputError
from synthrelease.release.clearance import Clearance

__all__ = ["DEFAULT_LICENSE", "FORMAT_VERSION", "GENERATOR_KEYS", "PackageInfo", "license_url", "package_provenance"]

FORMAT_VERSION = 1
DEFAULT_LICENSE = "CC-BY-4.0"
GENERATOR_KEYS = ("generator", "mode", "mask_source", "mask_generator", "negative_control", "synthrelease_version",
                  "config_sha256", "checkpoint_sha256", "seed", "n", "batch", "sampler", "steps", "min_component",
                  "grid", "intensity_reference")
_SPDX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+-]*$")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+_-]{0,31}$")


def license_url(value: str) -> str:
    """A licence as Croissant wants it (a URL): an SPDX id (``CC-BY-4.0``) becomes its spdx.org page."""
    if value.startswith(("https://", "http://")):
        return value
    if _SPDX.match(value):
        return f"https://spdx.org/licenses/{value}.html"
    raise InputError(f"licence {value!r} is neither an SPDX identifier nor a URL",
                     fix="use e.g. CC-BY-4.0, CC-BY-NC-4.0 or a https:// URL of the licence text")


def check_version(version: str) -> str:
    if not _VERSION.match(version):
        raise InputError(f"package version {version!r} is not a plain version string", fix="use e.g. 1.0.0")
    return version


def package_provenance(clearance: Clearance, *, name: str, version: str, license: str) -> dict[str, Any]:
    """The package's ``provenance.json``: how the set was made and cleared, without any patient identifier."""
    report = clearance.report
    synthetic = report.get("synthetic_set") or {}
    policy = clearance.policy
    return {
        "format": "synthrelease-package",
        "format_version": FORMAT_VERSION,
        "package": {"name": name, "version": version, "license": license},
        "tool": {"name": "synthrelease", "version": __version__},
        "generator": {k: clearance.provenance[k] for k in GENERATOR_KEYS if k in clearance.provenance},
        "synthetic_set": {"sha256": clearance.set_sha256, "n_cases": synthetic.get("n_cases")},
        "audit": {"verdict": report.get("verdict"), "schema_version": report.get("schema_version"),
                  "tool_version": (report.get("tool") or {}).get("version"), "seed": report.get("seed"),
                  "gating": report.get("gating"),
                  "policy": {"name": policy.get("name"), "sha256": policy.get("sha256"),
                             "release": policy.get("release")},
                  # every audit of this set's sha256 in the workspace's log, under any policy, seed or split
                  "history": clearance.history.to_dict()},
    }


@dataclass(frozen=True)
class PackageInfo:
    """Facts about a package being written, shared by the dataset card and ``croissant.json``."""

    name: str
    version: str
    license: str
    dataset: Mapping[str, Any]  # dataset.json
    case_ids: tuple[str, ...]
    provenance: Mapping[str, Any]  # the package's provenance.json
    report: Mapping[str, Any]  # the public report

    @property
    def channels(self) -> tuple[str, ...]:
        names = self.dataset["channel_names"]
        return tuple(str(names[k]) for k in sorted(names, key=int))

    @property
    def labels(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.dataset["labels"].items() if isinstance(v, int)}

    @property
    def modality(self) -> str:
        return str(self.dataset.get("image_modality") or (self.report.get("data") or {}).get("modality") or "")

    @property
    def generator(self) -> Mapping[str, Any]:
        return self.provenance.get("generator") or {}

    @property
    def policy(self) -> Mapping[str, Any]:
        return self.report.get("policy") or {}

    @property
    def history(self) -> Mapping[str, Any]:
        """The audit log's counts for this set's files: n_audits, n_gating, n_failed."""
        return (self.provenance.get("audit") or {}).get("history") or {}

    @property
    def privacy_checks(self) -> list[str]:
        """The privacy checks that ran to completion in the audit (the card and RAI fields claim no more)."""
        checks = self.report.get("checks") or {}
        return sorted(n for n, c in checks.items() if n.startswith("privacy.") and (c or {}).get("status") == "ok")

    @property
    def license_url(self) -> str:
        return license_url(self.license)

    def image_paths(self, case_id: str) -> list[str]:
        ending = self.dataset.get("file_ending", ".nii.gz")
        return [f"imagesTr/{case_id}_{i:04d}{ending}" for i in range(len(self.channels))]

    def label_path(self, case_id: str) -> str:
        return f"labelsTr/{case_id}{self.dataset.get('file_ending', '.nii.gz')}"
