"""vLLM as an optional generation backend for the text-in, text-out paths (CLI, simulator, evaluation, service).

Chosen with `rluf policy generate --backend vllm` or, for every command at once, `RLUF_GENERATION_BACKEND=vllm`
(`auto` = vLLM when it is importable and a GPU is visible, else PyTorch). It is not a dependency: install it
beside rluf on a GPU machine (`pip install vllm`; its CUDA torch then replaces the CPU pin of the Makefile).

What is shared with the PyTorch path, so that both answer the same question: the prompt token ids
(`encode_prompts`: the chat template, the assistant header, too-long prompts keep their end) and the sampling
controls (temperature, top-p, top-k, maximum new tokens; temperature 0 = greedy). vLLM stops at the model's
EOS tokens from its generation config, as `sample()` does.

vLLM loads plain model folders. A LoRA adapter folder (what `rluf policy train` writes with
`save_merged: false`) is merged into its base once and cached under `$RLUF_CACHE_DIR/merged/`, keyed by the
adapter's path and modification time.

The RL trainer keeps sampling with PyTorch: its samples must be scored by the very weights being trained, and
syncing LoRA updates into a vLLM engine every step is not built here.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from pathlib import Path
from typing import Any

from rluf.policy.generate import Prompt, SamplingConfig, default_dtype, encode_prompts

BACKENDS = ("torch", "vllm", "auto")


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def choose_backend(backend: str | None = None) -> str:
    """'torch' or 'vllm' from an explicit choice, else $RLUF_GENERATION_BACKEND, else 'torch'."""
    choice = (backend or os.environ.get("RLUF_GENERATION_BACKEND") or "torch").lower()
    if choice not in BACKENDS:
        raise ValueError(f"generation backend {choice!r}: expected one of {', '.join(BACKENDS)}")
    if choice == "auto":
        import torch

        return "vllm" if vllm_installed() and torch.cuda.is_available() else "torch"
    if choice == "vllm" and not vllm_installed():
        raise RuntimeError("generation backend 'vllm' asked for, but vllm is not installed "
                           "(pip install vllm on a GPU machine, or use --backend torch)")
    return choice


def plain_folder(spec: str | Path | None) -> Path:
    """A folder vLLM can load: the policy itself, or its LoRA adapter merged into the base (cached)."""
    from rluf.policy.model import cache_dir, load_policy, resolve_policy

    path = resolve_policy(spec)
    adapter = path / "adapter_config.json"
    if not adapter.exists():
        return path
    key = hashlib.sha256(f"{path.resolve()}:{adapter.stat().st_mtime_ns}".encode()).hexdigest()[:16]
    out = cache_dir() / "merged" / f"{path.name}-{key}"
    if (out / "config.json").exists():
        return out
    model, tok = load_policy(path, dtype="float32", device="cpu")
    tmp = out.with_name(out.name + ".tmp")  # rename at the end: an interrupted merge never leaves a half folder
    shutil.rmtree(tmp, ignore_errors=True)
    model.merge_and_unload().save_pretrained(tmp)
    tok.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def sampling_params(cfg: SamplingConfig, n: int, seed: int | None) -> Any:
    from vllm import SamplingParams

    greedy = cfg.temperature <= 0
    # vLLM refuses n > 1 with greedy decoding ("n must be 1 when using greedy sampling"); greedy answers are
    # identical anyway, so one is asked for and `VLLMGenerator.generate` repeats it.
    return SamplingParams(n=1 if greedy else n, temperature=0.0 if greedy else cfg.temperature,
                          top_p=1.0 if greedy else cfg.top_p,
                          top_k=-1 if greedy or cfg.top_k <= 0 else cfg.top_k,  # -1 = off in vLLM
                          max_tokens=cfg.max_new_tokens, seed=seed)


def gpu_memory_share() -> float:
    """vLLM reserves this share of the GPU per engine (its default 0.9). Commands that hold several policies at
    once (the A/B simulation, `rluf serve` with several arms) start one engine each: split it between them."""
    share = float(os.environ.get("RLUF_VLLM_GPU_MEMORY", "0.9"))
    if not 0 < share <= 1:
        raise ValueError(f"RLUF_VLLM_GPU_MEMORY={share}: expected a share of the GPU in (0, 1]")
    return share


class VLLMGenerator:
    """Same interface as `PolicyGenerator`: `generate(prompts, n)` → n answers per prompt."""

    def __init__(self, llm: Any, tokenizer: Any, sampling: SamplingConfig | None = None, name: str = "policy"):
        self.llm, self.tokenizer = llm, tokenizer
        self.sampling = sampling or SamplingConfig()
        self.name = name

    @classmethod
    def load(cls, spec: str | Path | None = None, dtype: str | None = None, **kw: Any) -> VLLMGenerator:
        from vllm import LLM

        from rluf.policy.model import load_tokenizer, resolve_policy

        folder = plain_folder(spec)
        kw.pop("batch_size", None)  # vLLM schedules its own batches
        llm = LLM(model=str(folder), dtype=dtype or default_dtype(), seed=kw.pop("seed", 0),
                  gpu_memory_utilization=gpu_memory_share())
        name = kw.pop("name", None) or Path(resolve_policy(spec)).name
        return cls(llm, load_tokenizer(folder), name=name, **kw)

    def generate(self, prompts: list[Prompt], n: int = 1, seed: int | None = None, progress: str | None = None,
                 sampling: SamplingConfig | None = None) -> list[list[str]]:
        if not prompts:
            return []
        cfg = sampling or self.sampling
        ids = encode_prompts(self.tokenizer, prompts, cfg.max_prompt_tokens)
        # One SamplingParams per prompt: a seed applies per request, so a shared one would give duplicate prompts
        # identical answers and every prompt's j-th sample the same random draws.
        params = [sampling_params(cfg, n, None if seed is None else seed + i) for i in range(len(ids))]
        outputs = self.llm.generate([{"prompt_token_ids": p} for p in ids], params, use_tqdm=progress is not None)
        answers = [[c.text.strip() for c in out.outputs] for out in outputs]
        return [a * n if len(a) == 1 else a for a in answers]  # greedy: one answer, repeated
