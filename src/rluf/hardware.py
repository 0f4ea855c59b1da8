"""What the hardware runs fast. One question so far: bfloat16.

On a CPU without AVX512-BF16 or AMX, PyTorch emulates bf16 matmuls in software: measured on a 2-core AVX2
EPYC, a 2048² matmul ran at 0.3 GFLOP/s in bf16 against 106 GFLOP/s in fp32, and a MiniLM reward-model step
took 56 s instead of ~2 s. On a CPU with AVX512-BF16, bf16 is ~1.7× faster than fp32 (SmolLM2 generation).
So every "bf16 by default" in rluf means "bf16 where this check says so".
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def bf16_is_fast() -> bool:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_bf16(requested: bool | None) -> bool:
    """None = auto (bf16 where it is fast). An explicit True is kept: the user asked for it."""
    return bf16_is_fast() if requested is None else requested
