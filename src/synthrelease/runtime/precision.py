"""bf16 autocast on a CPU that runs bf16 natively (oneDNN: AVX512-BF16 or AMX), fp32 elsewhere.

On the 2-core AMD EPYC (AVX512-BF16) development host, bf16 autocast made a DynUNet training step 1.7x and a
32^3 WGAN step 1.6x faster than fp32 (benchmarks/RESULTS.md, 2026-12-07). Where the CPU has no native bf16 it would
be emulated and slower, so the runs stay in fp32 there; the choice is recorded with the run.

Not bit-for-bit reproducible: on that host a 4-level DynUNet on 16^3 patches trained under bf16 gave other weights
when the process had trained another model first (fp32: the same weights; ``torch.backends.mkldnn.deterministic``
and ``torch.use_deterministic_algorithms`` did not change that). At the demo's sizes two runs agreed to every digit
of every metric. So it is opt-in (``cpu_bf16``) everywhere.
"""

from __future__ import annotations

import contextlib
from functools import cache
from typing import Any

import torch

__all__ = ["autocast", "cpu_bf16_supported", "resolved_precision"]


@cache
def cpu_bf16_supported() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def resolved_precision(device: torch.device, *, cuda_bf16: bool, cpu_bf16: bool) -> str:
    """``bf16`` where autocast will run (CUDA when ``cuda_bf16``; a CPU with native bf16 when ``cpu_bf16``), else
    ``fp32``."""
    if device.type == "cuda":
        return "bf16" if cuda_bf16 else "fp32"
    if device.type == "cpu" and cpu_bf16 and cpu_bf16_supported():
        return "bf16"
    return "fp32"


def autocast(device: torch.device, *, cuda_bf16: bool, cpu_bf16: bool) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on ``device`` as ``resolved_precision`` decides, or nothing."""
    if resolved_precision(device, cuda_bf16=cuda_bf16, cpu_bf16=cpu_bf16) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
