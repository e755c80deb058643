"""Generator configuration: typed dataclasses read from TOML (data only, never evaluated).

Every generator's config subclasses ``GeneratorConfig`` (the training loop's own settings); a TOML file holds the
fields flat, with sub-configs (e.g. ``[mask]``) as tables. Unknown keys and bad values are ``InputError`` (exit 2).
"""

from __future__ import annotations

import dataclasses
import hashlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

import tomli_w

from synthrelease.errors import InputError

__all__ = ["GeneratorConfig", "config_from_dict", "config_hash", "config_to_dict", "read_config_file"]

C = TypeVar("C")


@dataclass(frozen=True)
class GeneratorConfig:
    """Training-loop settings shared by every generator."""

    steps: int = 1000  # optimisation steps (one batch each)
    batch_size: int = 2
    checkpoint_every: int = 500  # also at the end
    log_every: int = 10
    seed: int = 0
    cpu_bf16: bool = False  # bf16 autocast on a CPU with native bf16 too (CUDA always autocasts to bf16)

    def validate(self) -> None:
        """Raise ``InputError`` for values no run can use (subclasses extend)."""
        for name in ("steps", "batch_size", "checkpoint_every", "log_every"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"config {name} = {getattr(self, name)} must be at least 1")
        if self.seed < 0:
            raise InputError(f"config seed = {self.seed} must be non-negative")


def _coerce(value: Any, hint: Any, where: str) -> Any:
    if is_dataclass(hint) and isinstance(hint, type):
        if not isinstance(value, Mapping):
            raise InputError(f"{where} must be a table", fix="write it as [section] in the TOML file")
        return config_from_dict(hint, value, where=where)
    origin = getattr(hint, "__origin__", None)
    if origin is tuple and isinstance(value, list | tuple):
        return tuple(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def config_from_dict(cls: type[C], data: Mapping[str, Any], *, where: str = "config") -> C:
    """Build ``cls`` from a mapping; unknown keys and wrongly typed values raise ``InputError``."""
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise InputError(f"unknown config keys {unknown}", where=where, fix=f"use only {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        value = _coerce(value, hints[key], f"{where}.{key}")
        expected = hints[key]
        base = getattr(expected, "__origin__", expected)
        if isinstance(base, type) and not is_dataclass(base) and not isinstance(value, base):
            raise InputError(f"config {key} = {value!r} should be {getattr(base, '__name__', base)}", where=where)
        kwargs[key] = value
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise InputError(f"invalid config: {exc}", where=where) from None
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except InputError as exc:
            raise InputError(exc.problem, where=where, fix=exc.fix) from None
    return obj


def config_to_dict(config: Any) -> dict[str, Any]:
    """TOML-safe dict (tuples as lists, sub-configs as tables)."""
    out: dict[str, Any] = {}
    for f in fields(config):
        value = getattr(config, f.name)
        if is_dataclass(value) and not isinstance(value, type):
            out[f.name] = config_to_dict(value)
        elif isinstance(value, tuple):
            out[f.name] = list(value)
        elif value is not None:
            out[f.name] = value
    return out


def config_hash(config: Any) -> str:
    """sha256 of the config's canonical TOML."""
    return hashlib.sha256(tomli_w.dumps(config_to_dict(config)).encode()).hexdigest()


def read_config_file(path: Path) -> dict[str, Any]:
    """A TOML config file as a dict; missing or malformed files raise ``InputError``."""
    path = Path(path)
    if not path.is_file():
        raise InputError("config file not found", where=path, fix="check the path")
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"is not valid TOML ({exc})", where=path, fix="repair the file") from None


def replace_config(config: C, **changes: Any) -> C:
    return dataclasses.replace(config, **changes)  # type: ignore[type-var]
