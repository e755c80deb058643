"""Data files shipped with synthrelease (release policies), found in the installed wheel or the source tree."""

from __future__ import annotations

from pathlib import Path

from synthrelease.errors import InputError

__all__ = ["list_policies", "policy_path"]


def _policies_dir() -> Path:
    installed = Path(__file__).parent / "_data" / "policies"  # put there by the wheel build (pyproject.toml)
    if installed.is_dir():
        return installed
    source_tree = Path(__file__).resolve().parents[2] / "policies"  # editable install / source checkout
    if source_tree.is_dir():
        return source_tree
    raise InputError("the shipped policies are missing from this installation", where=installed,
                     fix="reinstall synthrelease")


def list_policies() -> list[str]:
    """Names of the shipped policies (file stems)."""
    return sorted(p.stem for p in _policies_dir().glob("*.toml"))


def policy_path(name: str) -> Path:
    """Path of the shipped policy ``name``."""
    path = _policies_dir() / f"{name}.toml"
    if not path.is_file():
        raise InputError(f"no shipped policy named {name!r}", fix=f"use one of {list_policies()} or a TOML file path")
    return path
