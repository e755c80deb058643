"""The CPU cores this process may use (its affinity mask where the platform has one), and torch's thread count."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

__all__ = ["torch_threads", "usable_cores"]


def usable_cores() -> int:
    """Cores this process may run on: its affinity mask on Linux (a container or ``taskset`` limit), else the
    machine's count; at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch on ``n`` intra-op threads inside, restored afterwards (None: left as it is)."""
    if n is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
