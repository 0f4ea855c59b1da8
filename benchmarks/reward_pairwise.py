"""Pairwise reward models for the other objectives, measured on held-out pairs beside two scorers that read no text.

- safety: HH-RLHF harmless-base pairs, split by pair (80 / 10 / 10, deterministic);
- helpfulness: AlpacaEval model answer vs the GPT-4-Turbo reference, split by model with several models on each
  held-out side, dealt by win rate so each side spans strong and weak models (rluf.reward.pairs.split_by_model).
Pairwise accuracy on validation and test, with 95 % intervals, beside "the longer answer wins" and (AlpacaEval)
"the reference wins": most AlpacaEval models lose to the reference almost always, so those two are high bars.
Intervals: AlpacaEval bootstrap over instructions (every model answers the same ones), HH Wilson (pairs are
independent). Per held-out model too.

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
from rluf.reward.metrics import baselines_md, fmt_ci, pairwise_baselines
from rluf.reward.pairs import SIDES, alpacaeval_pairs, hh_pairs, model_win_rates, split_by_model
from rluf.reward.train import RewardTrainConfig, train_reward

HERE = Path(__file__).resolve().parent


def _split_hh(t: pa.Table) -> tuple[dict[str, pa.Table], dict]:
    rows = t.to_pylist()
    n = len(rows)
    return ({"train": pa.Table.from_pylist(rows[: int(0.8 * n)]),
             "validation": pa.Table.from_pylist(rows[int(0.8 * n): int(0.9 * n)]),
             "test": pa.Table.from_pylist(rows[int(0.9 * n):])}, {"split": "by pair, 80 / 10 / 10"})


def _split_alpaca(t: pa.Table) -> tuple[dict[str, pa.Table], dict]:
    parts, side = split_by_model(t)
    rates = model_win_rates(t)
    models = {k: [{"model": m, "win_rate": round(rates[m], 4)} for m in sorted(side, key=lambda m: -rates[m])
                  if side[m] == k] for k in SIDES}
    return parts, {"split": "by model, dealt by win rate: " + " / ".join(str(len(models[k])) for k in SIDES)
                   + " models", "models": models,
                   # the reference is chosen only where it won: its share is the "reference wins" bar
                   "reference_chosen_share": {k: round(float(np.mean(parts[k]["chosen_is_reference"].to_pylist())), 4)
                                              for k in SIDES}}


def _measure(rm: RewardModel, t: pa.Table) -> dict:
    cols = t.to_pydict()
    rc = rm.score(cols["prompt"], cols["chosen"], batch_size=64, progress=True)
    rr = rm.score(cols["prompt"], cols["rejected"], batch_size=64, progress=True)
    ref = "chosen_is_reference" in cols
    return pairwise_baselines([len(c) for c in cols["chosen"]], [len(r) for r in cols["rejected"]],
                              cols["chosen_is_reference"] if ref else None, rc, rr,
                              groups=cols["group"] if ref else None,  # HH groups are single pairs
                              clusters=cols["instruction_id"] if ref else None)


def _diff(b: dict, k: str) -> str:
    d = b.get(f"model_minus_{k}")
    return "–" if d is None else f"{d['difference']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    ap.add_argument("--max-steps", type=int, default=120)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--pooling", choices=["auto", "head", "mean"], default="auto",
                    help="'auto' = mean pooling for MiniLM (the default since 2026-12-01); 'head' = [CLS]")
    ap.add_argument("--max-eval-pairs", type=int, default=None,
                    help="score only the first N pairs of each held-out side (smoke checks; their rows are in "
                         "random order, so a prefix spans the side's models)")
    ap.add_argument("--dropout", action=argparse.BooleanOptionalAction, default=False,
                    help="keep the checkpoint's dropout while training (default off, as `rluf reward train`)")
    args = ap.parse_args()
    results = {}
    objectives = (("safety (HH harmless)", hh_pairs(args.data_dir), _split_hh),
                  ("helpfulness (AlpacaEval vs reference)", alpacaeval_pairs(args.data_dir), _split_alpaca))
    for name, table, split in objectives:
        parts, info = split(table)
        if args.max_eval_pairs:
            parts |= {k: parts[k].slice(0, args.max_eval_pairs) for k in ("validation", "test")}
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
        rm = RewardModel.load(work / "model")
        # train_reward measured validation with the baselines where the pairs carry chosen_is_reference
        val = trained["metrics"]["validation"].get("baselines") or _measure(rm, parts["validation"])
        test = _measure(rm, parts["test"])
        results[name] = {**info, "rows": {k: v.num_rows for k, v in parts.items()},
                         "test_pairwise_accuracy": test["model"]["accuracy"],
                         "length_baseline_accuracy": test["longer_wins"]["accuracy"],
                         "test": test, "validation": val, "train_minutes": round(t_train / 60, 1)}
    out = {"benchmark": "reward_pairwise", "date": time.strftime("%Y-%m-%d"), "args": vars(args) | {
        "data_dir": str(args.data_dir)}, "results": results}
    res = HERE / "results"
    if (res / "reward_pairwise.json").exists():  # keep earlier runs' figures: settings are compared across runs
        prev = json.loads((res / "reward_pairwise.json").read_text())
        out["previous_runs"] = [*prev.pop("previous_runs", []), prev]
    (res / "reward_pairwise.json").write_text(json.dumps(out, indent=2))
    md = ["# Pairwise reward models (all-MiniLM-L6-v2)", "",
          f"{out['date']}, 2 CPU cores, {args.max_steps} steps of 16 pairs, max_length {args.max_length}, "
          f"bf16 {bf16_is_fast()}, pooling {args.pooling}"
          + (f", held-out sides cut to {args.max_eval_pairs} pairs" if args.max_eval_pairs else "") + ".", "",
          "Pairwise accuracy with 95 % intervals, beside scorers that read no text; the differences are paired "
          "(same bootstrap resamples; AlpacaEval only).", "",
          "| objective | split | side | pairs | model | longer answer wins | reference wins | model − longer "
          "| model − reference | train pairs, min |",
          "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        for k in ("validation", "test"):
            b = r[k]
            trained_on = f"{r['rows']['train']}, {r['train_minutes']}" if k == "test" else ""
            md.append(f"| {name} | {r['split']} | {k} | {b['n']} | {fmt_ci(b['model'])} | "
                      f"{fmt_ci(b['longer_wins'])} | {fmt_ci(b.get('reference_wins'))} | {_diff(b, 'longer_wins')} | "
                      f"{_diff(b, 'reference_wins')} | {trained_on} |")
    for name, r in results.items():
        if not r.get("models"):
            continue
        rates = {m["model"]: m["win_rate"] for k in SIDES for m in r["models"][k]}
        md += ["", f"## {name}: models", "",
               f"Train pairs: {r['rows']['train']}; the reference is the chosen answer in "
               + ", ".join(f"{r['reference_chosen_share'][k]:.1%} of {k}" for k in SIDES) + " pairs.", "",
               "| side | models (win rate against the reference) |", "|---|---|",
               *[f"| {k} | " + ", ".join(f"{m['model']} ({m['win_rate']:.1%})" for m in r["models"][k]) + " |"
                 for k in SIDES]]
        for k in ("validation", "test"):
            b = dict(r[k])
            b["by_group"] = dict(sorted(b.get("by_group", {}).items(), key=lambda kv: -rates.get(kv[0], 0)))
            md += ["", f"### {k}, per held-out model (strongest first)", "", *baselines_md(b)]
    if out.get("previous_runs"):
        md += ["", "Earlier runs (the helpfulness split changed: runs before the split by win rate tested on 7 models "
               "dealt by name, 12 / 2 / 7):", "",
               "| date | steps | pooling | objective | split | test pairwise accuracy |",
               "|---|---:|---|---|---|---:|",
               *[f"| {p['date']} | {p['args']['max_steps']} | {p['args'].get('pooling', 'head')} | {name} | "
                 f"{r.get('split', 'by model name, 12 / 2 / 7' if name.startswith('helpfulness') else 'by pair')} | "
                 f"{r['test_pairwise_accuracy']:.3f} |"
                 for p in out["previous_runs"] for name, r in p["results"].items()]]
    (res / "reward_pairwise.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
