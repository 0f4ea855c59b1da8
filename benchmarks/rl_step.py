"""One RL step on the CPU: rluf's CRPG step against TRL's GRPOTrainer, interleaved in one run.

Same policy (SmolLM2-135M-Instruct + fp32 LoRA r=16 on all linear layers; base weights in bf16 where the CPU
runs bf16 fast (avx512_bf16/AMX), else fp32 — emulated bf16 is ~300x slower per matmul), same prompts
(the chat task's mix), same K samples per prompt, same maximum new tokens, same sampling temperature, same
reward model (the demo's P[Love]) and learning rate. TRL runs in its fastest CPU configuration
(`use_cpu=True`, `use_vllm=False`, the same base dtype, LoRA via `peft_config`, `beta=0` so no reference
model is loaded).
Our step does at least the same work and more: it also computes reference log-probabilities (the KL cap),
runs the judges and calibrates the reward against a cached reference answer.

Interleaving: a TRL callback times each TRL step (on_step_begin → on_step_end) and then runs one of our steps,
so both see the same machine state. The first step of each is a warm-up and is not counted.

    python benchmarks/rl_step.py --steps 6        # what was committed
Writes benchmarks/results/rl_step.{json,md}; the top-level `ratio_vs_trl` is ours / TRL (median s/step).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=6, help="Steps of each (the first is warm-up).")
    ap.add_argument("--prompts-per-step", type=int, default=4)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--reward", default="demo-out/models/love", help="Reward model folder (make demo writes it).")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--report-only", action="store_true", help="Rewrite rl_step.md from rl_step.json; no run.")
    ap.add_argument("--note", default="",
                    help="One line on this run (machine, code state), kept in later runs' history.")
    args = ap.parse_args()
    if args.report_only:
        write_markdown(json.loads((args.out / "rl_step.json").read_text()), args.out)
        return

    import random

    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rluf.hardware import keep_freed_memory, probe
    from rluf.policy.config import PolicyTrainConfig
    from rluf.policy.generate import SamplingConfig
    from rluf.policy.model import load_tokenizer, prepare_default_policy
    from rluf.policy.prompts import load_prompts
    from rluf.policy.train import (
        GenerationMirror,
        ReferenceCache,
        RewardBank,
        TaskState,
        run_task_step,
        setup_model,
    )

    # RLUF_KEEP_FREED_MEMORY=1: process-wide, so TRL's steps get it too (same allocator on both sides).
    freed_memory_kept = keep_freed_memory()
    # How fast this machine is at compute and at streaming weights: runs on different machines differ by 2x.
    machine_probe = probe()
    torch.manual_seed(0)
    base = prepare_default_policy()
    n_prompts = args.steps * args.prompts_per_step
    # Prompts that fit the chat task's prompt budget (max_prompt_tokens, chat template included), so that
    # neither side truncates one: rluf keeps the last max_prompt_tokens, TRL the whole prompt. Before
    # 2026-12-07 one 423-token prompt ran truncated to 256 on our side only, and on a 2-core Xeon it took
    # TRL's fp32 step past 20 GB (the first run there was killed out of memory).
    budget = PolicyTrainConfig.model_fields["max_prompt_tokens"].default
    candidates, _ = load_prompts("chat", None, seed=0, limit=4 * n_prompts)
    from rluf.policy.generate import encode_prompts

    lengths = [len(ids) for ids in encode_prompts(load_tokenizer(base), candidates, 10**9)]
    prompts = [p for p, n in zip(candidates, lengths, strict=True) if n <= budget][:n_prompts]
    if len(prompts) < n_prompts:
        raise SystemExit(f"only {len(prompts)} chat prompts fit {budget} tokens; {n_prompts} needed")
    bank = RewardBank()
    rm = bank.get(args.reward)
    temperature, lr = 0.9, 1e-4

    # ------------------------------------------------------------------ ours: the trainer's own step
    cfg = PolicyTrainConfig.model_validate({
        "tasks": [{"name": "chat", "prompts": {"source": "chat", "holdout": 0}, "optimizer": "crpg", "k": args.k,
                   "prompts_per_step": args.prompts_per_step,
                   "rewards": [{"name": "love", "model": args.reward}], "judges": [{"type": "signoff"}]}],
        "max_new_tokens": args.max_new_tokens, "temperature": temperature, "learning_rate": lr,
        "lora": {"r": 16, "alpha": 32, "target_modules": LORA_TARGETS}})
    model, tok, ref, _ = setup_model(cfg, None)
    from rluf.policy.judges import SignoffJudge

    task = TaskState(cfg.tasks[0], prompts, [], "chat", [("love", rm, 1.0)], [SignoffJudge()])
    tmp = Path(tempfile.mkdtemp())
    refs = ReferenceCache(tmp / "refs.jsonl")
    greedy = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=0)

    def reference_answers(ps):
        from rluf.policy.generate import encode_prompts, sample

        with model.disable_adapter():
            return sample(model, tok, encode_prompts(tok, ps), 1, greedy).texts

    # Reference answers are generated once per prompt and cached for the whole run (a one-off cost, like
    # TRL's model loading); generate them before timing so that no step pays for them.
    refs.ensure(prompts, reference_answers, task.rewards)
    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=temperature, top_p=1.0)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    rng = random.Random(0)
    mirror = GenerationMirror(model)
    ours: list[dict] = []

    def our_step() -> None:
        t = time.perf_counter()
        model.train()
        row = run_task_step(cfg, task, model, ref, tok, tok.pad_token_id, refs, sampling, reference_answers, rng,
                            mirror)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        row["step_s"] = time.perf_counter() - t
        ours.append(row)

    # ------------------------------------------------------------------ TRL
    from rluf.hardware import bf16_is_fast

    bf16 = bf16_is_fast()
    dtype_name = "bf16" if bf16 else "fp32"
    trl_model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.bfloat16 if bf16 else torch.float32)
    trl_tok = load_tokenizer(base)

    def love_reward(prompts, completions, **kw):
        ps = [p[-1]["content"] if isinstance(p, list) else p for p in prompts]
        cs = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return rm.logits(ps, cs).tolist()

    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in prompts])
    trl: list[dict] = []

    class Interleave(TrainerCallback):
        t0 = 0.0

        def on_step_begin(self, a, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs and trl:
                trl[-1]["mean_length"] = logs["completions/mean_length"]

        def on_step_end(self, a, state, control, **kw):
            trl.append({"step_s": time.perf_counter() - self.t0})
            our_step()

    targs = GRPOConfig(
        output_dir=str(tmp / "trl"), per_device_train_batch_size=args.prompts_per_step * args.k,
        num_generations=args.k, max_completion_length=args.max_new_tokens, max_steps=args.steps,
        learning_rate=lr, temperature=temperature, top_p=1.0, beta=0.0, use_vllm=False, use_cpu=True, bf16=bf16,
        gradient_checkpointing=False,  # TRL turns it on by default; off is faster when memory is plentiful
        logging_steps=1, save_strategy="no", report_to=[], seed=0, disable_tqdm=True)
    trainer = GRPOTrainer(model=trl_model, reward_funcs=[love_reward], args=targs, train_dataset=ds,
                          processing_class=trl_tok, callbacks=[Interleave()],
                          peft_config=LoraConfig(r=16, lora_alpha=32, target_modules=LORA_TARGETS,
                                                 task_type="CAUSAL_LM"))
    trainer.train()

    # ------------------------------------------------------------------ report
    def med(rows, key):
        return statistics.median(r[key] for r in rows[1:])

    ours_s, trl_s = med(ours, "step_s"), med(trl, "step_s")
    n_seq = args.prompts_per_step * args.k
    ours_tok = statistics.median(r["generated_tokens"] / r["step_s"] for r in ours[1:])
    trl_tok_s = statistics.median(r.get("mean_length", args.max_new_tokens) * n_seq / r["step_s"] for r in trl[1:])
    result = {
        "ratio_vs_trl": round(ours_s / trl_s, 3),
        "target": "<= 0.5",
        "ours": {"seconds_per_step": round(ours_s, 2), "generated_tokens_per_s": round(ours_tok, 1),
                 "generate_s": round(med(ours, "generate_s"), 2), "score_s": round(med(ours, "score_s"), 2),
                 "update_s": round(med(ours, "update_s"), 2),
                 "steps": [round(r["step_s"], 2) for r in ours]},
        "trl": {"seconds_per_step": round(trl_s, 2), "generated_tokens_per_s": round(trl_tok_s, 1),
                "steps": [round(r["step_s"], 2) for r in trl], "version": __import__("trl").__version__},
        "setup": {"model": f"SmolLM2-135M-Instruct ({dtype_name} base, fp32 LoRA r=16 on all linear layers)",
                  "prompts_per_step": args.prompts_per_step, "k": args.k, "max_new_tokens": args.max_new_tokens,
                  "temperature": temperature, "steps": args.steps, "warmup_steps_excluded": 1,
                  "prompt_tokens_max": budget,
                  "torch_threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
                  "bf16_fast": bf16, "date": time.strftime("%Y-%m-%d"),
                  "malloc_keeps_freed_memory": freed_memory_kept, "machine_probe": machine_probe},
        "note": args.note,
    }
    # Keep the headline of earlier committed runs: machines of this project differ (bf16 hardware or not), and
    # a run on one kind does not replace what was measured on the other.
    old = args.out / "rl_step.json"
    if old.exists():
        prev = json.loads(old.read_text())
        result["previous_runs"] = [*prev.pop("previous_runs", []), {
            "date": prev["setup"]["date"], "model": prev["setup"]["model"], "steps": prev["setup"]["steps"],
            "ours_s": prev["ours"]["seconds_per_step"], "trl_s": prev["trl"]["seconds_per_step"],
            "ratio_vs_trl": prev["ratio_vs_trl"], "note": prev.get("note", "")}]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rl_step.json").write_text(json.dumps(result, indent=2))
    write_markdown(result, args.out)
    print(json.dumps(result, indent=2))


def write_markdown(result: dict, out: Path) -> None:
    from rluf.hardware import describe

    setup, ours, trl = result["setup"], result["ours"], result["trl"]
    history = []
    if result.get("previous_runs"):
        history = ["Earlier runs (other machines or code):", "",
                   "| date | model | steps | ours s/step | TRL s/step | ratio | note |",
                   "|---|---|---:|---:|---:|---:|---|",
                   *[f"| {r['date']} | {r['model']} | {r['steps']} | {r['ours_s']:.2f} | {r['trl_s']:.2f} | "
                     f"{r['ratio_vs_trl']} | {r.get('note', '')} |" for r in result["previous_runs"]], ""]
    md = [
        "# RL step: rluf CRPG vs TRL GRPOTrainer (CPU)", "",
        f"{setup['date']}, {setup['torch_threads']} threads. {setup['model']}, {setup['prompts_per_step']} prompts "
        f"× K={setup['k']}, {setup['max_new_tokens']} new tokens, temperature {setup['temperature']}; "
        f"{setup['steps']} steps each, interleaved, first excluded; medians.", "",
        *([describe(setup["machine_probe"]), ""] if setup.get("machine_probe") else []),
        "| | s/step | generated tokens/s | generate | reward + judges | log-probs + backward |",
        "|---|---:|---:|---:|---:|---:|",
        f"| rluf CRPG | {ours['seconds_per_step']:.2f} | {ours['generated_tokens_per_s']:.1f} | "
        f"{ours['generate_s']:.2f} | {ours['score_s']:.2f} | {ours['update_s']:.2f} |",
        f"| TRL {trl['version']} GRPOTrainer | {trl['seconds_per_step']:.2f} | {trl['generated_tokens_per_s']:.1f} "
        "| | | |", "",
        f"Per step — ours: {ours['steps']}; TRL: {trl['steps']}.", "",
        f"**ratio_vs_trl = {result['ratio_vs_trl']}** (target ≤ 0.5).", "",
        *([f"Reading: {result['reading']}", ""] if result.get("reading") else []),
        *history,
        "Our step also computes reference log-probabilities (KL cap), judges and the calibrated reward against "
        "a cached reference answer; TRL runs with beta=0 (no reference model).", "",
        "## Where our step's time went, and what changed (torch.profiler, 2026-11-30, 2-core AVX2 CPU, fp32)", "",
        "- Sampling: a decoding step of 16 rows took ~0.2 s; aten::mm was 51–65 % of sampling time in three "
        "profiles. From the parameter count that is roughly 4 GFLOP per step, ~21 GFLOP/s, against 106 GFLOP/s "
        "measured for a 2048² fp32 matmul: small-batch matmuls, so the cost follows decoding steps more than rows "
        "(an estimate, not a measurement of memory traffic). `torch.multinomial` (inside `generate`) drew an "
        "exponential for each of 16 × 49k vocabulary entries per token: 21 ms per step, 11 % of sampling. rluf "
        "samples by inverse CDF in its own decode loop (same distribution; tested against transformers' warpers).",
        "- Prompts: `num_return_sequences` prefills each prompt K times, padded to the longest prompt of the "
        "batch (chat prompts with the template: 32 to 423 tokens). rluf prefills each distinct prompt once, "
        "unpadded, and repeats its KV cache; the log-prob passes (policy with gradients, reference without) do "
        "the same, the gradient flowing through the repeated cache. Tested: equal log-probabilities and LoRA "
        "gradients to scoring each row alone.",
        "- A preallocated StaticCache instead of the DynamicCache's per-token concatenation (aten::cat was 20 % "
        "of sampling under the profiler): on the AVX2 CPU interleaved A/B runs gave 0.206 vs 0.201 s per decoding "
        "step, no gain, and it was dropped; on the avx512_bf16 CPU (2026-11-30), where the bf16 matmuls are fast, "
        "it sampled 16 × 64 tokens 8–10 % faster in four interleaved pairs, and rluf now decodes into one. The "
        "RL-step run after it did not show it in the median step (8.71 s vs 8.55 s the run before): the step "
        "moves by more than that from run to run.",
        "- Left: log-probs + backward (policy forward + backward + reference forward over ~1,400 tokens) is, by the "
        "same parameter-count estimate, ~1.1 TFLOP — about 10 s at 106 GFLOP/s against ~12 s measured; the "
        "remaining levers are bf16 on hardware that has it and fewer padded answer positions.",
        "- Tried on the avx512_bf16 CPU and dropped: dividing the output layer's input by the temperature instead "
        "of its 49k-wide output, with one fused fp32 log-softmax (the profiler put the logits passes at ~1.5 s "
        "of a 10 s step): three interleaved timings of the log-prob passes gave 8.96/9.20/9.04 s before and "
        "8.91/7.83/9.52 s after — no gain beyond noise.", "",
        "## Profiled on a 2-core AMD EPYC with AVX2 only (2026-12-01, fp32)", "",
        "- Decoding is bound by the matmul kernel, not by memory: 16 rows through SmolLM2-shaped fp32 weights "
        "streamed from memory ran at ~2.6-3 GB/s of weights with `F.linear` (MKL), while a tensor copy ran at "
        "15-19 GB/s (`rluf hardware`; an earlier reading of 3.4 GB/s was a copy into fresh pages, i.e. page "
        "faults). The same weights reordered once for oneDNN (`torch.ops.mkldnn._reorder_linear_weight`, then "
        "`_linear_pointwise`) ran a 1536 x 576 layer in 0.68 ms instead of 1.39 ms at 16 rows (1.2 vs 2.3 ms at 64, "
        "1.1-1.4x at 512-2,048 rows) and the 49k-wide output layer in 17 ms instead of 62 ms; MKL's own packed "
        "sgemm gained 1.2-1.5x, bf16 or fp16 weights were slower (no native bf16 here), int8 weight-only far "
        "slower. rluf's inference copies now use the oneDNN path in fp32 (`rluf.policy.packed`): sampling 16 x 64 "
        "tokens 12.7-13.4 s instead of 18.4-18.7 s.",
        "- An A/B of our generation against the code of the 2026-11-30 AVX2 run (0.52) on this machine: 20.9-21.7 s "
        "(old) and 19.7-24.4 s (new, before the packing) per 16 x 64 sample, one run each with different prompt "
        "draws: it points at the machine, not the code, for the rise from 0.52 to 0.70.", "",
        "## Profiled again on a 2-core AMD EPYC with avx512_bf16 (2026-12-01, bf16)", "",
        "- Log-prob passes: under torch.profiler the policy + reference forward spent ~1.2 s of 3.7 s on the "
        "49k-wide logits (the temperature division 340 ms, logsumexp's separate max / subtract / exp / sum "
        "passes ~600 ms) and the backward ~0.9 s more (LogsumexpBackward 632 ms). One fused `log_softmax` "
        "(then a gather) replaced `logit - logsumexp`: on 4 fixed batches, policy + reference log-probs with "
        "backward took 19.3 s instead of 21.3 s (median of 4 interleaved repeats; summed log-probs differ by "
        "≤ 5e-4).",
        "- Memory faults: in the decode loop, a 16 × 49k softmax, cumsum, division or bf16→fp32 copy took "
        "3.6–3.9 ms each (64 calls each per sample: ~0.95 s, 27 % of sampling) against 0.04–0.3 ms for the "
        "same ops on reused memory. These machines are Firecracker microVMs with free-page reporting, where "
        "re-faulting freed pages is costly, and glibc hands big freed blocks back to the kernel. "
        "`rluf.hardware.keep_freed_memory()` (mmap off, no heap trimming) measured on our step alone, "
        "alternating fresh processes of 7 steps: log-prob passes + backward + optimizer 3.65 / 3.47 s against "
        "4.98 / 5.33 s with malloc defaults, sampling 2.61 / 2.85 against 3.0 / 3.4 ms per token; peak RSS "
        "4.2–4.6 against 4.1 GB. But in this benchmark (set for the whole process, TRL included) it did not "
        "move our step, and a whole quick demo ran 455 s instead of 462 s with peak RSS 6.7 instead of 5.5 GB: "
        "it is opt-in (RLUF_KEEP_FREED_MEMORY=1).",
        "- Tried and dropped: `torch.compile` of the one-token decoding step (inductor, dynamic shapes, a "
        "fixed-width mask over a static cache, one graph for every batch): greedy tokens equal to eager, but "
        "sampling 16 × 64 tokens took 3.0–4.3 s (9.3 s on a 423-token prompt) against 2.0–3.2 s eager, after a "
        "59 s compilation. TRL itself generates with `disable_compile=True`.", "",
        "## Profiled on a 2-core Intel Xeon with AVX-512, no bf16 exposed (2026-12-07, fp32)", "",
        "- The log-prob passes turned every answer position into 49k-wide fp32 logits (16 × 64 × 49k = 200 MB), "
        "each op on a fresh tensor: output layer 533 ms per pass (packed weights; alone, "
        "1,024 rows took 317 ms packed and 278 ms with MKL's plain matmul), temperature division ~200 ms, "
        "log-softmax 310 ms, its backward 280 ms — ~2.8 s of the 15.6 s the profiler counted for the whole step "
        "(sampling included). `rluf.policy.logprobs` now runs the output layer in 128-row chunks over the real "
        "answer positions only and reduces each chunk to the token's log-probability at once; with the head "
        "frozen (LoRA) the input's gradient, (onehot − softmax)·W/T per position, is made in the same sweep and "
        "kept instead of the logits. Same matmul work; no vocabulary-wide tensor outlives a chunk. Our step "
        "alone, 6 steps, same seeds: log-probs + backward 10.8/7.9/6.2/6.5/6.2/10.4 s against "
        "14.4/11.1/9.0/8.7/7.5/12.3 s; peak RSS 6.6 against 7.5 GB. Tested: equal log-probs and gradients.",
        "- Packing Wᵀ for the frozen base's input gradient (the backward's matmuls) was measured and dropped: "
        "at 1,400 rows oneDNN's packed layout was 0.91–1.09x MKL's plain matmul.",
        "- Prompt lengths: until this run the benchmark's prompts included one of 423 tokens (chat template "
        "included), which our side cut to the chat task's 256 (`max_prompt_tokens`) while TRL kept it whole; "
        "on this machine the first run was killed by the kernel, out of memory (24 GB), after TRL's third step, "
        "and TRL alone passed 16 GB and then 20 GB on the batch with that prompt before being stopped (our "
        "step alone peaked at 6.6–7.5 GB). Both sides now get the "
        "first prompts that fit 256 tokens, untruncated.",
        "",
        "## bf16 weights packed for oneDNN, 2-core AMD EPYC with avx512_bf16 (2026-12-07)",
        "",
        "- Until then only fp32 layers were packed (`rluf.policy.packed`); a bf16 base, as on this machine, ran "
        "`F.linear`. oneDNN packs bf16 with the same two ops (inductor's freezing pass does). A SmolLM2-shaped "
        "stack (210 layers + the output layer) at 16 rows, one thread while the other core was busy: 36–55 ms "
        "per token packed against 54–98 ms plain in four alternating repeats.",
        "- Our step alone, two fresh processes, 7 steps each, same seeds: sampling 16 × 64 tokens 3.49–3.87 s "
        "packed against 4.02–4.84 s plain; log-probs + backward (the LoRA base packed too, its input cast to "
        "bf16 as autocast would) median 5.42 against 5.33 s — no change there. In the benchmark, the run before "
        "the change on this machine: 0.517 (ours 11.24 s, sampling 5.10 s); after it 0.434 and 0.400 (ours "
        "10.06 / 10.08 s, sampling 3.90 / 4.20 s). TRL's median moved between the runs too (21.73, 23.16, "
        "25.21 s).",
    ]
    (out / "rl_step.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
