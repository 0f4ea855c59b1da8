"""The optional vLLM generation backend, run against a stand-in `vllm` module (vLLM itself needs a GPU build
that this project's CPU machines do not install). The stand-in decodes greedily with transformers from the
folder it is given, so these tests check what rluf controls: the folder vLLM loads (a LoRA adapter merged into
its base), the prompt token ids it receives, the sampling parameters, and the shape of the answers."""

from __future__ import annotations

import importlib.machinery
import sys
import types
from pathlib import Path

import pytest

from tiny_models import make_tiny_policy


class FakeSamplingParams:
    def __init__(self, **kw):
        if kw.get("temperature", 1.0) < 1e-5 and kw.get("n", 1) > 1:  # as vLLM's own check does
            raise ValueError(f"n must be 1 when using greedy sampling, got {kw['n']}.")
        self.__dict__.update(kw)


class FakeLLM:
    instances: list[FakeLLM] = []

    def __init__(self, model: str, dtype: str, seed: int, gpu_memory_utilization: float = 0.9):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.folder, self.dtype, self.seed, self.gpu_share = Path(model), dtype, seed, gpu_memory_utilization
        self.model = AutoModelForCausalLM.from_pretrained(model).eval()
        self.tok = AutoTokenizer.from_pretrained(model)
        self.received: list[list[int]] = []
        self.params: list = []
        FakeLLM.instances.append(self)

    def generate(self, prompts, params, use_tqdm=False):
        import torch

        outs = []
        per_prompt = params if isinstance(params, list) else [params] * len(prompts)  # vLLM takes one or a list
        assert len(per_prompt) == len(prompts)
        self.params.extend(per_prompt)
        for p, params in zip(prompts, per_prompt, strict=True):
            ids = p["prompt_token_ids"]
            self.received.append(list(ids))
            with torch.no_grad():
                mask = torch.ones(1, len(ids), dtype=torch.long)
                full = self.model.generate(torch.tensor([ids]), attention_mask=mask, do_sample=False,
                                           max_new_tokens=params.max_tokens, eos_token_id=self.tok.eos_token_id,
                                           pad_token_id=self.tok.pad_token_id)
            text = self.tok.decode(full[0, len(ids):], skip_special_tokens=True)
            outs.append(types.SimpleNamespace(outputs=[types.SimpleNamespace(text=text)] * params.n))
        return outs


@pytest.fixture
def fake_vllm(monkeypatch, tmp_path):
    mod = types.ModuleType("vllm")
    mod.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    mod.LLM, mod.SamplingParams = FakeLLM, FakeSamplingParams
    monkeypatch.setitem(sys.modules, "vllm", mod)
    monkeypatch.setenv("RLUF_CACHE_DIR", str(tmp_path / "cache"))
    FakeLLM.instances.clear()
    return mod


@pytest.fixture(scope="module")
def policies(tmp_path_factory):
    """A tiny full-weight policy and a LoRA adapter on it whose weights are not zero (so merging matters)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    d = tmp_path_factory.mktemp("vllm-policies")
    base = make_tiny_policy(d / "base")
    torch.manual_seed(3)
    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                          LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft.save_pretrained(d / "adapter")  # adapter_config.json records base_model_name_or_path = base
    return {"base": base, "adapter": d / "adapter"}


PROMPTS = ["hello can you help", "write a poem about the sky", [{"role": "user", "content": "tell me a story"}]]


def test_backend_choice_and_errors(monkeypatch):
    from rluf.policy.vllm_backend import choose_backend, vllm_installed

    monkeypatch.delenv("RLUF_GENERATION_BACKEND", raising=False)
    assert choose_backend() == "torch"
    monkeypatch.setenv("RLUF_GENERATION_BACKEND", "TORCH")
    assert choose_backend() == "torch"
    with pytest.raises(ValueError, match="expected one of torch, vllm, auto"):
        choose_backend("tensorrt")
    if not vllm_installed():
        with pytest.raises(RuntimeError, match="vllm is not installed"):
            choose_backend("vllm")
        assert choose_backend("auto") == "torch"


def test_sampling_params_map_rluf_controls(fake_vllm):
    from rluf.policy.generate import SamplingConfig
    from rluf.policy.vllm_backend import sampling_params

    p = sampling_params(SamplingConfig(max_new_tokens=33, temperature=0.8, top_p=0.9, top_k=0), n=4, seed=7)
    assert (p.n, p.temperature, p.top_p, p.top_k, p.max_tokens, p.seed) == (4, 0.8, 0.9, -1, 33, 7)
    g = sampling_params(SamplingConfig(temperature=0, top_p=0.5, top_k=20), n=4, seed=None)
    assert (g.n, g.temperature, g.top_p, g.top_k) == (1, 0.0, 1.0, -1)  # greedy: one answer, no filters
    assert sampling_params(SamplingConfig(top_k=20), 1, None).top_k == 20


@pytest.mark.parametrize("which", ["base", "adapter"])
def test_vllm_greedy_answers_equal_the_torch_path(fake_vllm, policies, which):
    from rluf.policy.generate import PolicyGenerator, SamplingConfig, encode_prompts

    greedy = SamplingConfig(max_new_tokens=6, temperature=0)
    torch_gen = PolicyGenerator.load(policies[which], dtype="float32", backend="torch")
    vllm_gen = PolicyGenerator.load(policies[which], dtype="float32", backend="vllm")
    assert type(vllm_gen).__name__ == "VLLMGenerator" and vllm_gen.name == which
    llm = FakeLLM.instances[-1]
    if which == "adapter":  # vLLM got a merged plain folder from the cache, not the adapter
        assert llm.folder.parent.name == "merged" and (llm.folder / "config.json").exists()
        assert not (llm.folder / "adapter_config.json").exists()
    else:
        assert llm.folder == policies["base"]
    answers = vllm_gen.generate(PROMPTS, n=2, sampling=greedy)
    assert llm.received == encode_prompts(vllm_gen.tokenizer, PROMPTS, greedy.max_prompt_tokens)
    assert [len(a) for a in answers] == [2, 2, 2]
    assert [a[0] for a in answers] == [a[0] for a in torch_gen.generate(PROMPTS, n=1, sampling=greedy)]
    assert vllm_gen.generate([]) == []


def test_vllm_seeds_each_prompt_and_shares_the_gpu(fake_vllm, policies, monkeypatch):
    from rluf.policy.generate import PolicyGenerator, SamplingConfig

    monkeypatch.setenv("RLUF_VLLM_GPU_MEMORY", "0.25")
    gen = PolicyGenerator.load(policies["base"], dtype="float32", backend="vllm")
    llm = FakeLLM.instances[-1]
    assert llm.gpu_share == 0.25
    gen.generate(PROMPTS, n=3, seed=10, sampling=SamplingConfig(max_new_tokens=2, temperature=0.7))
    # a seed applies per request in vLLM: one shared seed would give duplicate prompts identical answers
    assert [(p.seed, p.n) for p in llm.params] == [(10, 3), (11, 3), (12, 3)]
    monkeypatch.setenv("RLUF_VLLM_GPU_MEMORY", "1.5")
    with pytest.raises(ValueError, match="RLUF_VLLM_GPU_MEMORY"):
        PolicyGenerator.load(policies["base"], dtype="float32", backend="vllm")


def test_merged_folder_is_cached(fake_vllm, policies):
    from rluf.policy.vllm_backend import plain_folder

    first = plain_folder(policies["adapter"])
    mtime = (first / "config.json").stat().st_mtime_ns
    assert plain_folder(policies["adapter"]) == first
    assert (first / "config.json").stat().st_mtime_ns == mtime  # not merged again
    assert plain_folder(policies["base"]) == policies["base"]
