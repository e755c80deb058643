"""Shared fixtures: tiny cases built on the fly (16^3-32^3)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from synthrelease.data.case import Case, Geometry
from synthrelease.data.schema import BRATS_SCHEMA, CT_HEAD_NECK_SCHEMA


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """torch on one thread for a module, restored afterwards: small models run faster there, and two threads on
    two busy cores run several times slower than one. Modules and conftests use it through an autouse fixture."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tiny_case(case_id: str = "c000", *, shape: tuple[int, int, int] = (16, 18, 20), modality: str = "CT",
               seed: int = 0, spacing: tuple[float, float, float] = (1.5, 1.25, 2.0),
               origin: tuple[float, float, float] = (-10.0, 5.0, 30.0), **kw: Any) -> Case:
    """A body ellipsoid with a tumour (CT: labels 1, 2; MR: 1, 2, 3) on a small anisotropic grid."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    body = (x / 0.8) ** 2 + (y / 0.7) ** 2 + (z / 0.9) ** 2 < 1
    labels = np.zeros(shape, np.uint8)
    if modality == "CT":
        img = np.where(body, 40.0, -1000.0) + rng.normal(0, 10, shape)
        labels[(x + 0.3) ** 2 + y**2 + z**2 < 0.06] = 1
        labels[(np.abs(x - 0.35) < 0.1) & (np.abs(y) < 0.4) & (np.abs(z) < 0.5)] = 2
        img[labels == 2] = 900.0
        image, channels, schema = img[None], ("CT",), CT_HEAD_NECK_SCHEMA
    else:
        img = np.where(body, 500.0, 0.0) + rng.normal(0, 5, shape).clip(0)
        labels[(x + 0.2) ** 2 + y**2 + z**2 < 0.15] = 2
        labels[(x + 0.2) ** 2 + y**2 + z**2 < 0.06] = 3
        labels[(x + 0.2) ** 2 + y**2 + z**2 < 0.02] = 1
        image, channels, schema = np.stack([img, img * 0.8]), ("t1c", "t2f"), BRATS_SCHEMA
    return Case(case_id=case_id, image=image.astype(np.float32), labels=labels,
                geometry=Geometry(spacing=spacing, origin=origin), modality=modality,
                channel_names=channels, schema=schema, **kw)


@pytest.fixture
def make_case() -> Callable[..., Case]:
    """Factory: ``make_case("id", shape=..., modality="CT"|"MR", seed=...)``."""
    return _tiny_case


# -- release packages (tests/release, tests/cli/test_release_cli.py) ------------------------------------------------

RELEASE_POLICY = """name = "test-release"
description = "test fixture: a release policy gating on identifiers only"
release = {release}

[[rule]]
metric = "privacy.metadata.n_findings"
op = "<="
threshold = {threshold}
severity = "fail"
why = "no identifier of the real cohort in the set"
"""


@dataclass(frozen=True)
class ReleaseWorkspace:
    """A tiny CT workspace with sets in every release state (see ``release_ws``), a key pair, and real ids."""

    root: Path
    key: Path
    public_key: Path
    real_ids: tuple[str, ...]  # case pseudonyms and source names of the real cohort

    def policy(self, *, release: bool = True, threshold: float = 0.0) -> Path:
        path = self.root.parent / f"policy-{release}-{threshold}.toml"
        path.write_text(RELEASE_POLICY.format(release=str(release).lower(), threshold=threshold))
        return path


def _write_releasable_set(ws: Any, donor: Any, name: str) -> Path:
    """A non-copycat set: another cohort's phantoms on this workspace's grid and scale, with ldm provenance (a real
    ldm run is too slow for a fixture)."""
    import json

    from synthrelease.data.nnunet import dataset_json, write_nnunet_case
    from synthrelease.data.preprocess import from_model_range

    out = ws.dir("synthetic") / name
    low, high = ws.intensity_reference
    cases = list(donor.real())
    for i, case in enumerate(cases):
        write_nnunet_case(case.with_(case_id=f"syn{i:04d}", image=from_model_range(case.image, low, high)), out)
    data = dataset_json(name=name, schema=ws.schema, modality=ws.modality, channel_names=ws.channel_names,
                        n_cases=len(cases))
    (out / "dataset.json").write_text(json.dumps(data, indent=2) + "\n")
    provenance = {"synthrelease_version": "0.1.0", "generator": "ldm", "run": "run-of-the-steward",
                  "negative_control": False, "config_sha256": "a" * 64, "checkpoint_sha256": "b" * 64, "seed": 7,
                  "n": len(cases), "batch": 8, "sampler": None, "steps": None, "min_component": 0,
                  "grid": {"shape_zyx": [16, 16, 16]}, "mode": "joint", "mask_source": "joint"}
    (out / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    return out


@pytest.fixture(scope="session")
def release_ws(tmp_path_factory: pytest.TempPathFactory) -> ReleaseWorkspace:
    """Sets of one workspace: ``good`` (audited, passes a release policy; the memorization check left real-data
    figures in its audit folder), ``study`` (passes a policy with release = false), ``failing`` (verdict fail),
    ``stale`` (changed after its audit), ``unaudited``, ``copies`` (copycat negative control, audited)."""
    import json
    import shutil
    from dataclasses import replace

    from click.testing import CliRunner

    from synthrelease.audit import audit_workspace
    from synthrelease.checks import AuditSettings
    from synthrelease.data.ingest import IngestOptions, ingest
    from synthrelease.data.phantoms.cohort import write_phantom_cohort
    from synthrelease.release import generate_keypair
    from synthrelease_cli.main import cli

    root = tmp_path_factory.mktemp("release")
    options = IngestOptions(seed=0, holdout=0.34, keep_id_map=True)
    src = write_phantom_cohort(root / "src", modality="ct", cases=6, shape=16, seed=0, fmt="nnunet")
    ws = ingest(src, root / "ws", modality="ct", options=options)
    donor_src = write_phantom_cohort(root / "donor-src", modality="ct", cases=3, shape=16, seed=99, fmt="nnunet")
    donor = ingest(donor_src, root / "donor", modality="ct", options=options)
    assert donor.config["preprocessing"]["target_shape"] == ws.config["preprocessing"]["target_shape"]
    fixture = ReleaseWorkspace(ws.root, *generate_keypair(root / "publisher.key"),
                               real_ids=(*ws.splits.train, *ws.splits.holdout,
                                         *[e["source"] for e in json.loads((ws.root / "id_map.json").read_text())
                                           .values()]))
    settings = AuditSettings()
    settings = replace(settings, embedding=replace(settings.embedding, steps=3))
    good = _write_releasable_set(ws, donor, "good")
    for name in ("study", "failing", "stale", "unaudited"):
        shutil.copytree(good, ws.dir("synthetic") / name)
    audit_workspace(ws, "good", only=["privacy.metadata", "privacy.memorization"], settings=settings,
                    policy=fixture.policy())
    for name, policy in (("study", fixture.policy(release=False)), ("failing", fixture.policy(threshold=-1)),
                         ("stale", fixture.policy())):
        audit_workspace(ws, name, only=["privacy.metadata"], policy=policy)
    (ws.dir("synthetic") / "stale" / "dataset.json").write_text(
        (ws.dir("synthetic") / "stale" / "dataset.json").read_text().replace('"name"', '"name" ', 1))
    run = CliRunner()
    assert run.invoke(cli, ["train", str(ws.root), "--generator", "copycat", "--name", "cc"]).exit_code == 0
    res = run.invoke(cli, ["sample", str(ws.root), "--model", "cc", "--n", "3", "--seed", "1", "--name", "copies"])
    assert res.exit_code == 0, res.output
    audit_workspace(ws, "copies", only=["privacy.metadata"], policy=fixture.policy())
    return fixture
