"""Training runs inside a workspace: ``WS/models/<run>/`` holds the config, checkpoints, loss log and model.

```
models/<run>/config.toml        generator name + resolved config (what --resume continues)
models/<run>/run.json           status, data spec, steps, final losses, wall time, world size
models/<run>/train_log.jsonl    losses every log_every steps
models/<run>/checkpoints/       step_XXXXXXX.pt, latest.pt (resumable)
models/<run>/model.pt           the trained model (what `sample` loads)
```
Several processes (``torchrun --nproc_per_node K -m synthrelease_cli train ...``) train with
DistributedDataParallel (NCCL on CUDA, gloo on CPU); rank 0 writes the files.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w
import torch

from synthrelease import __version__
from synthrelease.data.workspace import Workspace
from synthrelease.errors import InputError, SynthReleaseError
from synthrelease.generators.base import Generator, StepLosses
from synthrelease.generators.config import config_hash, config_to_dict, read_config_file
from synthrelease.generators.registry import create_generator

__all__ = ["RunInfo", "load_run", "run_dir", "train_run"]

_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class RunInfo:
    name: str
    path: Path
    generator: str
    steps: int
    seconds: float
    final_losses: dict[str, float]


def run_dir(ws: Workspace, name: str) -> Path:
    if not _RUN_NAME.match(name):
        raise InputError(f"run name {name!r} is not a plain name", fix="use letters, digits, '.', '_' or '-'")
    return ws.dir("models") / name


def _init_distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        torch.distributed.init_process_group(backend=backend)
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def _resolve_config(path: Path, generator: str, config_file: Path | None, resume: bool,
                    overrides: dict[str, Any]) -> dict[str, Any]:
    saved = path / "config.toml"
    if resume:
        if not saved.is_file():
            raise InputError("has no run to resume", where=path, fix="start it without --resume")
        data = read_config_file(saved)
        if data.get("generator") != generator:
            raise InputError(f"run was trained with generator {data.get('generator')!r}, not {generator!r}",
                             where=saved, fix="pass the run's generator or another --name")
        config = dict(data.get("config", {}))
        if config_file is not None and read_config_file(config_file) not in (config, {"generator": generator,
                                                                                **config}):
            raise InputError("differs from the config of the run being resumed", where=config_file,
                             fix="resume without --config, or start a new run with --name")
    else:
        if path.exists():
            raise InputError("run already exists", where=path, fix="pass --resume to continue it or another --name")
        config = dict(read_config_file(config_file)) if config_file is not None else {}
        named = config.pop("generator", generator)
        if named != generator:
            raise InputError(f"config is for generator {named!r}, not {generator!r}", where=config_file,
                             fix="pass the matching --generator")
    config.update({k: v for k, v in overrides.items() if v is not None})
    return config


def train_run(ws: Workspace, generator: str, *, name: str | None = None, config_file: Path | None = None,
              resume: bool = False, steps: int | None = None, seed: int | None = None,
              device: str | None = None, progress: Callable[[int, int, StepLosses], None] | None = None) -> RunInfo:
    """Train ``generator`` on the workspace's training split (never the holdout)."""
    rank, world = _init_distributed()
    path = run_dir(ws, name or generator)
    config = _resolve_config(path, generator, config_file, resume, {"steps": steps, "seed": seed})
    gen = create_generator(generator, config)
    train = ws.train()
    if world > 1:  # every process has checked the run folder (new run / resume) before rank 0 creates it
        torch.distributed.barrier()
    if rank == 0:
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.toml").write_text(tomli_w.dumps({"generator": generator,
                                                         "config": config_to_dict(gen.config)}))
        _write_run_json(path, {"status": "training", "generator": generator, "world_size": world,
                               "config_sha256": config_hash(gen.config), "train_cases": len(train)})
    if world > 1:
        torch.distributed.barrier()
    t0 = time.perf_counter()
    gen.fit(train, run_dir=path, resume=resume, progress=progress, device=device)
    seconds = time.perf_counter() - t0
    checksums = _replica_checksums(gen, world)
    if rank == 0:
        gen.save(path / "model.pt")
        _write_run_json(path, {"status": "complete", "generator": generator, "world_size": world,
                               "config_sha256": config_hash(gen.config), "train_cases": len(train),
                               "steps": gen.config.steps, "seconds": round(seconds, 2),
                               "precision": gen.precision,
                               "final_losses": gen.final_losses_, "spec": gen.spec_.to_dict(),
                               "negative_control": gen.negative_control, "replica_checksums": checksums})
    if world > 1:
        torch.distributed.barrier()
    return RunInfo(path.name, path, generator, gen.config.steps, seconds, dict(gen.final_losses_))


def _replica_checksums(gen: Generator, world: int) -> list[float]:
    """Sum of all parameters on every process: DDP replicas must end identical (else the run is broken)."""
    total = float(sum(p.detach().double().sum().item() for m in gen.modules().values() for p in m.parameters()))
    if world <= 1:
        return [total]
    gathered: list[Any] = [None] * world
    torch.distributed.all_gather_object(gathered, total)
    sums = [float(v) for v in gathered]
    if max(sums) - min(sums) > 1e-6 * max(1.0, abs(sums[0])):
        raise SynthReleaseError(f"the {world} training processes ended with different weights {sums}",
                                fix="report this; DistributedDataParallel did not keep replicas in sync")
    return sums


def _write_run_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path / "run.json.partial"
    tmp.write_text(json.dumps({"synthrelease_version": __version__, **data}, indent=2) + "\n")
    os.replace(tmp, path / "run.json")


def load_run(ws: Workspace, name: str, *, device: str | None = None) -> Generator:
    """The trained model of run ``name`` (after ``train`` completed)."""
    path = run_dir(ws, name)
    model = path / "model.pt"
    if not model.is_file():
        hint = ("its training has not finished: resume it with 'synthrelease train ... --resume'"
                if path.is_dir() else "train it first with 'synthrelease train'")
        raise InputError("has no trained model", where=path, fix=hint)
    return Generator.load(model, device=device)
