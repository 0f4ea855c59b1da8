"""Pairwise reward models for the other objectives, measured on held-out pairs.

- safety: HH-RLHF harmless-base pairs, split by pair (80 / 10 / 10, deterministic);
- helpfulness: AlpacaEval model answer vs reference, split by model (no model on two sides).
Pairwise accuracy on the test side; in the same run a length baseline (the longer answer wins).

    python benchmarks/reward_pairwise.py --max-steps 120        # what was committed
Writes benchmarks/results/reward_pairwise.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rluf.hardware import bf16_is_fast
from rluf.paths import DEFAULT_DATA_DIR
from rluf.reward import RewardModel
from rluf.reward.pairs import alpacaeval_pairs, hh_pairs
from rluf.reward.train import RewardTrainConfig, train_reward

HERE = Path(__file__).resolve().parent


def _split_hh(t: pa.Table) -> dict[str, pa.Table]:
    rows = t.to_pylist()
    n = len(rows)
    return {"train": pa.Table.from_pylist(rows[: int(0.8 * n)]),
            "validation": pa.Table.from_pylist(rows[int(0.8 * n): int(0.9 * n)]),
            "test": pa.Table.from_pylist(rows[int(0.9 * n):])}


def _split_alpaca(t: pa.Table) -> dict[str, pa.Table]:
    rows = t.to_pylist()
    models = sorted({r["group"] for r in rows})
    side = {m: ("test" if i % 3 == 1 else "validation" if i % 9 == 5 else "train") for i, m in enumerate(models)}
    return {k: pa.Table.from_pylist([r for r in rows if side[r["group"]] == k])
            for k in ("train", "validation", "test")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    ap.add_argument("--max-steps", type=int, default=120)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--pooling", choices=["auto", "head", "mean"], default="auto",
                    help="'auto' = mean pooling for MiniLM (the default since 2026-12-01); 'head' = [CLS]")
    ap.add_argument("--dropout", action=argparse.BooleanOptionalAction, default=False,
                    help="keep the checkpoint's dropout while training (default off, as `rluf reward train`)")
    args = ap.parse_args()
    results = {}
    objectives = (("safety (HH harmless)", hh_pairs(args.data_dir), _split_hh),
                  ("helpfulness (AlpacaEval vs reference)", alpacaeval_pairs(args.data_dir), _split_alpaca))
    for name, table, split in objectives:
        parts = split(table)
        work = HERE / "work" / "reward_pairwise" / name.split()[0]
        work.mkdir(parents=True, exist_ok=True)
        for k, v in parts.items():
            pq.write_table(v, work / f"{k}.parquet")
        cfg = RewardTrainConfig(max_steps=args.max_steps, max_length=args.max_length, batch_size=16,
                                learning_rate=5e-5, bf16=None, resume=False, eval_steps=args.max_steps,
                                pooling=args.pooling, disable_dropout=not args.dropout)
        t0 = time.time()
        trained = train_reward(cfg, work / "train.parquet", work / "validation.parquet", work / "model")
        args.pooling = trained["pooling"]
        t_train = time.time() - t0
        test = parts["test"].to_pylist()
        rm = RewardModel.load(work / "model")
        prompts = [r["prompt"] for r in test]
        rc = rm.score(prompts, [r["chosen"] for r in test], batch_size=64, progress=True)
        rr = rm.score(prompts, [r["rejected"] for r in test], batch_size=64, progress=True)
        longer = np.mean([len(r["chosen"]) > len(r["rejected"]) for r in test])
        results[name] = {"rows": {k: v.num_rows for k, v in parts.items()},
                         "test_pairwise_accuracy": float(np.mean(rc > rr)),
                         "length_baseline_accuracy": float(longer), "train_minutes": round(t_train / 60, 1)}
    out = {"benchmark": "reward_pairwise", "date": time.strftime("%Y-%m-%d"), "args": vars(args) | {
        "data_dir": str(args.data_dir)}, "results": results}
    res = HERE / "results"
    if (res / "reward_pairwise.json").exists():  # keep earlier runs' figures: settings are compared across runs
        prev = json.loads((res / "reward_pairwise.json").read_text())
        out["previous_runs"] = [*prev.pop("previous_runs", []), prev]
    (res / "reward_pairwise.json").write_text(json.dumps(out, indent=2))
    md = ["# Pairwise reward models (all-MiniLM-L6-v2)", "",
          f"{out['date']}, 2 CPU cores, {args.max_steps} steps of 16 pairs, max_length {args.max_length}, "
          f"bf16 {bf16_is_fast()}, pooling {args.pooling}.", "",
          "| objective | train / val / test pairs | test pairwise accuracy | longer answer wins | train min |",
          "|---|---|---:|---:|---:|"]
    for name, r in results.items():
        rows = r["rows"]
        md.append(f"| {name} | {rows['train']} / {rows['validation']} / {rows['test']} | "
                  f"{r['test_pairwise_accuracy']:.3f} | {r['length_baseline_accuracy']:.3f} | {r['train_minutes']} |")
    if out.get("previous_runs"):
        md += ["", "Earlier runs:", "", "| date | steps | pooling | objective | test pairwise accuracy |",
               "|---|---:|---|---|---:|",
               *[f"| {p['date']} | {p['args']['max_steps']} | {p['args'].get('pooling', 'head')} | {name} | "
                 f"{r['test_pairwise_accuracy']:.3f} |"
                 for p in out["previous_runs"] for name, r in p["results"].items()]]
    (res / "reward_pairwise.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
