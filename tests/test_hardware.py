"""rluf.hardware: the allocator setting every heavy command applies."""

import platform

import pytest

from rluf.hardware import keep_freed_memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_keep_freed_memory_is_opt_in(monkeypatch):
    monkeypatch.delenv("RLUF_KEEP_FREED_MEMORY", raising=False)
    assert keep_freed_memory.__wrapped__() is False  # default: malloc left alone
    monkeypatch.setenv("RLUF_KEEP_FREED_MEMORY", "1")
    assert keep_freed_memory.__wrapped__() is True  # both mallopt calls accepted
    import numpy as np

    big = [np.ones(40_000_000 // 8) for _ in range(3)]  # above glibc's 32 MB mmap ceiling: now from the heap
    assert sum(float(b.sum()) for b in big) == 3 * 5_000_000
