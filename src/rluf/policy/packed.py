"""Faster fp32 and bf16 linear layers for sampling on the CPU: weights pre-packed for oneDNN.

Why: decoding runs every linear layer on a handful of rows (16–64 sequences × 1 token), where the CPU's
plain fp32 matmul (`F.linear`, MKL) streams the weights far below what the memory delivers. Measured on a
2-core AVX2-only AMD EPYC (2026-12-01), SmolLM2 MLP-shaped weights (1536 × 576) streamed from memory:
`F.linear` 1.39 ms per layer at 16 rows against 0.68 ms with the weight reordered once into oneDNN's blocked
layout (`torch.ops.mkldnn._reorder_linear_weight`, then `_linear_pointwise`), 2.3 against 1.2 ms at 64 rows,
and still 1.1–1.4x faster at 512–2,048 rows; the 49k-wide output layer at 16 rows took 62 ms against 17 ms.
A memory copy ran at 15–19 GB/s there, the plain matmul at ~3 GB/s of weights: the kernel, not the memory,
set the pace. PyTorch's inductor does the same reorder when it compiles a frozen model, but compiling the
decode step took 59 s and sampled slower than eager (benchmarks/results/rl_step.md); Intel's IPEX was not
tried. So the reorder is called directly. Results equal `F.linear` up to fp32 summation order (~1e-5).

bf16 weights (the policy's base on CPUs with avx512_bf16 / AMX) are packed the same way where PyTorch's oneDNN
has bf16 (`torch.ops.mkldnn._is_mkldnn_bf16_supported`) — inductor's own freezing pass packs bf16 linears with
these two ops. On a 2-core AMD EPYC with avx512_bf16 (2026-12-07, one thread, the other core busy) a
SmolLM2-shaped stack of 210 layers plus the output layer at 16 rows took 36-55 ms per token packed against
54-98 ms with `F.linear`, in four alternating repeats (the output layer alone: 5.9-10.9 ms against 10.5-17.4).

Only frozen layers are packed: the inference copies (the trainer's merged sampling copy, the full-FT reference,
`PolicyGenerator`) and the frozen base layers under a LoRA adapter, whose forward passes (policy with gradients,
reference without) then run packed too; the gradient to the layer's input is a plain matmul with the weight.
On the same machine the log-prob passes of an RL step (16 × 64 answer tokens, SmolLM2 + LoRA r=16) took
12.5–12.9 s instead of 13.6 s with backward and 4.8–4.9 s instead of 5.6–6.0 s for the reference. A packed
layer repacks itself when its weight is written through the parameter (`copy_` under no_grad: the sampling
copy's refresh before each step) or replaced, detected by the tensor's version counter and storage. Writes
through `.data` (peft's merge) bump neither: call `invalidate()` then.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def bf16_packing_supported() -> bool:
    """oneDNN's bf16 linear on this CPU (PyTorch's own check: AVX-512 or AVX2-VNNI-2 and up)."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check is not None and check())


def packing_available(weight: torch.Tensor) -> bool:
    dtype_ok = weight.dtype == torch.float32 or (weight.dtype == torch.bfloat16 and bf16_packing_supported())
    return (weight.device.type == "cpu" and dtype_ok and weight.dim() == 2
            and torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"))


# layer → ((weight version, data pointer), packed weight). Kept outside the module: a packed weight is an
# opaque oneDNN tensor that deepcopy and pickle cannot copy (the trainer deep-copies the policy into its
# sampling copy), and a copy repacks on its first call anyway.
_PACKED: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[int, int], torch.Tensor]] = weakref.WeakKeyDictionary()


class _FrozenPackedLinear(torch.autograd.Function):
    """y = x Wᵀ + b with the packed weight; backward gives the input's gradient only (W and b are frozen)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, packed: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
                ) -> torch.Tensor:
        ctx.save_for_backward(weight)
        return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        (weight,) = ctx.saved_tensors
        return grad.matmul(weight), None, None, None


class PackedLinear(nn.Linear):
    """An nn.Linear whose inference forward uses a oneDNN-packed copy of its weight. `pack_linears` turns
    existing layers into it in place (class swap), so parameter names, state dicts and weight tying stay."""

    rows_hint = 16  # the batch size the packed layout is tuned for (measured: 16 or 64 makes no difference)

    def invalidate(self) -> None:
        _PACKED.pop(self, None)

    def _pack(self) -> torch.Tensor:
        w = self.weight
        stamp = (w._version, w.data_ptr())
        cached = _PACKED.get(self)
        if cached is None or cached[0] != stamp:
            with torch.no_grad():
                cached = (stamp, torch.ops.mkldnn._reorder_linear_weight(w.detach(), self.rows_hint))
            _PACKED[self] = cached
        return cached[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.weight, self.bias
        trainable = w.requires_grad or (b is not None and b.requires_grad)
        if trainable and torch.is_grad_enabled():
            return F.linear(x, w, b)
        if x.dtype != w.dtype:
            # A bf16 layer under bf16 autocast (the LoRA base's log-prob passes): autocast would cast the input
            # to bf16 inside F.linear; do the same before the packed op, which autocast does not know.
            if not (w.dtype == torch.bfloat16 and torch.is_autocast_enabled(x.device.type)
                    and torch.get_autocast_dtype(x.device.type) == torch.bfloat16):
                return F.linear(x, w, b)
            x = x.to(w.dtype)
        if x.requires_grad and torch.is_grad_enabled():
            return _FrozenPackedLinear.apply(x, self._pack(), w, b)
        return torch.ops.mkldnn._linear_pointwise(x, self._pack(), b, "none", [], "")


def pack_linears(model: Any) -> int:
    """Turn the frozen fp32 (and, where oneDNN has bf16 here, bf16) CPU nn.Linear layers of `model` (weight and
    bias without requires_grad: freeze an inference copy first) into PackedLinear, in place; returns how many.
    A model on another device or in another dtype is left as it is (0)."""
    n = 0
    for m in model.modules():
        if type(m) is not nn.Linear or not packing_available(m.weight):
            continue
        if m.weight.requires_grad or (m.bias is not None and m.bias.requires_grad):
            continue
        m.__class__ = PackedLinear
        n += 1
    return n
