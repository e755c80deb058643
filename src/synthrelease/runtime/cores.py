"""The CPU cores this process may use (its affinity mask where the platform has one)."""

from __future__ import annotations

import os

__all__ = ["usable_cores"]


def usable_cores() -> int:
    """Cores this process may run on: its affinity mask on Linux (a container or ``taskset`` limit), else the
    machine's count; at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)
