"""P[Love] under reaction spam: 0 / 5 / 20 % of users are bots (half heart every answer, half heart at
random), with and without the labelled-set builder's filters (per-user heart-rate cap, bursts, hearts on
unsafe answers).

Each spam level is its own simulated log (same seed, same human population mixture, bots added on top);
each is labelled twice (filters on / off), and the same P[Love] recipe (MiniLM, fixed steps) is trained on
each. Evaluation is on the human users' test-day turns (the oracle file says who is a bot), so the number
measures what spam does to the model of human reactions, not how well the model predicts bots.

    python benchmarks/reward_spam.py              # what was committed
Writes benchmarks/results/reward_spam.{json,md}. Target: at 5 % spam with filters on, AUROC drops by
≤ 0.01 against 0 % spam.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import orjson
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
HUMAN_MIX = {"information": 0.42, "companionship": 0.27, "creative": 0.21, "adversarial": 0.06}
FILTERS_OFF = {"max_user_rate": None, "burst_count": None, "unsafe_hearts": False}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=3000)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--levels", default="0,0.05,0.2")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=HERE / "work" / "reward_spam")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()

    from rluf.data import DatasetConfig, build_dataset
    from rluf.reward import RewardModel
    from rluf.reward.metrics import auroc
    from rluf.reward.train import RewardTrainConfig, train_reward
    from rluf.simulate import SimulateConfig, run_simulation
    from rluf.store import connect
    from rluf.store.ingest import ingest

    rows = []
    t_all = time.perf_counter()
    for level in [float(x) for x in args.levels.split(",")]:
        work = args.work / f"spam{level:g}"
        # Bots are `level` of all users; the human segments keep their proportions.
        mix = {k: v * (1 - level) for k, v in HUMAN_MIX.items()} | {"bot": level}
        sim = run_simulation(SimulateConfig(users=args.users, days=args.days, seed=args.seed, mixture=mix),
                             work / "sim")
        engine = connect(f"sqlite:///{work / 'store.db'}")
        ingest(engine, [work / "sim" / "interactions.jsonl", work / "sim" / "reactions.jsonl"])
        segment = {o["response_id"]: o["segment"]
                   for o in map(orjson.loads, (work / "sim" / "oracle.jsonl").read_bytes().splitlines())}
        for filters in ("on", "off"):
            cfg = DatasetConfig(signal="love", upsample_to=0.1, **({} if filters == "on" else FILTERS_OFF))
            card = build_dataset(engine, cfg, work / f"data-{filters}")
            t = time.perf_counter()
            train_reward(RewardTrainConfig(max_length=96, max_steps=args.steps, batch_size=32, bf16=True,
                                           learning_rate=1e-4, warmup_ratio=0.0, seed=args.seed),
                         work / f"data-{filters}" / "train.parquet", work / f"data-{filters}" / "validation.parquet",
                         work / f"model-{filters}")
            train_s = time.perf_counter() - t
            test = pq.read_table(work / f"data-{filters}" / "test.parquet").to_pylist()
            human = [r for r in test if segment.get(r["response_id"]) != "bot"]
            y = np.array([r["label"] for r in human])
            s = RewardModel.load(work / f"model-{filters}").score([r["prompt"] for r in human],
                                                                  [r["response"] for r in human])
            rows.append({"spam": level, "filters": filters, "auroc_human_test": auroc(y, s),
                         "test_rows": len(human), "test_positives": int(y.sum()),
                         "train_rows": card["splits"]["train"]["n"],
                         "flagged_users": card["filters"].get("flagged_users"),
                         "bot_share_of_loves": sim.get("love_rate") and round(
                             1 - sim["human_love_rate"] / max(sim["love_rate"], 1e-9), 4),
                         "train_seconds": round(train_s, 1)})
            print(json.dumps(rows[-1]), flush=True)
    base = {r["filters"]: r["auroc_human_test"] for r in rows if r["spam"] == 0}
    for r in rows:
        r["auroc_drop_vs_no_spam"] = round(base[r["filters"]] - r["auroc_human_test"], 4)
    at5 = next((r for r in rows if r["spam"] == 0.05 and r["filters"] == "on"), None)
    result = {"rows": rows, "target": "AUROC drop <= 0.01 at 5 % spam with filters on",
              "target_met": None if at5 is None else at5["auroc_drop_vs_no_spam"] <= 0.01,
              "setup": {"users": args.users, "days": args.days, "steps": args.steps, "backbone": "all-MiniLM-L6-v2",
                        "max_length": 96, "seed": args.seed, "date": time.strftime("%Y-%m-%d"),
                        "elapsed_s": round(time.perf_counter() - t_all, 1)}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "reward_spam.json").write_text(json.dumps(result, indent=2))
    md = ["# P[Love] under reaction spam", "",
          f"{result['setup']['date']}, 2 CPU cores. {args.users} users × {args.days} days per spam level; MiniLM, "
          f"{args.steps} steps of 32 at 96 tokens; AUROC on the human users' test-day turns.", "",
          "| bots (share of users) | filters | AUROC (human test turns) | drop vs 0 % | test rows (positives) |",
          "|---:|---|---:|---:|---:|"]
    md += [f"| {r['spam']:.0%} | {r['filters']} | {r['auroc_human_test']:.4f} | {r['auroc_drop_vs_no_spam']:+.4f} | "
           f"{r['test_rows']} ({r['test_positives']}) |" for r in rows]
    md += ["", f"Target (≤ 0.01 drop at 5 % with filters): **{'met' if result['target_met'] else 'not met'}**. "
           "Few test positives: AUROC moves by a few hundredths between seeds, so read the drops with that in mind."]
    (args.out / "reward_spam.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
