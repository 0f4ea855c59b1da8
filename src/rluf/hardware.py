"""What the hardware runs fast: bfloat16, and how to keep freed memory.

On a CPU without AVX512-BF16 or AMX, PyTorch emulates bf16 matmuls in software: measured on a 2-core AVX2
EPYC, a 2048² matmul ran at 0.3 GFLOP/s in bf16 against 106 GFLOP/s in fp32, and a MiniLM reward-model step
took 56 s instead of ~2 s. On a CPU with AVX512-BF16, bf16 is ~1.7× faster than fp32 (SmolLM2 generation).
So every "bf16 by default" in rluf means "bf16 where this check says so".
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any


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


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


@lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """With RLUF_KEEP_FREED_MEMORY=1, ask glibc's malloc to keep freed memory for reuse instead of handing it
    back to the kernel; True if set. Off by default: measured below, it pays in short runs only.

    Why: by default glibc serves every allocation above 32 MB (and, at first, above 128 kB) with a fresh mmap
    and unmaps it on free, and trims the heap top; PyTorch on the CPU has no caching allocator, so every step of
    a loop re-faults its big buffers page by page (the 16 × 65 × 49k log-prob logits, the per-token sampler
    tensors). On the microVMs this project runs on (Firecracker, free-page reporting) a fault is costly: in
    the sampler a 16 × 49k softmax, cumsum or dtype copy took ~3.7 ms in the decode loop against 0.04–0.3 ms
    on reused memory. With mmap off and no trimming, two repeats of an RL step on SmolLM2 took 3.47–3.65 s
    instead of 4.98–5.33 s for the log-prob passes + backward + optimizer, and 2.61–2.85 instead of
    3.0–3.4 ms per sampled token, in fresh processes of 7 steps. But over a whole quick demo it saved 1.4 %
    (455 vs 462 s, CGPO stage 115 vs 114 s) and raised peak RSS from 5.5 to 6.7 GB, and inside the RL-step
    benchmark our step did not move (7.31 vs 7.26 s): glibc's own threshold adapts once a process has freed
    a few big blocks. Hence opt-in. `rluf` (the console entry point) calls it, so the variable covers every
    command; from Python, call it before the heavy loop. No-op off glibc.
    """
    import ctypes
    import os
    import platform

    if os.environ.get("RLUF_KEEP_FREED_MEMORY", "0") != "1" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


def probe(size: int = 512, stream_mb: int = 192) -> dict[str, float | bool | int]:
    """About two seconds of measurements that say how fast this machine runs what rluf runs, so that timings
    taken on different machines can be compared (the RL-step benchmark and `rluf demo` record it).

    - `fp32_gflops` / `bf16_gflops`: a size² matmul (compute-bound work: reward-model training, prefill,
      the log-prob passes).
    - `copy_gbps`: a 256 MB tensor copied into another, bytes read + written per second.
    - `decode_gbps`: 16 rows times fp32 weights of SmolLM2's MLP shape (1536 × 576), `stream_mb` of them, so
      that the weights come from memory and not from cache, as in decoding: weight bytes per second. Decoding
      a 135M model in fp32 reads ~540 MB of weights per token, so this bounds tokens per second per batch.
      Measured on a 2-core AVX2-only AMD EPYC VM (2026-12-01): copy 15-19 GB/s, decode-shaped 2.3-3.8 GB/s
      with `F.linear`: the matmul kernel, not the memory, set the pace there (see rluf.policy.packed).
    """
    import time

    import torch

    def rate(fn: Any, work: float, budget_s: float = 0.4) -> float:
        fn()  # warm-up
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            dt = time.perf_counter() - t0
            if dt >= budget_s:
                return work * n / dt

    a = torch.randn(size, size)
    b16 = a.bfloat16()
    flops = 2 * size**3
    # An emulated bf16 matmul runs ~300x slower: one repeat is enough to tell.
    bf16 = rate(lambda: b16 @ b16, flops, budget_s=0.4 if bf16_is_fast() else 0.0)
    src = torch.ones(64 * 2**20)  # 256 MB of fp32, copied into memory already touched (no page faults)
    dst = torch.empty_like(src)
    weights = [torch.randn(1536, 576) for _ in range(max(1, stream_mb * 2**20 // (1536 * 576 * 4)))]
    x = torch.randn(16, 576)

    def stream() -> None:
        for w in weights:
            torch.nn.functional.linear(x, w)

    return {
        "torch_threads": torch.get_num_threads(),
        "bf16_fast": bf16_is_fast(),
        "fp32_gflops": round(rate(lambda: a @ a, flops) / 1e9, 1),
        "bf16_gflops": round(bf16 / 1e9, 1),
        "copy_gbps": round(rate(lambda: dst.copy_(src), 2 * src.numel() * 4) / 1e9, 2),
        "decode_gbps": round(rate(stream, sum(w.numel() * 4 for w in weights)) / 1e9, 2),
    }


def describe(p: dict[str, Any]) -> str:
    """One line of a `probe()` result, for reports."""
    return (f"Machine (`rluf hardware`): {p['torch_threads']} threads, fp32 matmul {p['fp32_gflops']} GFLOP/s, bf16 "
            f"{p['bf16_gflops']} GFLOP/s ({'fast' if p['bf16_fast'] else 'emulated: fp32 is used'}), memory copy "
            f"{p['copy_gbps']} GB/s, decode-shaped weights streamed at {p['decode_gbps']} GB/s.")
