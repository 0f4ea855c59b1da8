"""Log-probabilities of given answer tokens without the (answer tokens × vocabulary) logits tensor.

Why: the log-prob passes of an RL step (policy with gradients, reference without) turned every answer position
into 49k-wide logits, divided them by the temperature, log-softmaxed and gathered one entry each; the backward
ran the same width again. Profiled on a 2-core Intel Xeon with AVX-512 (fp32, 2026-12-07), a 16 × 64-token
step spent ~2.8 s there (of 15.6 s the profiler counted for the whole step, sampling included): the output
layer 533 ms per pass, then 200 MB tensors allocated afresh for every op (temperature division 200 ms,
log-softmax 310 ms per pass, its backward 280 ms).

Here the output layer runs chunk by chunk over the real answer positions only (no padding past the answer's
end) and each chunk is reduced at once to the token's log-probability. When the output layer is frozen (LoRA:
SmolLM2's tied embeddings are never adapted) the gradient is produced in the same sweep: d log p(t) / d h =
(onehot(t) − softmax) · W / T is a d-wide vector per position, kept in place of the logits, and the backward
multiplies it by the incoming per-token gradient. The matmul work is what the plain path does (forward logits
and the input-gradient matmul); nothing vocabulary-wide survives a chunk. Liger-Kernel's fused linear
cross-entropy does the same for the SFT loss on GPUs; it is a Triton kernel, hence written here.
A trainable output layer (full fine-tuning) takes the plain path: its weight gradient needs the upstream
gradient, which the forward does not know yet.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

CHUNK_ROWS = 128  # 128 × 49k fp32 logits = 25 MB per chunk, reused from chunk to chunk


def _chunk_logits(h: torch.Tensor, weight: torch.Tensor, temperature: float, bias: torch.Tensor | None = None
                  ) -> torch.Tensor:
    # In place: neither the matmul's nor the dtype copy's backward needs this output.
    logits = F.linear(h.to(weight.dtype), weight, bias).float()
    if temperature > 0 and temperature != 1:
        logits.div_(temperature)
    return logits


class _FrozenHeadLogProbs(torch.autograd.Function):
    """log p(target) per row of `h` through a frozen output layer; backward gives h's gradient only."""

    @staticmethod
    def forward(ctx: Any, h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float
                ) -> torch.Tensor:
        out = torch.empty(h.shape[0], dtype=torch.float32, device=h.device)
        grad_dir = torch.empty_like(h) if ctx.needs_input_grad[0] else None
        scale = 1.0 / temperature if temperature > 0 and temperature != 1 else 1.0
        for s in range(0, h.shape[0], CHUNK_ROWS):
            logits = _chunk_logits(h[s:s + CHUNK_ROWS], weight, temperature)
            t = targets[s:s + CHUNK_ROWS, None]
            lse = torch.logsumexp(logits, -1, keepdim=True)
            out[s:s + CHUNK_ROWS] = (logits.gather(-1, t) - lse).squeeze(-1)
            if grad_dir is not None:
                # softmax − onehot, in place of the logits; then · W gives −d log p / d(h·Wᵀ) mapped back to h
                probs = logits.sub_(lse).exp_()
                probs.scatter_add_(-1, t, probs.new_full(t.shape, -1.0))
                grad_dir[s:s + CHUNK_ROWS] = (probs.to(weight.dtype) @ weight).mul_(-scale).to(h.dtype)
        ctx.save_for_backward(grad_dir)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        (grad_dir,) = ctx.saved_tensors
        return grad_dir * grad.to(grad_dir.dtype)[:, None], None, None, None


def token_logps(h: torch.Tensor, head: nn.Module, targets: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(head(h) / temperature)[target] for each row of h (N × d) → N, fp32."""
    weight, bias = head.weight, getattr(head, "bias", None)
    if bias is None and not weight.requires_grad:
        return _FrozenHeadLogProbs.apply(h, weight, targets, temperature)
    out = []  # a trainable or biased head: plain autograd, still chunked
    for s in range(0, h.shape[0], CHUNK_ROWS):
        logits = _chunk_logits(h[s:s + CHUNK_ROWS], weight, temperature, bias)
        out.append(torch.log_softmax(logits, -1).gather(-1, targets[s:s + CHUNK_ROWS, None]).squeeze(-1))
    return torch.cat(out) if out else h.new_zeros(0, dtype=torch.float32)


def output_head(model: Any) -> tuple[nn.Module, nn.Module, str] | None:
    """(head, its parent module, attribute name) of the causal LM inside `model` (a peft or accelerate wrapper
    included), or None when there is no plain linear output layer to take out."""
    for m in model.modules():
        get = getattr(m, "get_output_embeddings", None)
        if callable(get):
            head = get()
            if not isinstance(head, nn.Linear):
                return None
            for parent in m.modules():
                for attr, child in parent.named_children():
                    if child is head:
                        return head, parent, attr
            return None
    return None


@contextlib.contextmanager
def hidden_states_out(model: Any) -> Iterator[nn.Module | None]:
    """While inside, `model(...).logits` are the final hidden states (the output layer is swapped for an
    identity); yields the output layer, or None (and changes nothing) when the model has none to swap.
    Swapping keeps the call going through `model` itself, so wrappers (accelerate's DDP) still see the
    forward and synchronise gradients."""
    found = output_head(model)
    if found is None:
        yield None
        return
    head, parent, attr = found
    setattr(parent, attr, nn.Identity())
    try:
        yield head
    finally:
        setattr(parent, attr, head)
