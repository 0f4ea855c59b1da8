"""Read the last AlpacaEval P[Love] run again: is it ahead of TF-IDF beyond the test set's noise?

`reward_alpacaeval.py` leaves its split and model in benchmarks/work/reward_alpacaeval/. This script fits the
TF-IDF + length baseline again on the same train rows (deterministic), scores the test answers with the saved
P[Love] folder and, with --checkpoints, with each checkpoint the run kept and with the mean of their logits (a
prediction ensemble, against the weight average the run may have kept). Each is compared with TF-IDF on the
three measures, with a paired bootstrap over test instructions (rluf.reward.metrics.paired_bootstrap).

    python benchmarks/reward_alpacaeval_paired.py --checkpoints

Writes benchmarks/results/reward_alpacaeval_paired.{json,md}. Scoring the 5,635 test answers takes ~2-3 min per
model at 384 tokens on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from reward_alpacaeval import HERE, bootstrap_md, evaluate, tfidf_length_scores

from rluf.reward import RewardModel, calibrate
from rluf.reward.metrics import paired_bootstrap
from rluf.reward.train import average_checkpoints


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=HERE / "work" / "reward_alpacaeval",
                    help="the folder reward_alpacaeval.py trained in (train/test Parquet, model/)")
    ap.add_argument("--checkpoints", action="store_true",
                    help="also score each kept checkpoint and the mean of their logits")
    ap.add_argument("--resamples", type=int, default=2000)
    args = ap.parse_args()
    if not (args.work / "model" / "rluf_reward.json").exists():
        raise SystemExit(f"no trained model in {args.work / 'model'}: run benchmarks/reward_alpacaeval.py first")

    fit_df, test = pd.read_parquet(args.work / "train.parquet"), pd.read_parquet(args.work / "test.parquet")
    p_tfidf = tfidf_length_scores(fit_df, test)
    rm = RewardModel.load(args.work / "model")
    meta = rm.meta
    prompts, responses = test["prompt"].tolist(), test["response"].tolist()
    scored: dict[str, np.ndarray] = {}
    t0 = time.time()
    logits = rm.logits(prompts, responses, batch_size=64, progress=True)
    kept = f"average of {', '.join(meta['averaged_checkpoints'])}" if meta.get("averaged_checkpoints") else \
        Path(meta.get("best_checkpoint") or "last step").name
    scored[f"P[Love] as saved ({kept})"] = calibrate.apply(logits, meta["calibration"])
    if args.checkpoints:
        ckpts = sorted((args.work / "model" / "checkpoints").glob("checkpoint-*"),
                       key=lambda c: int(c.name.rsplit("-", 1)[1]))
        ckpt_logits = []
        for c in ckpts:
            average_checkpoints(rm.model, [c])  # one checkpoint: its weights, names checked
            ckpt_logits.append(rm.logits(prompts, responses, batch_size=64, progress=True))
            # The saved model's calibration is monotone, so it leaves AUROC alone; it puts the model means
            # (the ranking of models) on one scale with the other rows.
            scored[f"P[Love] {c.name}"] = calibrate.apply(ckpt_logits[-1], meta["calibration"])
        if len(ckpts) > 1:
            last = ckpts[-3:]
            scored[f"P[Love] mean logit of {', '.join(c.name for c in last)}"] = calibrate.apply(
                np.mean(ckpt_logits[-3:], axis=0), meta["calibration"])
    t_score = time.time() - t0

    results = [evaluate("TF-IDF + length (logistic)", test, p_tfidf)]
    boots = {}
    for name, p in scored.items():
        results.append(evaluate(name, test, p))
        boots[name] = paired_bootstrap(test["label"], test["group"], test["prompt"], p, p_tfidf, n=args.resamples)
    out = {"benchmark": "reward_alpacaeval_paired", "date": time.strftime("%Y-%m-%d"),
           "run": {k: meta["config"].get(k) for k in ("max_length", "seed", "micro_batches", "score_views",
                                                      "average_checkpoints", "random_cut")},
           "test_rows": len(test), "results": results, "paired_bootstrap_vs_tfidf": boots,
           "seconds_scoring": round(t_score, 1)}
    res_dir = HERE / "results"
    (res_dir / "reward_alpacaeval_paired.json").write_text(json.dumps(out, indent=2))
    md = ["# The last AlpacaEval P[Love] run against TF-IDF + length, with intervals", "",
          f"{out['date']}. Run: {out['run']}; {len(test):,} test answers ({test['group'].nunique()} models, "
          f"{test['prompt'].nunique()} instructions).", "",
          "| method | per-answer AUROC | within-model AUROC (mean) | model Spearman |", "|---|---:|---:|---:|",
          *[f"| {r['method']} | {r['auroc']:.4f} | {r['within_model_auroc_mean']:.4f} | {r['model_spearman']:.3f} |"
            for r in results]]
    for name, boot in boots.items():
        md += ["", *bootstrap_md(boot, name)]
    (res_dir / "reward_alpacaeval_paired.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
