"""P[Love] training step time: one padded random batch vs the same batch as length-sorted micro-batches.

`rluf reward train --micro-batches N` cuts each random batch of 32 (sorted by length) into N micro-batches,
each padded to its own longest row, and accumulates their gradients into the same optimiser step. This
measures what that saves on the real default backbone (all-MiniLM-L6-v2, mean pooling, no dropout, bf16
autocast where the CPU runs it fast) and real rows (the AlpacaEval train models' answers of
benchmarks/reward_alpacaeval.py, template with the length hint, random cut), at several --max-length values.

Every setting trains the same batches, from the same starting weights, interleaved step by step (the baseline
is in the same run, so the machine's drift hits all settings alike); the first step of each is a warm-up and
not timed. Besides seconds per step it reports the tokens paid (padded) per real token and the gradient's
agreement with the one-batch step on the first batch (cosine; bf16 rounding makes it slightly below 1).

    python benchmarks/reward_micro_batches.py                      # 256 / 384 / 512 tokens, 1 / 4 / 8
    python benchmarks/reward_micro_batches.py --lengths 384 --steps 4

Writes benchmarks/results/reward_micro_batches.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from reward_alpacaeval import split_models  # noqa: E402
from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: E402

from rluf.data import load_alpacaeval  # noqa: E402
from rluf.hardware import resolve_bf16  # noqa: E402
from rluf.paths import DEFAULT_DATA_DIR  # noqa: E402
from rluf.reward.model import resolve_backbone  # noqa: E402
from rluf.reward.pooling import with_pooling  # noqa: E402
from rluf.reward.template import PairTemplate  # noqa: E402
from rluf.reward.train import _collator, _Pairs, disable_dropout, random_recut, sorted_within_batches  # noqa: E402


def accumulate(model, micro: list[dict], bf16: bool) -> None:
    """Gradients of one step over the micro-batches (Trainer's accumulation: each loss divided by their number;
    rluf's compute_loss: the weighted mean of binary cross-entropy)."""
    for batch in micro:
        batch = dict(batch)
        labels, weight = batch.pop("labels"), batch.pop("weight")
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(**batch).logits[:, 0].float()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, weight=weight, reduction="sum")
        (loss / weight.sum() / len(micro)).backward()


def step(model, opt, micro: list[dict], bf16: bool) -> None:
    accumulate(model, micro, bf16)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    ap.add_argument("--lengths", type=int, nargs="+", default=[256, 384, 512], help="--max-length values")
    ap.add_argument("--micro-batches", type=int, nargs="+", default=[1, 4, 8], help="settings; 1 = one batch")
    ap.add_argument("--steps", type=int, default=6, help="timed steps per setting (after one warm-up step)")
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    if not (args.data_dir / "alpacaeval").exists():
        sys.exit(f"{args.data_dir / 'alpacaeval'} not found: this benchmark reads the real AlpacaEval answers "
                 "(--data-dir)")
    bf16 = resolve_bf16(None)
    torch.manual_seed(0)
    df = load_alpacaeval(args.data_dir).to_pandas()
    train = df[df.group.isin(split_models(df)["train"])].reset_index(drop=True)
    backbone = resolve_backbone(None)
    tok = AutoTokenizer.from_pretrained(backbone)
    base = AutoModelForSequenceClassification.from_pretrained(backbone, num_labels=1)
    disable_dropout(base)
    collate = _collator(tok.pad_token_id)
    rows: list[dict] = []
    for max_length in args.lengths:
        template = PairTemplate.from_tokenizer(tok, max_length, length_hint=True)
        tokens = template.tokenize(tok, train["prompt"].tolist(), train["response"].tolist())
        ds = _Pairs([template.build(p, r, h) for p, r, h in tokens], train["label"].tolist(),
                    [1.0] * len(tokens), random_recut(template, tokens))
        lengths = ds.lengths()
        order = sorted_within_batches(lengths, args.batch_size)
        batches = [[ds[i] for i in order[s : s + args.batch_size]]
                   for s in range(0, (args.steps + 1) * args.batch_size, args.batch_size)]
        runs = {}
        for m in args.micro_batches:
            model = with_pooling(copy.deepcopy(base), "mean")
            model.train()
            runs[m] = {"model": model, "opt": torch.optim.AdamW(model.parameters(), lr=1e-4), "seconds": [],
                       "paid": 0, "real": 0}
        for i, rows_i in enumerate(batches):
            for m, run in runs.items():  # interleaved: the same batch under each setting in turn
                k = len(rows_i) // m
                micro = [collate(rows_i[j : j + k]) for j in range(0, len(rows_i), k)]
                if i == 0:  # warm-up step, and the gradient check on it
                    g_model = copy.deepcopy(run["model"])
                    accumulate(g_model, micro, bf16)
                    run["grad"] = torch.cat([p.grad.reshape(-1).double() for p in g_model.parameters()
                                             if p.grad is not None])
                else:
                    run["paid"] += sum(b["input_ids"].numel() for b in micro)
                    run["real"] += sum(int(b["attention_mask"].sum()) for b in micro)
                t0 = time.perf_counter()
                step(run["model"], run["opt"], micro, bf16)
                if i:
                    run["seconds"].append(time.perf_counter() - t0)
        ref = runs[args.micro_batches[0]]
        for m, run in runs.items():
            cos = torch.nn.functional.cosine_similarity(run["grad"], ref["grad"], dim=0).item()
            row = {"max_length": max_length, "micro_batches": m, "rows_per_micro_batch": args.batch_size // m,
                   "median_s_per_step": round(statistics.median(run["seconds"]), 3),
                   "s_per_step": [round(s, 3) for s in run["seconds"]],
                   "padded_per_real_token": round(run["paid"] / run["real"], 3),
                   "gradient_cosine_vs_first": round(cos, 5)}
            row["speedup_vs_first"] = round(statistics.median(ref["seconds"]) / row["median_s_per_step"], 3)
            rows.append(row)
            print(json.dumps(row))

    out = {"benchmark": "reward_micro_batches", "date": time.strftime("%Y-%m-%d"),
           "machine": {"python": platform.python_version(), "platform": platform.platform(),
                       "torch_threads": torch.get_num_threads(), "bf16": bf16},
           "args": {k: str(v) for k, v in vars(args).items()}, "train_rows": len(train), "results": rows}
    res = HERE / "results"
    res.mkdir(exist_ok=True)
    (res / "reward_micro_batches.json").write_text(json.dumps(out, indent=2))
    md = ["# P[Love] training step: one padded batch vs length-sorted micro-batches", "",
          f"{out['date']}, 2 CPU cores, bf16 autocast {bf16}; all-MiniLM-L6-v2, mean pooling, no dropout, "
          f"batches of {args.batch_size} AlpacaEval train answers (length hint, random cut), the same batches and "
          f"starting weights for every setting, {args.steps} timed steps each, interleaved.", "",
          "| max_length | micro-batches | rows each | median s/step | speed-up | padded / real tokens "
          "| gradient cosine vs one batch |", "|---:|---:|---:|---:|---:|---:|---:|",
          *[f"| {r['max_length']} | {r['micro_batches']} | {r['rows_per_micro_batch']} | {r['median_s_per_step']:.2f} "
            f"| {r['speedup_vs_first']:.2f}x | {r['padded_per_real_token']:.2f} | {r['gradient_cosine_vs_first']:.4f} |"
            for r in rows]]
    (res / "reward_micro_batches.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
