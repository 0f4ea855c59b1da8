"""Batched generation from a policy: chat template, left padding, KV cache, sampling controls, stop at EOS.

`sample()` is the low-level routine the trainer uses (it keeps token ids and masks so that log-probabilities
can be computed on exactly what was sampled); `PolicyGenerator` is the text-in, text-out wrapper the CLI, the
simulator and the service use.

Prompts are sorted by length before batching: left padding makes every row as long as the longest prompt
of its batch, and sorting keeps that waste small.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Prompt = str | list[dict[str, str]]


@dataclass
class SamplingConfig:
    max_new_tokens: int = 128
    temperature: float = 0.7  # 0 = greedy
    top_p: float = 0.95
    top_k: int = 0  # 0 = off
    max_prompt_tokens: int = 512  # longer prompts keep their end (the latest turns)


@dataclass
class Samples:
    """K samples per prompt, in prompt order: sample i answers prompt `prompt_index[i]`."""

    prompt_ids: Any  # LongTensor (N, P), left-padded
    prompt_mask: Any
    completion_ids: Any  # LongTensor (N, C), right-padded after EOS
    completion_mask: Any  # 1 on generated tokens up to and including EOS
    texts: list[str]
    prompt_index: list[int] = field(default_factory=list)

    @property
    def lengths(self) -> list[int]:
        return self.completion_mask.sum(1).tolist()

    def split(self, sizes: list[int]) -> list[Samples]:
        """The samples of consecutive prompt groups (`sizes` prompts each), prompt indices counted within
        each group: one `sample` call for several tasks' prompts, then each task's share."""
        out, first = [], 0
        for size in sizes:
            rows = [r for r, i in enumerate(self.prompt_index) if first <= i < first + size]
            out.append(Samples(self.prompt_ids[rows], self.prompt_mask[rows], self.completion_ids[rows],
                               self.completion_mask[rows], [self.texts[r] for r in rows],
                               [self.prompt_index[r] - first for r in rows]))
            first += size
        return out


def default_dtype() -> str:
    """bfloat16 where the hardware runs it fast (see rluf.hardware), else float32."""
    from rluf.hardware import bf16_is_fast

    return "bfloat16" if bf16_is_fast() else "float32"


def as_messages(prompt: Prompt) -> list[dict[str, str]]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return list(prompt)


def encode_prompts(tok: Any, prompts: list[Prompt], max_prompt_tokens: int = 512) -> list[list[int]]:
    """Chat-template token ids ending with the assistant header; too-long prompts keep their end."""
    out = []
    for p in prompts:
        ids = tok.apply_chat_template(as_messages(p), add_generation_prompt=True, tokenize=True)
        if hasattr(ids, "keys"):  # transformers 5 returns a BatchEncoding
            ids = ids["input_ids"]
        out.append(list(ids)[-max_prompt_tokens:])
    return out


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[Any, Any]:
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s):] = torch.tensor(s)
            mask[i, width - len(s):] = 1
    return ids, mask


def check_window(model: Any, length: int) -> None:
    """The shared-prefill cache is built for full attention. A sliding-window layer keeps only its last
    window-1 positions, so a sequence longer than the window would not line up with the left-padded mask:
    refuse it clearly instead of failing deep inside torch.cat (no default model has a window that short)."""
    window = getattr(getattr(model, "config", None), "sliding_window", None)
    if isinstance(window, int) and length > window:
        raise ValueError(f"this policy uses sliding-window attention (window {window} tokens) and a prompt plus its "
                         f"answer reaches {length} tokens: rluf's sampling and log-prob passes need full attention "
                         "over the whole sequence; shorten max_prompt_tokens / max_new_tokens below the window")


# Sequences decoded together. Small-batch matrix products run far below the CPU's peak: on a 2-core AVX2 EPYC
# in fp32 a decoding step of SmolLM2 cost ~17 ms per row at 16 rows and ~9 ms at 64 (64 evaluation prompts ×
# 96 tokens: 100-120 s in batches of 16, 69-80 s in one of 64). Memory stays small: the cache for 64 rows of 608
# positions is ~1.8 GB in fp32.
GENERATION_BATCH_SIZE = 64
# Prefixes of similar length share one padded forward pass when padding adds at most this share of tokens.
PREFILL_PADDING_SLACK = 1.25
PREFILL_MAX_TOKENS = 4096  # padded tokens per prefill pass (activation memory)


def prefill_groups(lengths: list[int], slack: float = PREFILL_PADDING_SLACK, max_tokens: int = PREFILL_MAX_TOKENS
                   ) -> list[list[int]]:
    """Indices of the non-empty prefixes in groups of similar length (ascending): a group's padded size
    (members × its longest) stays within `slack` × its real tokens and within `max_tokens` (a prefix longer
    than that is a group of its own)."""
    groups: list[list[int]] = []
    real = 0
    for i in sorted((i for i, n in enumerate(lengths) if n), key=lambda i: lengths[i]):
        n = lengths[i]
        if groups and (len(groups[-1]) + 1) * n <= min(slack * (real + n), max_tokens):
            groups[-1].append(i)
            real += n
        else:
            groups.append([i])
            real = n
    return groups


def prefill(model: Any, prefixes: list[list[int]], rows: list[int] | None = None, device: Any = None
            ) -> tuple[Any, Any]:
    """Run each distinct prefix through `model` once and return a left-padded key/value cache whose row i
    holds prefix `rows[i]` (default: one row per prefix), with its attention mask; (None, mask) when every
    prefix is empty. Gradients flow when called outside no_grad.

    Why not one padded batch of every row: the K samples of a prompt share its prefix, and prompts that meet
    in a batch differ a lot in length (32 to 423 tokens in the chat mix, with the chat template); a padded
    batch computes every copy and every padded position in every layer. Why not one pass per prefix either:
    short prompts make small matrix products, which the CPU runs far below its peak (on a 2-core AVX2 EPYC,
    fp32, 64 evaluation prompts of 33-211 tokens: 18.9 s one by one, against 13.4 s for a single padded
    batch of as many tokens *with* padding). So prefixes of similar length share a pass (`prefill_groups`:
    at most 25 % padding), left-padded, positions counted from each prefix's first real token; only the real
    positions' keys and values are kept.
    """
    import torch
    import torch.nn.functional as F
    from transformers import DynamicCache

    idx = torch.arange(len(prefixes)) if rows is None else torch.as_tensor(rows)
    width = max(len(p) for p in prefixes)
    mask = torch.zeros((len(prefixes), width), dtype=torch.long)
    for i, p in enumerate(prefixes):
        mask[i, width - len(p):] = 1
    mask = mask[idx].to(device)
    if width == 0:
        return None, mask
    config = getattr(model, "config", None)
    # (cache, row in that cache's batch, padded width of that batch) per prefix
    where: list[tuple[Any, int, int] | None] = [None] * len(prefixes)
    for group in prefill_groups([len(p) for p in prefixes]):
        w = max(len(prefixes[i]) for i in group)
        ids = torch.zeros((len(group), w), dtype=torch.long)
        g_mask = torch.zeros((len(group), w), dtype=torch.long)
        for r, i in enumerate(group):
            ids[r, w - len(prefixes[i]):] = torch.tensor(prefixes[i])
            g_mask[r, w - len(prefixes[i]):] = 1
        pos = (g_mask.cumsum(1) - 1).clamp(min=0)
        c = DynamicCache(config=config)
        model(input_ids=ids.to(device), attention_mask=g_mask.to(device), position_ids=pos.to(device), cache=c,
              use_cache=True, logits_to_keep=1)
        for r, i in enumerate(group):
            where[i] = (c, r, w)
    some = next(w for w in where if w is not None)[0]
    cache = DynamicCache(config=config)
    idx = idx.to(some.layers[0].keys.device)
    for layer, first in enumerate(some.layers):
        keys, values = [], []
        for at, p in zip(where, prefixes, strict=True):
            if at is None:
                keys.append(first.keys.new_zeros((1,) + first.keys.shape[1:2] + (width, first.keys.shape[-1])))
                values.append(first.values.new_zeros((1,) + first.values.shape[1:2] + (width, first.values.shape[-1])))
            else:
                c, r, w = at
                # the prefix's real positions only (its padding in the shared pass is dropped), re-padded on the left
                k = c.layers[layer].keys[r:r + 1, :, w - len(p):]
                v = c.layers[layer].values[r:r + 1, :, w - len(p):]
                keys.append(F.pad(k, (0, 0, width - len(p), 0)))
                values.append(F.pad(v, (0, 0, width - len(p), 0)))
        cache.update(torch.cat(keys)[idx], torch.cat(values)[idx], layer)
    return cache, mask


def completion_mask(completion_ids: Any, eos_ids: list[int]) -> Any:
    """1 on every token up to and including the first EOS, 0 after it."""
    import torch

    is_eos = torch.isin(completion_ids, torch.tensor(eos_ids, device=completion_ids.device))
    seen_before = (is_eos.long().cumsum(1) - is_eos.long()) > 0
    return (~seen_before).long()


def eos_token_ids(model: Any, tok: Any) -> list[int]:
    ids = model.generation_config.eos_token_id
    ids = list(ids) if isinstance(ids, list | tuple) else ([ids] if ids is not None else [])
    if tok.eos_token_id is not None and tok.eos_token_id not in ids:
        ids.append(tok.eos_token_id)
    return ids


TOP_P_CANDIDATES = 256
"""How many of the most likely tokens `next_tokens` looks at for nucleus sampling before it sorts the whole
vocabulary (only for rows whose nucleus does not fit in them)."""


def next_tokens(logits: Any, cfg: SamplingConfig, candidates: int = TOP_P_CANDIDATES) -> Any:
    """One token per row: greedy, or drawn from softmax(logits / temperature) after top-k and top-p (nucleus)
    filtering, with the semantics of transformers' TopK/TopP warpers.

    The draw is by inverse CDF (one uniform per row, a cumulative sum, a binary search) rather than
    `torch.multinomial`, which draws an exponential for every vocabulary entry: 16 × 49k per token, 21 ms of a
    ~200 ms decoding step on this CPU (profiled). Same distribution, same global torch RNG (seeds hold).

    Top-p without sorting the vocabulary: the nucleus is the shortest run of most likely tokens whose mass
    reaches top_p, so whenever the `candidates` most likely tokens (one `topk`) hold at least top_p, the nucleus
    lies among them and is cut and sampled there. Measured on 16 × 49k SmolLM2-sized rows: a full descending
    sort took 111 ms per decoding step, `topk(256)` 8 ms. Rows whose candidates hold less than top_p (very flat
    distributions) still sort the whole vocabulary.
    """
    import torch

    if cfg.temperature <= 0:
        return logits.argmax(-1)
    logits = logits.float() / cfg.temperature
    if cfg.top_k and cfg.top_k < logits.shape[-1]:
        kth = logits.topk(cfg.top_k, -1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, -1)
    u = torch.rand((probs.shape[0], 1), device=probs.device)
    if cfg.top_p >= 1.0:
        return _draw(probs, u)
    p, idx = probs.topk(min(candidates, probs.shape[-1]), -1)  # descending
    fits = p.sum(-1) >= cfg.top_p
    # Drop a token once the more likely ones already hold top_p of the mass (the most likely always stays).
    p = p.masked_fill(p.cumsum(-1) - p >= cfg.top_p, 0.0)
    token = idx.gather(-1, _draw(p, u)[:, None]).squeeze(1)
    if not bool(fits.all()):
        flat = ~fits
        sorted_p, order = probs[flat].sort(-1, descending=True)
        sorted_p = sorted_p.masked_fill(sorted_p.cumsum(-1) - sorted_p >= cfg.top_p, 0.0)
        token[flat] = order.gather(-1, _draw(sorted_p, u[flat])[:, None]).squeeze(1)
    return token


def _draw(weights: Any, u: Any) -> Any:
    """Inverse CDF: per row, the first index whose cumulative weight exceeds u × the row's total weight."""
    import torch

    cdf = weights.cumsum(-1)
    return torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(1).clamp(max=weights.shape[-1] - 1)


def static_copy(cache: Any, config: Any, max_len: int) -> Any:
    """The prefill's cache copied into a preallocated StaticCache of `max_len` positions.

    Why: a DynamicCache concatenates every layer's keys and values into new tensors at every decoding step
    (16 rows × ~460 positions: ~170 MB of fresh allocations per token for SmolLM2). On the 2-core avx512_bf16
    CPU, where the bf16 matmuls are fast, writing in place sampled 16 × 64 tokens 8–10 % faster in four
    interleaved pairs; on an AVX2-only CPU in fp32 the difference was within noise (0.201 vs 0.206 s per
    step). Greedy tokens are identical in fp32; in bf16 attention over the padded length rounds differently.
    """
    from transformers import StaticCache

    static = StaticCache(config=config, max_cache_len=max_len)
    for i, layer in enumerate(cache.layers):
        if getattr(layer, "keys", None) is not None and layer.keys.numel():
            static.update(layer.keys, layer.values, i)
    return static


def decode(model: Any, last: Any, mask: Any, cache: Any, cfg: SamplingConfig, eos: list[int], pad: int) -> Any:
    """Sample up to cfg.max_new_tokens after each row's prompt (its last token `last`, the rest in `cache`);
    rows that emitted an EOS get `pad` from then on; stops when every row has.

    Hand-written rather than `model.generate`: generate cannot take the faster sampler above, and the loop is
    the textbook one (one token per row per forward pass, KV cache, positions from the attention mask).
    """
    import torch
    from transformers import DynamicCache

    config = getattr(model, "config", None)
    cache = cache if cache is not None else DynamicCache(config=config)
    # Sliding-window models (within their window: `check_window`) keep the dynamic cache, whose layers
    # StaticCache would lay out differently.
    if config is not None and all(type(layer).__name__ == "DynamicLayer" for layer in cache.layers):
        cache = static_copy(cache, config, mask.shape[1] + cfg.max_new_tokens)
    eos_t = torch.tensor(eos, device=last.device)
    pos = mask.sum(1, keepdim=True) - 1
    done = torch.zeros(last.shape[0], dtype=torch.bool, device=last.device)
    cur, out = last, []
    for _ in range(cfg.max_new_tokens):
        logits = model(input_ids=cur, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True).logits
        token = torch.where(done, pad, next_tokens(logits[:, -1], cfg))
        out.append(token)
        done |= torch.isin(token, eos_t)
        if bool(done.all()):
            break
        cur, pos = token[:, None], pos + 1
        mask = torch.cat([mask, torch.ones_like(cur)], 1)
    return torch.stack(out, 1) if out else last[:, :0]


def sample(model: Any, tok: Any, prompt_ids: list[list[int]], n: int | list[int] = 1,
           cfg: SamplingConfig | None = None, batch_size: int = GENERATION_BATCH_SIZE, seed: int | None = None,
           progress: str | None = None) -> Samples:
    """n samples for each tokenised prompt (or n[i] for prompt i), batched by similar length; results in
    prompt order."""
    import torch

    from rluf.progress import track

    cfg = cfg or SamplingConfig()
    counts = [n] * len(prompt_ids) if isinstance(n, int) else list(n)
    if len(counts) != len(prompt_ids):
        raise ValueError(f"n has {len(counts)} counts for {len(prompt_ids)} prompts")
    if seed is not None:
        torch.manual_seed(seed)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    if not prompt_ids:
        empty = torch.zeros((0, 0), dtype=torch.long)
        return Samples(empty, empty, empty, empty, [], [])
    eos = eos_token_ids(model, tok)
    check_window(model, max(map(len, prompt_ids), default=0) + cfg.max_new_tokens)
    order = sorted(range(len(prompt_ids)), key=lambda i: -len(prompt_ids[i]))
    batches: list[list[int]] = []  # batch_size counts sequences, not prompts
    size = 0
    for i in order:
        if batches and size + counts[i] <= batch_size:
            batches[-1].append(i)
            size += counts[i]
        else:
            batches.append([i])
            size = counts[i]
    pieces: dict[int, tuple[list[int], Any]] = {}
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    for b in track(batches, progress, total=len(batches)) if progress else batches:
        ids, mask = left_pad([prompt_ids[i] for i in b], pad)
        ids, mask = ids.to(device), mask.to(device)
        with torch.inference_mode():
            # Prefill each prompt once, unpadded, and repeat its cache n times: `num_return_sequences` would run
            # the prompt n times, padded to the longest of the batch.
            rows = [j for j, i in enumerate(b) for _ in range(counts[i])]
            cache, _ = prefill(model, [prompt_ids[i][:-1] for i in b], rows, device=device)
            out = decode(model, ids[rows, -1:], mask[rows], cache, cfg, eos, pad)
        comp = out.cpu()
        at = 0
        for i in b:
            pieces[i] = (prompt_ids[i], comp[at:at + counts[i]])
            at += counts[i]
    if was_training:
        model.train()
    flat_prompts, flat_comps, index = [], [], []
    for i in range(len(prompt_ids)):
        p, comps = pieces[i]
        for c in comps:
            flat_prompts.append(p)
            flat_comps.append(c)
            index.append(i)
    p_ids, p_mask = left_pad(flat_prompts, pad)
    width = max(c.shape[0] for c in flat_comps)
    c_ids = torch.full((len(flat_comps), width), pad, dtype=torch.long)
    for k, c in enumerate(flat_comps):
        c_ids[k, : c.shape[0]] = c
    c_mask = completion_mask(c_ids, eos)
    texts = [tok.decode(c_ids[k][c_mask[k].bool()], skip_special_tokens=True).strip() for k in range(len(c_ids))]
    return Samples(p_ids, p_mask, c_ids * c_mask + pad * (1 - c_mask), c_mask, texts, index)


class PolicyGenerator:
    """Text in, text out: `PolicyGenerator.load(DIR).generate(prompts, n=1)` → n answers per prompt."""

    def __init__(self, model: Any, tokenizer: Any, sampling: SamplingConfig | None = None,
                 batch_size: int = GENERATION_BATCH_SIZE,
                 name: str = "policy"):
        self.model, self.tokenizer = model, tokenizer
        self.sampling = sampling or SamplingConfig()
        self.batch_size = batch_size
        self.name = name

    @classmethod
    def load(cls, spec: str | Path | None = None, dtype: str | None = None, backend: str | None = None,
             **kw: Any) -> Any:
        """A PolicyGenerator, or a VLLMGenerator (same interface) when the backend resolves to vLLM:
        `backend` 'torch' | 'vllm' | 'auto', default $RLUF_GENERATION_BACKEND or 'torch'."""
        import torch

        from rluf.policy.model import load_policy, resolve_policy
        from rluf.policy.vllm_backend import VLLMGenerator, choose_backend

        if choose_backend(backend) == "vllm":
            return VLLMGenerator.load(spec, dtype=dtype, **kw)

        torch.set_num_threads(max(1, int(os.environ.get("RLUF_THREADS", torch.get_num_threads()))))
        model, tok = load_policy(spec, dtype=dtype or default_dtype())
        if hasattr(model, "merge_and_unload"):  # an adapter: merge for generation (no LoRA matmuls per token)
            model = model.merge_and_unload()
        from rluf.policy.packed import pack_linears

        model.requires_grad_(False)  # inference only
        pack_linears(model)  # on the CPU: oneDNN-packed weights (rluf.policy.packed)
        return cls(model, tok, name=kw.pop("name", None) or Path(resolve_policy(spec)).name, **kw)

    def generate(self, prompts: list[Prompt], n: int = 1, seed: int | None = None, progress: str | None = None,
                 sampling: SamplingConfig | None = None) -> list[list[str]]:
        if not prompts:
            return []
        cfg = sampling or self.sampling
        ids = encode_prompts(self.tokenizer, prompts, cfg.max_prompt_tokens)
        s = sample(self.model, self.tokenizer, ids, n, cfg, self.batch_size, seed, progress)
        return [s.texts[i * n:(i + 1) * n] for i in range(len(prompts))]
