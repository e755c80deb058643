"""Registry of generators by name; classes are imported on first use (torch-heavy modules stay unimported)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from synthrelease.errors import InputError

if TYPE_CHECKING:
    from synthrelease.generators.base import Generator

__all__ = ["available_generators", "create_generator", "get_generator_class"]

_REGISTRY: dict[str, str] = {
    "copycat": "synthrelease.generators.copycat:CopycatGenerator",
    "ldm": "synthrelease.generators.ldm:LatentDiffusionGenerator",
    "ddpm": "synthrelease.generators.ddpm:DDPMGenerator",
    "mask": "synthrelease.generators.mask:MaskDiffusionGenerator",
    "shape": "synthrelease.generators.shape:ShapeModelGenerator",
    "wgan": "synthrelease.generators.wgan:WGANGenerator",
}


def available_generators() -> list[str]:
    return sorted(_REGISTRY)


def get_generator_class(name: str) -> type[Generator]:
    if name not in _REGISTRY:
        raise InputError(f"unknown generator {name!r}", fix=f"use one of {available_generators()}")
    module, _, attr = _REGISTRY[name].partition(":")
    cls: type[Generator] = getattr(importlib.import_module(module), attr)
    return cls


def create_generator(name: str, config: dict[str, Any] | None = None) -> Generator:
    """A new, untrained generator ``name`` with ``config`` (a dict, e.g. read from TOML)."""
    return get_generator_class(name)(config)
