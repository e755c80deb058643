"""The ``Generator`` contract and the training loop every generator shares.

scikit-learn style: ``__init__`` only stores the config; ``fit`` validates the data, builds the networks and trains
(setting trailing-underscore attributes); ``sample(n, seed)`` returns cases; ``save``/``load`` round-trip a model.

A generator implements four things: ``build`` (networks + optimizers for a ``DataSpec``), ``training_step``
(one optimisation step on a batch, returns named losses), ``generate`` (a batch of model-range images and class
maps) and, optionally, ``extra_state``/``load_extra_state``.

Reproducibility: every step's randomness (batch choice, noise, dropout) comes from a seed derived from
``(config.seed, step, rank)``, so a resumed run equals an uninterrupted one on CPU, and ``sample`` draws from a
``torch.Generator`` seeded with ``(seed, batch index)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from synthrelease.data.case import Case
from synthrelease.data.cohort import Cohort
from synthrelease.errors import InputError, SynthReleaseError
from synthrelease.generators.config import GeneratorConfig, config_from_dict, config_to_dict
from synthrelease.generators.data import DataSpec, TrainingData
from synthrelease.runtime.precision import resolved_precision

__all__ = ["Generator", "StepLosses", "derive_seed", "ema_model"]

StepLosses = dict[str, float]
Progress = Callable[[int, int, StepLosses], None]  # (step done, total steps, latest losses)
CHECKPOINT_FORMAT = 1


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (stable across runs and platforms)."""
    digest = hashlib.sha256(",".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def ema_model(module: nn.Module, decay: float, *, warmup: bool) -> AveragedModel:
    """An exponential moving average of ``module``'s weights and buffers (``AveragedModel`` with
    ``get_ema_multi_avg_fn``), never trained itself. With ``warmup`` the decay is ramped up over the first updates
    (``min(decay, (1 + n) / (10 + n))`` at the n-th), so a short run averages its last steps, not its first
    weights."""
    def ramped(ema: Any, current: Any, n_averaged: torch.Tensor) -> None:
        n = float(n_averaged)
        get_ema_multi_avg_fn(min(decay, (1.0 + n) / (10.0 + n)))(ema, current, n_averaged)

    update: Any = ramped if warmup else get_ema_multi_avg_fn(decay)
    ema = AveragedModel(module, multi_avg_fn=update, use_buffers=True)
    ema.requires_grad_(False)
    return ema


def _dist() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class Generator(ABC):
    """Base class of every registered generator."""

    name: ClassVar[str]
    Config: ClassVar[type[GeneratorConfig]] = GeneratorConfig
    negative_control: ClassVar[bool] = False  # export refuses sets of negative controls (copycat)

    def __init__(self, config: GeneratorConfig | dict[str, Any] | None = None) -> None:
        if config is None:
            config = self.Config()
        elif isinstance(config, dict):
            config = config_from_dict(self.Config, config, where=f"{self.name} config")
        elif not isinstance(config, self.Config):
            raise InputError(f"{self.name} needs a {self.Config.__name__}, got {type(config).__name__}")
        config.validate()
        self.config = config
        self.device = torch.device("cpu")
        self.sample_offset = 0
        self._wrapped: dict[str, nn.Module] = {}

    # -- what implementations provide -------------------------------------------------------------------------
    @abstractmethod
    def build(self, spec: DataSpec) -> None:
        """Create networks (``self.modules()``) and optimizers for ``spec``; set ``self.spec_``."""

    @abstractmethod
    def modules(self) -> dict[str, nn.Module]:
        """Named networks (state saved in checkpoints; wrapped in DDP when several processes train)."""

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {}

    @abstractmethod
    def training_step(self, images: torch.Tensor, classes: torch.Tensor, step: int) -> StepLosses:
        """One optimisation step on a batch (images (B, C, Z, Y, X) in [-1, 1], classes (B, Z, Y, X))."""

    @abstractmethod
    def generate(self, n: int, generator: torch.Generator, **options: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` samples: images (n, C, Z, Y, X) in model range and class maps (n, Z, Y, X), on CPU."""

    def prepare(self, data: TrainingData) -> None:  # noqa: B027 - optional hook
        """Hook before training (e.g. remember training masks, train a sub-model)."""

    def extra_state(self) -> dict[str, Any]:
        """Non-module state to checkpoint (EMA weights, stored masks, ...)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Restore what ``extra_state`` returned."""

    def provenance(self) -> dict[str, Any]:
        """Facts about how samples are made (mask source, ...), written into a synthetic set's provenance."""
        return {}

    def membership_scores(self, images: torch.Tensor, classes: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
        """White-box membership-inference scores of real cases (the audit's ``privacy.whitebox``; see
        ``generators.membership``): images (B, C, Z, Y, X) in model range and class maps (B, Z, Y, X) as training
        sees them; per attack ``(B,)`` scores or ``(B, K)`` components, higher = more likely a training case; every
        draw seeded by ``seed``. ``{}``: this generator has no white-box attack."""
        return {}

    # -- helpers for implementations -------------------------------------------------------------------------
    def net(self, name: str) -> nn.Module:
        """The module ``name`` as training should call it (DDP-wrapped when distributed)."""
        return self._wrapped.get(name) or self.modules()[name]

    @property
    def precision(self) -> str:
        """``bf16`` on CUDA and, with ``config.cpu_bf16``, on a CPU with native bf16 (``runtime.precision``); else
        ``fp32``."""
        return resolved_precision(self.device, cuda_bf16=True, cpu_bf16=bool(self.config.cpu_bf16))

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """bf16 autocast where ``precision`` is ``bf16``, nothing otherwise."""
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # -- the contract ------------------------------------------------------------------------------------------
    def fit(self, data: Cohort | TrainingData, *, run_dir: Path | None = None, resume: bool = False,
            progress: Progress | None = None, device: str | torch.device | None = None) -> Self:
        """Train on ``data``. With ``run_dir``, write checkpoints and a loss log there (and resume from them)."""
        training = data if isinstance(data, TrainingData) else TrainingData.from_cohort(data)
        self.device = torch.device(device) if device else _default_device()
        rank, world = _dist()
        start = 0
        if resume:
            if run_dir is None:
                raise InputError("resuming needs the run folder that holds the checkpoints")
            start = self._restore_latest(run_dir, training.spec)
        else:
            torch.manual_seed(derive_seed(self.config.seed, 0x5EED))
            self.build(training.spec)
            self.spec_ = training.spec
            self._to_device()
            self.prepare(training)
        self._wrap_ddp(world)
        log_file = None
        if run_dir is not None and rank == 0:
            Path(run_dir).mkdir(parents=True, exist_ok=True)
            log_file = Path(run_dir) / "train_log.jsonl"
        total, batch = self.config.steps, self.config.batch_size
        losses: StepLosses = {}
        try:
            for step in range(start, total):
                for m in self.modules().values():
                    m.train()
                torch.manual_seed(derive_seed(self.config.seed, step, rank, 0x57E9))
                idx = self._batch_indices(len(training), batch, step, rank, world)
                images, classes = training.batch(idx)
                losses = self.training_step(images.to(self.device), classes.to(self.device), step)
                done = step + 1
                if log_file is not None and (done % self.config.log_every == 0 or done == total):
                    with log_file.open("a") as fh:
                        fh.write(json.dumps({"step": done, **{k: round(v, 6) for k, v in losses.items()}}) + "\n")
                if run_dir is not None and rank == 0 and (done % self.config.checkpoint_every == 0 or done == total):
                    self._save_checkpoint(run_dir, done)
                if progress is not None and rank == 0:
                    progress(done, total, losses)
        finally:
            self._wrapped = {}
        for m in self.modules().values():
            m.eval()
        self.steps_done_ = total
        self.final_losses_ = losses
        return self

    def sample(self, n: int, seed: int, *, batch: int | None = None, offset: int = 0, **options: Any) -> list[Case]:
        """``n`` synthetic cases (model-range intensities on the training grid); same seed -> same cases.

        Samples are made in batches of ``batch`` (default: all at once); batch ``b`` draws from a generator seeded
        with ``(seed, b)``. ``offset`` continues a larger request made in pieces: ``sample(8, s, batch=4)`` equals
        ``sample(4, s, batch=4) + sample(4, s, batch=4, offset=4)``. ``self.sample_offset`` tells ``generate``
        the index of its first sample (conditioned generators use training mask ``i`` for sample ``i``).
        """
        self._check_fitted()
        if n < 1:
            raise InputError(f"cannot sample {n} cases", fix="ask for one or more")
        size = batch or n
        if offset % size:
            raise InputError(f"offset {offset} is not a multiple of the batch size {size}")
        cases: list[Case] = []
        for first in range(0, n, size):
            count = min(size, n - first)
            b = (offset + first) // size
            gen = torch.Generator().manual_seed(derive_seed(seed, b, 0x5A3))
            torch.manual_seed(derive_seed(seed, b, 0x5A4))
            self.sample_offset = offset + first
            for m in self.modules().values():
                m.eval()
            with torch.no_grad():
                images, classes = self.generate(count, gen, **options)
            images_np = images.detach().float().cpu().clamp(-1, 1).numpy()
            classes_np = classes.detach().cpu().numpy().astype(np.int64)
            for i in range(count):
                cases.append(self.spec_.make_case(f"syn{offset + first + i:04d}", images_np[i], classes_np[i]))
        return cases

    def state(self) -> dict[str, Any]:
        """Everything needed to continue training or to sample (tensors and plain values only)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "generator": self.name,
            "config": config_to_dict(self.config),
            "spec": self.spec_.to_dict(),
            "modules": {k: m.state_dict() for k, m in self.modules().items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers().items()},
            "extra": self.extra_state(),
        }

    def save(self, path: Path) -> Path:
        """Write the trained model to ``path`` (a ``.pt`` file)."""
        self._check_fitted()
        _atomic_torch_save(self.state(), Path(path))
        return Path(path)

    @classmethod
    def load(cls, path: Path, *, device: str | torch.device | None = None) -> Generator:
        """A generator restored from ``save`` (or a checkpoint); the file's generator name decides the class."""
        from synthrelease.generators.registry import get_generator_class

        state = _load_state(Path(path))
        klass = get_generator_class(state["generator"]) if cls is Generator else cls
        gen = klass(state["config"])
        gen.device = torch.device(device) if device else torch.device("cpu")
        gen._restore(state)
        return gen

    # -- internals ---------------------------------------------------------------------------------------------
    def _restore(self, state: dict[str, Any]) -> int:
        spec = DataSpec.from_dict(state["spec"])
        self.build(spec)
        self.spec_ = spec
        for k, m in self.modules().items():
            m.load_state_dict(state["modules"][k])
        for k, o in self.optimizers().items():
            if k in state["optimizers"]:
                o.load_state_dict(state["optimizers"][k])
        self.load_extra_state(state.get("extra", {}))
        self._to_device()
        self.steps_done_ = int(state.get("step", self.config.steps))
        return self.steps_done_

    def _restore_latest(self, run_dir: Path, spec: DataSpec) -> int:
        latest = run_dir / "checkpoints" / "latest.pt"
        if not latest.is_file():
            raise InputError("has no checkpoint to resume from", where=run_dir,
                             fix="start the run without --resume")
        state = _load_state(latest)
        if DataSpec.from_dict(state["spec"]) != spec:
            raise InputError("checkpoint was trained on another grid, channels or label schema", where=latest,
                             fix="resume in the workspace the run was started in")
        return self._restore(state)

    def _save_checkpoint(self, run_dir: Path, step: int) -> None:
        folder = run_dir / "checkpoints"
        folder.mkdir(parents=True, exist_ok=True)
        state = {**self.state(), "step": step}
        path = folder / f"step_{step:07d}.pt"
        _atomic_torch_save(state, path)
        _atomic_torch_save(state, folder / "latest.pt")

    def _batch_indices(self, n: int, batch: int, step: int, rank: int, world: int) -> list[int]:
        """This rank's share of the step's global batch: a seeded permutation per epoch, then consecutive slices."""
        global_batch = batch * world
        start = step * global_batch
        idx: list[int] = []
        while len(idx) < global_batch:
            epoch, offset = divmod(start + len(idx), n)
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(self.config.seed, epoch)))
            take = min(n - offset, global_batch - len(idx))
            idx.extend(int(i) for i in perm[offset : offset + take])
        return idx[rank * batch : (rank + 1) * batch]

    def _to_device(self) -> None:
        for m in self.modules().values():
            m.to(self.device)
        for opt in self.optimizers().values():  # optimizer state follows its parameters
            for st in opt.state.values():
                for k, v in st.items():
                    if isinstance(v, torch.Tensor):
                        st[k] = v.to(self.device)

    def _wrap_ddp(self, world: int) -> None:
        if world <= 1:
            return
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        self._wrapped = {k: DDP(m, device_ids=ids) for k, m in self.modules().items()
                         if any(p.requires_grad for p in m.parameters())}

    def _check_fitted(self) -> None:
        if not hasattr(self, "spec_"):
            raise SynthReleaseError(f"{self.name} generator is not trained", fix="call fit() or load() first")


def _default_device() -> torch.device:
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", 0))
        return torch.device("cuda", local)
    return torch.device("cpu")


def _atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _load_state(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputError("model file not found", where=path, fix="train the model first or check the run name")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        raise InputError("is not a readable synthrelease model or checkpoint", where=path,
                         fix="retrain, or resume from an intact checkpoint") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT or "generator" not in state:
        raise InputError("is not a synthrelease model file of a known format", where=path)
    return state


def iter_params(modules: dict[str, nn.Module]) -> Iterator[nn.Parameter]:
    for m in modules.values():
        yield from m.parameters()
