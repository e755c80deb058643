"""Registry of audit checks: ``register`` a ``Check`` subclass under its ``family.check`` name."""

from __future__ import annotations

from collections.abc import Iterable

from synthrelease.checks.base import Check
from synthrelease.errors import InputError

__all__ = ["FAMILIES", "check_names", "get_check_class", "register", "select_checks"]

FAMILIES = ("integrity", "privacy", "fidelity", "utility")
_REGISTRY: dict[str, type[Check]] = {}


def register(cls: type[Check]) -> type[Check]:
    """Class decorator: add a check to the registry (names are unique)."""
    family = cls.name.split(".", 1)[0]
    if family not in FAMILIES or cls.name.count(".") != 1:
        raise ValueError(f"check name {cls.name!r} must be 'family.check' with family in {FAMILIES}")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"check {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def _load_builtin() -> None:
    """Import the built-in check modules, which register their checks."""
    import synthrelease.checks.fidelity
    import synthrelease.checks.integrity
    import synthrelease.checks.privacy
    import synthrelease.checks.utility  # noqa: F401


def check_names() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def get_check_class(name: str) -> type[Check]:
    _load_builtin()
    if name not in _REGISTRY:
        raise InputError(f"unknown check {name!r}", fix=f"choose one of {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def select_checks(only: Iterable[str] = ()) -> list[Check]:
    """Instances of every registered check, or of those named in ``only`` (families or ``family.check``)."""
    names = check_names()
    wanted = [w.strip() for item in only for w in item.split(",") if w.strip()]
    if not wanted:
        return [get_check_class(n)() for n in names]
    chosen: list[str] = []
    for w in wanted:
        matches = [n for n in names if n == w or n.split(".", 1)[0] == w]
        if not matches:
            raise InputError(f"--only {w!r} names no check or family with checks",
                             fix=f"choose from families {', '.join(sorted({n.split('.')[0] for n in names}))} "
                                 f"or checks {', '.join(names)}")
        chosen.extend(m for m in matches if m not in chosen)
    return [get_check_class(n)() for n in chosen]
