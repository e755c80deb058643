"""bf16 autocast only where it runs natively, and only when asked for."""

from __future__ import annotations

import pytest
import torch

from synthrelease.generators.wgan import WGANGenerator
from synthrelease.runtime import precision
from synthrelease.runtime.precision import autocast, cpu_bf16_supported, resolved_precision

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def _matmul_dtype(ctx: object) -> torch.dtype:
    with ctx:  # type: ignore[attr-defined]
        return (torch.ones(4, 4) @ torch.ones(4, 4)).dtype


def test_cpu_runs_fp32_unless_asked_and_supported(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolved_precision(CPU, cuda_bf16=True, cpu_bf16=False) == "fp32"
    assert _matmul_dtype(autocast(CPU, cuda_bf16=True, cpu_bf16=False)) == torch.float32
    native = cpu_bf16_supported()
    assert resolved_precision(CPU, cuda_bf16=False, cpu_bf16=True) == ("bf16" if native else "fp32")
    assert _matmul_dtype(autocast(CPU, cuda_bf16=False, cpu_bf16=True)) == (torch.bfloat16 if native
                                                                           else torch.float32)
    monkeypatch.setattr(precision, "cpu_bf16_supported", lambda: False)  # a CPU without native bf16
    assert resolved_precision(CPU, cuda_bf16=False, cpu_bf16=True) == "fp32"
    assert _matmul_dtype(autocast(CPU, cuda_bf16=False, cpu_bf16=True)) == torch.float32


def test_cuda_follows_its_own_switch() -> None:
    assert resolved_precision(CUDA, cuda_bf16=True, cpu_bf16=False) == "bf16"
    assert resolved_precision(CUDA, cuda_bf16=False, cpu_bf16=True) == "fp32"


def test_generators_autocast_on_cpu_only_with_cpu_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_bf16_supported", lambda: True)
    plain, fast = WGANGenerator({"mask_source": "train"}), WGANGenerator({"mask_source": "train", "cpu_bf16": True})
    plain.device = fast.device = CPU
    assert _matmul_dtype(plain.autocast()) == torch.float32  # the default: CPU runs stay in fp32
    assert _matmul_dtype(fast.autocast()) == torch.bfloat16
