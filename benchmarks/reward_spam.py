"""P[Love] under reaction spam: bots hearting answers (half of them every answer, half at random) make up
0 / 5 / 20 % of users, and the labelled set is built with and without the builder's filters (per-user rate,
bursts, hearts on unsafe answers, per-user cap).

Design, so that a drop of 0.01 AUROC is measurable at all:
- one human population, simulated once; each spam level adds its own bot users *on top* of the same
  humans (a separate bot-only simulation whose ids are prefixed with "b"), so the levels differ only by
  the bots;
- every model is scored on one common evaluation set: a separate human-only simulation (new users, later
  dates), far larger than a test split, so all comparisons are paired on the same rows;
- the training noise floor is measured in the same run: the 0 % / filters-on model trained with extra
  seeds (the spread of their AUROCs is what "no drop" can mean).

    python benchmarks/reward_spam.py                 # what was committed
    python benchmarks/reward_spam.py --users 500 --eval-users 500 --steps 10 --noise-seeds 0   # a quick look

Writes benchmarks/results/reward_spam.{json,md,png}. Target: at 5 % spam with filters on, AUROC drops by
≤ 0.01 against 0 % spam.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import orjson
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
HUMAN_MIX = {"information": 0.42, "companionship": 0.27, "creative": 0.21, "adversarial": 0.06}
FILTERS_OFF = {"max_user_rate": None, "burst_count": None, "unsafe_hearts": False, "max_positives_per_user": None}
MAX_LENGTH = 96


def prefix_ids(src: Path, dst: Path, prefix: str) -> None:
    """Copy a simulation's files with every id prefixed, so a second simulation can share a store with the
    first (both number their users, conversations and turns from 1)."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("interactions.jsonl", "reactions.jsonl", "oracle.jsonl"):
        out = []
        for row in map(orjson.loads, (src / name).read_bytes().splitlines()):
            for k in ("response_id", "conversation_id", "user_id"):
                if k in row:
                    row[k] = prefix + row[k]
            out.append(orjson.dumps(row))
        (dst / name).write_bytes(b"\n".join(out) + b"\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=3000, help="human users in the training log")
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--eval-users", type=int, default=8000, help="human users in the common evaluation set")
    ap.add_argument("--eval-days", type=int, default=3)
    ap.add_argument("--steps", type=int, default=80, help="P[Love] optimiser steps (batch 32)")
    ap.add_argument("--levels", default="0,0.05,0.2", help="bot share of all users")
    ap.add_argument("--noise-seeds", type=int, default=2, help="extra training seeds of the 0 %% / on model")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=HERE / "work" / "reward_spam")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--report-only", action="store_true", help="redraw the Markdown and PNG from OUT/reward_spam.json")
    args = ap.parse_args()
    if args.report_only:
        write_report(json.loads((args.out / "reward_spam.json").read_text()), args.out)
        return

    from rluf.data import DatasetConfig, build_dataset
    from rluf.reward import RewardModel
    from rluf.reward.metrics import auroc
    from rluf.reward.train import RewardTrainConfig, train_reward
    from rluf.simulate import SimulateConfig, run_simulation
    from rluf.store import connect
    from rluf.store.ingest import ingest

    t_all = time.perf_counter()
    if args.work.exists():
        shutil.rmtree(args.work)
    work = args.work

    # The common evaluation set: new human users, after the training log's days.
    ev = run_simulation(SimulateConfig(users=args.eval_users, days=args.eval_days, seed=args.seed + 7,
                                       mixture=HUMAN_MIX, start="2026-12-01T00:00:00Z"), work / "eval-raw")
    prefix_ids(work / "eval-raw", work / "eval-sim", "e")
    ev_engine = connect(f"sqlite:///{work / 'eval.db'}")
    ingest(ev_engine, [work / "eval-sim" / "interactions.jsonl", work / "eval-sim" / "reactions.jsonl"])
    build_dataset(ev_engine, DatasetConfig(signal="love", split_fractions=(0, 0, 1), **FILTERS_OFF), work / "eval-ds")
    eval_rows = pq.read_table(work / "eval-ds" / "test.parquet").to_pylist()
    y_eval = np.array([r["label"] for r in eval_rows])
    oracle = {o["response_id"]: o["p_love"]
              for o in map(orjson.loads, (work / "eval-sim" / "oracle.jsonl").read_bytes().splitlines())}
    p_eval = np.array([oracle[r["response_id"]] for r in eval_rows])
    oracle_auroc = auroc(y_eval, p_eval)

    def expected_auroc(s: np.ndarray) -> float:
        """AUROC expected over the users' coin flips: each turn counts as a positive with weight p_love and
        as a negative with weight 1 - p_love (the simulator's truth). Same quantity as the AUROC on drawn
        labels, without their sampling noise — with ~1-2 % positives that noise alone is a few hundredths."""
        from sklearn.metrics import roc_auc_score

        return float(roc_auc_score(np.r_[np.ones(len(s)), np.zeros(len(s))], np.r_[s, s],
                                   sample_weight=np.r_[p_eval, 1 - p_eval]))

    human = run_simulation(SimulateConfig(users=args.users, days=args.days, seed=args.seed, mixture=HUMAN_MIX),
                           work / "human")

    def train_and_score(data: Path, model: Path, seed: int) -> tuple[float, float, float]:
        t = time.perf_counter()
        train_reward(RewardTrainConfig(max_length=MAX_LENGTH, max_steps=args.steps, batch_size=32, bf16=None,
                                       learning_rate=1e-4, warmup_ratio=0.0, seed=seed, resume=False),
                     data / "train.parquet", data / "validation.parquet", model)
        s = RewardModel.load(model).score([r["prompt"] for r in eval_rows], [r["response"] for r in eval_rows],
                                          batch_size=128)
        shutil.rmtree(model / "checkpoints", ignore_errors=True)
        return auroc(y_eval, s), expected_auroc(s), time.perf_counter() - t

    rows = []
    for level in [float(x) for x in args.levels.split(",")]:
        lw = work / f"spam{level:g}"
        lw.mkdir(parents=True, exist_ok=True)
        files = [work / "human" / "interactions.jsonl", work / "human" / "reactions.jsonl"]
        n_bots = round(args.users * level / (1 - level))
        if n_bots:
            run_simulation(SimulateConfig(users=n_bots, days=args.days, seed=args.seed + 1, mixture={"bot": 1.0}),
                           lw / "bots-raw")
            prefix_ids(lw / "bots-raw", lw / "bots", "b")
            files += [lw / "bots" / "interactions.jsonl", lw / "bots" / "reactions.jsonl"]
        engine = connect(f"sqlite:///{lw / 'store.db'}")
        ingest(engine, files)
        for filters in ("on", "off"):
            cfg = DatasetConfig(signal="love", upsample_to=0.1, **({} if filters == "on" else FILTERS_OFF))
            card = build_dataset(engine, cfg, lw / f"data-{filters}")
            train = pq.read_table(lw / f"data-{filters}" / "train.parquet", columns=["user_id", "label"]).to_pylist()
            pos = [r for r in train if r["label"] == 1]
            bot_pos = sum(r["user_id"].startswith("b") for r in pos)
            seeds = [args.seed] + ([args.seed + 1 + i for i in range(args.noise_seeds)]
                                   if level == 0 and filters == "on" else [])
            for seed in seeds:
                a, ea, secs = train_and_score(lw / f"data-{filters}", lw / f"model-{filters}-{seed}", seed)
                rows.append({"spam": level, "bots": n_bots, "filters": filters, "seed": seed,
                             "auroc": a, "expected_auroc": ea,
                             "train_rows": len(train), "train_positive_rows": len(pos),
                             "bot_share_of_train_positives": round(bot_pos / max(len(pos), 1), 4),
                             "flagged_users": card["filters"]["flagged_users"], "seconds": round(secs, 1)})
                print(json.dumps(rows[-1]), flush=True)

    main_rows = [r for r in rows if r["seed"] == args.seed]
    base = {r["filters"]: r["auroc"] for r in main_rows if r["spam"] == 0}
    base_e = {r["filters"]: r["expected_auroc"] for r in main_rows if r["spam"] == 0}
    for r in rows:
        r["auroc_drop_vs_no_spam"] = round(base[r["filters"]] - r["auroc"], 4)
        r["expected_auroc_drop_vs_no_spam"] = round(base_e[r["filters"]] - r["expected_auroc"], 4)
    noise = [r["auroc"] for r in rows if r["spam"] == 0 and r["filters"] == "on"]
    noise_e = [r["expected_auroc"] for r in rows if r["spam"] == 0 and r["filters"] == "on"]
    at5 = next((r for r in main_rows if r["spam"] == 0.05 and r["filters"] == "on"), None)
    result = {
        "rows": rows, "target": "AUROC drop <= 0.01 at 5 % spam with filters on",
        "target_met": None if at5 is None else at5["auroc_drop_vs_no_spam"] <= 0.01,
        "target_met_expected_auroc": None if at5 is None else at5["expected_auroc_drop_vs_no_spam"] <= 0.01,
        "noise_floor": {"seeds": len(noise), "auroc_min": min(noise), "auroc_max": max(noise),
                        "auroc_sd": float(np.std(noise, ddof=1)) if len(noise) > 1 else None,
                        "expected_auroc_min": min(noise_e), "expected_auroc_max": max(noise_e),
                        "expected_auroc_sd": float(np.std(noise_e, ddof=1)) if len(noise_e) > 1 else None},
        "eval_set": {"rows": len(eval_rows), "positives": int(y_eval.sum()), "oracle_auroc": oracle_auroc,
                     "users": args.eval_users, "days": args.eval_days, "love_rate": ev["love_rate"]},
        "human_log": {"users": args.users, "days": args.days, "turns": human["turns"],
                      "love_rate": human["love_rate"]},
        "setup": {"steps": args.steps, "batch_size": 32, "backbone": "all-MiniLM-L6-v2", "max_length": MAX_LENGTH,
                  "learning_rate": 1e-4, "seed": args.seed, "date": time.strftime("%Y-%m-%d"),
                  "elapsed_s": round(time.perf_counter() - t_all, 1)},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "reward_spam.json").write_text(json.dumps(result, indent=2))

    write_report(result, args.out)


def write_report(result: dict, out: Path) -> None:
    """reward_spam.{md,png} from the JSON result (`--report-only` redraws them without re-running)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    setup, ev, human, nf = result["setup"], result["eval_set"], result["human_log"], result["noise_floor"]
    main_rows = [r for r in result["rows"] if r["seed"] == setup["seed"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    for filters, marker in (("on", "o-"), ("off", "s--")):
        pts = [(r["spam"] * 100, r["auroc"]) for r in main_rows if r["filters"] == filters]
        ax.plot(*zip(*pts, strict=True), marker, label=f"filters {filters}")
    ax.axhspan(nf["auroc_min"], nf["auroc_max"], color="grey", alpha=0.2, label="0 % / on, other seeds")
    ax.axhline(ev["oracle_auroc"], color="k", lw=0.8, ls=":", label="oracle")
    ax.set(xlabel="bots (% of users)", ylabel="AUROC on the human evaluation set", title="P[Love] under reaction spam")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "reward_spam.png", dpi=100)

    at5 = next((r for r in main_rows if r["spam"] == 0.05 and r["filters"] == "on"), None)
    md = ["# P[Love] under reaction spam", "",
          f"{setup['date']}, 2 CPU cores. Training log: {human['users']} human users × {human['days']} days "
          f"({human['turns']:,} turns), plus bot users on top; P[Love]: MiniLM, {setup['steps']} steps of 32 at "
          f"{setup['max_length']} tokens. Every model is scored on one evaluation set of {ev['rows']:,} turns "
          f"({ev['positives']} loved) from {ev['users']} other human users; the simulator's own p_love "
          f"reaches AUROC {ev['oracle_auroc']:.4f} on it (a ceiling that knows each "
          "user's propensity, which no model of the text can see).", "",
          "AUROC is on the drawn labels; *expected AUROC* counts each turn as loved with weight p_love (the "
          "simulator's truth) and not loved with 1 − p_love: the same quantity without the labels' coin-flip noise.",
          "",
          "| bots (share of users) | filters | AUROC | drop vs 0 % | expected AUROC | drop vs 0 % | "
          "bots' share of train positives | flagged users |",
          "|---:|---|---:|---:|---:|---:|---:|---:|"]
    md += [f"| {r['spam']:.0%} ({r['bots']}) | {r['filters']} | {r['auroc']:.4f} | {r['auroc_drop_vs_no_spam']:+.4f} | "
           f"{r['expected_auroc']:.4f} | {r['expected_auroc_drop_vs_no_spam']:+.4f} | "
           f"{r['bot_share_of_train_positives']:.1%} | {r['flagged_users']} |" for r in main_rows]
    md += ["", f"Training noise: the 0 % / filters-on model over {nf['seeds']} seeds spans AUROC "
           f"{nf['auroc_min']:.4f}–{nf['auroc_max']:.4f}"
           + (f" (sd {nf['auroc_sd']:.4f})" if nf["auroc_sd"] is not None else "")
           + f"; expected AUROC {nf['expected_auroc_min']:.4f}–{nf['expected_auroc_max']:.4f}.",
           "", f"Target (≤ 0.01 drop at 5 % with filters): **{'met' if result['target_met'] else 'not met'}** "
           f"on drawn labels, **{'met' if result['target_met_expected_auroc'] else 'not met'}** on expected AUROC."]
    if at5 is not None and nf["seeds"] > 1:
        spread = nf["auroc_max"] - nf["auroc_min"]
        verdict = ("So this run shows that 5 % spam with the filters costs no more than training noise; resolving "
                   "0.01 needs several seeds per cell." if spread > 0.01 else "")
        md += ["", f"Read with the noise: the 5 % / filters-on model is one seed; the same 0 % model moves by "
               f"{spread:.4f} AUROC between seeds, {'more' if spread > 0.01 else 'less'} than the 0.01 target. "
               f"{verdict}".rstrip()]
    md += ["", "![AUROC by spam level](reward_spam.png)"]
    (out / "reward_spam.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
