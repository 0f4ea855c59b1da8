"""rluf.hardware: the opt-in allocator setting (RLUF_KEEP_FREED_MEMORY=1)."""

import ctypes
import platform

import pytest

from rluf.hardware import keep_freed_memory


class _Mallinfo2(ctypes.Structure):  # glibc >= 2.33, malloc.h
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_keep_freed_memory_is_opt_in_and_stops_mmap(monkeypatch):
    import numpy as np

    libc = ctypes.CDLL("libc.so.6")
    if not hasattr(libc, "mallinfo2"):
        pytest.skip("glibc older than 2.33: no mallinfo2")
    libc.mallinfo2.restype = _Mallinfo2
    monkeypatch.delenv("RLUF_KEEP_FREED_MEMORY", raising=False)
    assert keep_freed_memory.__wrapped__() is False  # default: malloc left alone
    monkeypatch.setenv("RLUF_KEEP_FREED_MEMORY", "1")
    assert keep_freed_memory.__wrapped__() is True  # both mallopt calls accepted
    mapped = libc.mallinfo2().hblkhd
    big = np.ones(40_000_000 // 8)  # above glibc's 32 MB mmap ceiling: by default its own mmap
    assert libc.mallinfo2().hblkhd == mapped  # ... now from the heap
    assert float(big.sum()) == 5_000_000


def test_hardware_command_reports_measured_speeds_and_the_demo_profile():
    import json

    from typer.testing import CliRunner

    from rluf.cli import app
    from rluf.demo import resolve_profile

    res = CliRunner().invoke(app, ["hardware", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    for key in ("fp32_gflops", "bf16_gflops", "copy_gbps", "decode_gbps"):
        assert out[key] > 0, key
    assert out["demo_profile"] == resolve_profile(None)
    assert out["bf16_fast"] == (out["demo_profile"] == "quick")
