"""P[Love] on simulated real-text traffic, against the world's own ceilings and two text baselines.

Per seed, top to bottom:
  1. train traffic: the `world` responder on the train side of the prompt split — the reference policy
     (SmolLM2, 4 cached samples per prompt), earlier AlpacaEval and HH-RLHF deployments and a love-bait arm
     answer `--users` simulated users for `--days` days;
  2. test traffic: the reference policy alone on the held-out prompts (none of them in the train traffic),
     answering other users (another world seed);
  3. ingest the train log, build the labelled set (repeated answers aggregated, positives upsampled to 10 %),
     train P[Love] (all-MiniLM-L6-v2), and a TF-IDF + length logistic regression on the same weighted rows;
  4. on every test turn: AUROC of P[Love], of the baselines, of the full oracle (knows each user) and of the
     text-only ceiling (the oracle's content logit: the best a (prompt, answer) model can do); over the
     distinct test answers, Pearson of P[Love]'s logit with the text-only oracle logit.
Means over seeds with the seeds' spread and, per seed, a 95 % bootstrap interval over test prompts.

    python benchmarks/reward_simulated.py                        # 3 seeds, what was committed
    python benchmarks/reward_simulated.py --seeds 0 --users 800 --max-steps 20   # a quick look

Stages are resumable: a seed's finished simulation, labelled set and model are reused (delete
benchmarks/work/reward_simulated to start over). Writes benchmarks/results/reward_simulated.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import orjson
import pyarrow.parquet as pq
from scipy.stats import pearsonr

from rluf.data import DatasetConfig, build_dataset
from rluf.paths import DEFAULT_DATA_DIR
from rluf.progress import stderr
from rluf.reward import RewardModel
from rluf.reward.metrics import auroc
from rluf.reward.train import RewardTrainConfig, train_reward
from rluf.simulate import SimulateConfig, run_simulation
from rluf.simulate.deployments import BankResponder, reference_bank
from rluf.simulate.prompts import load_prompt_pools, split_prompts
from rluf.store import connect
from rluf.store.ingest import ingest

HERE = Path(__file__).resolve().parent
WORK = HERE / "work" / "reward_simulated"


def lines(path: Path) -> list[dict]:
    return [orjson.loads(x) for x in path.read_bytes().splitlines() if x.strip()]


def tfidf_length(train: list[dict], test_prompts: list[str], test_responses: list[str]) -> np.ndarray:
    """TF-IDF of prompt and answer words + log length, logistic regression on the same weighted rows."""
    from scipy.sparse import csr_matrix, hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vec_p = TfidfVectorizer(min_df=2, max_features=20000, ngram_range=(1, 2), sublinear_tf=True)
    vec_r = TfidfVectorizer(min_df=2, max_features=50000, ngram_range=(1, 2), sublinear_tf=True)

    def feats(prompts, responses, fit=False):
        lp = csr_matrix(np.log1p([[len(r.split())] for r in responses]))
        if fit:
            return hstack([vec_p.fit_transform(prompts), vec_r.fit_transform(responses), lp]).tocsr()
        return hstack([vec_p.transform(prompts), vec_r.transform(responses), lp]).tocsr()

    x = feats([r["prompt"] for r in train], [r["response"] for r in train], fit=True)
    clf = LogisticRegression(C=1.0, max_iter=2000)
    clf.fit(x, [r["label"] for r in train], sample_weight=[r["weight"] for r in train])
    return clf.decision_function(feats(test_prompts, test_responses))


def feature_refit(train: list[dict], test_prompts: list[str], test_responses: list[str], segment_of: dict[str, str]
                  ) -> np.ndarray:
    """A diagnostic, not a competitor: logistic regression on the world's own hidden features (per segment),
    fitted on the same weighted rows. What this much evidence allows a model that already knew what users
    look at; the gap from it to the text-only ceiling is the data's, the gap from P[Love] to it the model's."""
    from sklearn.linear_model import LogisticRegression

    from rluf.simulate.scorers import AnswerScorer
    from rluf.simulate.taste import length_fit

    scorer = AnswerScorer()
    segs = ("information", "companionship", "creative", "adversarial")

    def x(prompt: str, response: str) -> np.ndarray:
        seg = segment_of.get(prompt, "information")
        f = scorer(prompt, response, seg == "adversarial")
        v = np.array([1.0, f.relevance, f.warmth, f.empathy, f.how_to and f.structured, length_fit(seg, f.words),
                      f.repetition, f.refusal and not f.harmful_prompt, f.refusal, f.unsafe, f.closer], float)
        out = np.zeros(len(segs) * len(v))
        out[segs.index(seg) * len(v):(segs.index(seg) + 1) * len(v)] = v
        return out

    clf = LogisticRegression(C=10.0, max_iter=5000)
    clf.fit(np.array([x(r["prompt"], r["response"]) for r in train]), [r["label"] for r in train],
            sample_weight=[r["weight"] for r in train])
    return clf.decision_function(np.array([x(p, r) for p, r in zip(test_prompts, test_responses, strict=True)]))


def prompt_bootstrap(y: np.ndarray, prompts: np.ndarray, scores: dict[str, np.ndarray], n: int = 1000,
                     seed: int = 0) -> dict[str, list[float]]:
    """95 % intervals of each score's AUROC and of P[Love] minus TF-IDF, resampling test prompts (a prompt's
    turns move together: its answers are shown to many users)."""
    _, codes = np.unique(prompts, return_inverse=True)
    rows = [np.flatnonzero(codes == i) for i in range(codes.max() + 1)]
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {k: [] for k in [*scores, "p_love_minus_tfidf"]}
    for _ in range(n):
        idx = np.concatenate([rows[i] for i in rng.integers(len(rows), size=len(rows))])
        if not 0 < y[idx].sum() < len(idx):
            continue
        a = {k: auroc(y[idx], s[idx]) for k, s in scores.items()}
        for k, v in a.items():
            draws[k].append(v)
        draws["p_love_minus_tfidf"].append(a["p_love"] - a["tfidf_length"])
    return {k: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for k, v in draws.items() if v}


def run_seed(seed: int, args: argparse.Namespace, train_pools, test_pools) -> dict:
    work = WORK / f"{args.name}-seed{seed}" if args.name != "reward_simulated" else WORK / f"seed{seed}"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if not (work / "train_sim" / "summary.json").exists():
        cfg = SimulateConfig(users=args.users, days=args.days, seed=seed, responder="world",
                             data_dir=args.data_dir, id_prefix="w")
        s = run_simulation(cfg, work / "train_sim")
        (work / "train_sim" / "summary.json").write_text(json.dumps(s, indent=1, default=str))
    train_sim = json.loads((work / "train_sim" / "summary.json").read_text())
    if not (work / "test_sim" / "summary.json").exists():
        bank = {"reference": reference_bank(test_pools)}
        responder = BankResponder(bank, test_pools, shares={"reference": 1.0}, name="reference")
        cfg = SimulateConfig(users=args.test_users, days=args.days, seed=1000 + seed, data_dir=args.data_dir,
                             id_prefix="t")
        s = run_simulation(cfg, work / "test_sim", responder=responder)
        (work / "test_sim" / "summary.json").write_text(json.dumps(s, indent=1, default=str))
    test_sim = json.loads((work / "test_sim" / "summary.json").read_text())
    if not (work / "ds" / "card.json").exists():
        db = work / "rluf.db"
        db.unlink(missing_ok=True)
        engine = connect(f"sqlite:///{db}")
        ingest(engine, [work / "train_sim" / "interactions.jsonl", work / "train_sim" / "reactions.jsonl"])
        build_dataset(engine, DatasetConfig(upsample_to=0.1, upsample_mode="weight",
                                            split_fractions=(0.9, 0.1, 0.0)), work / "ds")
    card = json.loads((work / "ds" / "card.json").read_text())
    t_data = time.time() - t0
    if not (work / "model" / "rluf_reward.json").exists():
        cfg = RewardTrainConfig(epochs=args.epochs, max_steps=args.max_steps, max_length=args.max_length,
                                batch_size=32, learning_rate=args.learning_rate, seed=seed, resume=False,
                                bf16=args.bf16, pooling="mean", disable_dropout=True)
        train = train_reward(cfg, work / "ds" / "train.parquet", work / "ds" / "validation.parquet", work / "model")
        (work / "train.json").write_text(json.dumps(train, indent=1, default=str))
    train = json.loads((work / "train.json").read_text())

    # Every test turn, its oracle row, and the model's score of its (prompt, answer) (scored once per pair).
    turns = lines(work / "test_sim" / "interactions.jsonl")
    oracle = {o["response_id"]: o for o in lines(work / "test_sim" / "oracle.jsonl")}
    loved = {r["response_id"] for r in lines(work / "test_sim" / "reactions.jsonl")
             if r["reaction"] == "love" and not r.get("removed")}
    pairs = list(dict.fromkeys((t["prompt"], t["response"]) for t in turns))
    rm = RewardModel.load(work / "model")
    p_pair = rm.score([p for p, _ in pairs], [r for _, r in pairs], batch_size=64, progress=True)
    train_rows = pq.read_table(work / "ds" / "train.parquet", columns=["prompt", "response", "label",
                                                                      "weight"]).to_pylist()
    tf_pair = tfidf_length(train_rows, [p for p, _ in pairs], [r for _, r in pairs])
    segment_of = {p: seg for seg, v in {**train_pools.pools}.items() for p in v} | \
        {p: seg for seg, v in test_pools.pools.items() for p in v}
    refit_pair = feature_refit(train_rows, [p for p, _ in pairs], [r for _, r in pairs], segment_of)
    at = {pr: i for i, pr in enumerate(pairs)}
    i_pair = np.array([at[(t["prompt"], t["response"])] for t in turns])
    y = np.array([t["response_id"] in loved for t in turns])
    o = [oracle[t["response_id"]] for t in turns]
    seg = np.array([x["segment"] for x in o])
    p_love = p_pair[i_pair]
    scores = {"p_love": p_love, "tfidf_length": tf_pair[i_pair], "feature_refit": refit_pair[i_pair],
              "length": np.array([len(t["response"].split()) for t in turns], float),
              "oracle": np.array([x["p_love"] for x in o]), "text_ceiling": np.array([x["content_logit"] for x in o])}
    # Human users' turns, as the world's ceilings: the bots' hearts (which a labelled set's filters remove) no
    # text explains. Every turn is reported beside.
    human = seg != "bot"
    aurocs = {k: auroc(y[human], s[human]) for k, s in scores.items()}
    aurocs_all = {k: auroc(y, s) for k, s in scores.items()}
    intervals = prompt_bootstrap(y[human], np.array([t["prompt"] for t in turns])[human],
                                 {k: s[human] for k, s in scores.items()}, n=args.bootstrap, seed=seed)

    # Has P[Love] learned the taste? Over distinct test answers shown to humans: its logit against the oracle's
    # content logit (the same for every human of the prompt's segment).
    logit_pair = np.log(np.clip(p_pair, 1e-9, 1)) - np.log(np.clip(1 - p_pair, 1e-9, 1))
    content, segment = {}, {}
    for t, x in zip(turns, o, strict=True):
        if x["segment"] != "bot":
            content[at[(t["prompt"], t["response"])]] = x["content_logit"]
            segment[at[(t["prompt"], t["response"])]] = x["segment"]
    ids = np.array(sorted(content))
    c = np.array([content[i] for i in ids])
    sg = np.array([segment[i] for i in ids])
    lengths = np.array([np.log1p(len(pairs[i][1].split())) for i in ids])
    no_adv = sg != "adversarial"
    taste = {
        "answers": int(len(ids)),
        "pearson_text_logit": float(pearsonr(logit_pair[ids], c)[0]),
        "pearson_text_logit_without_adversarial": float(pearsonr(logit_pair[ids][no_adv], c[no_adv])[0]),
        "pearson_tfidf_text_logit": float(pearsonr(tf_pair[ids], c)[0]),
        "pearson_length_text_logit": float(pearsonr(lengths, c)[0]),
        "per_segment": {s: float(pearsonr(logit_pair[ids][sg == s], c[sg == s])[0])
                        for s in sorted(set(sg)) if (sg == s).sum() > 20},
    }
    return {
        "seed": seed, "aurocs": aurocs, "aurocs_all_turns": aurocs_all, "intervals": intervals, "taste": taste,
        "test": {"turns": len(turns), "positives": int(y.sum()), "human_turns": int(human.sum()),
                 "human_positives": int(y[human].sum()), "prompts": len({t["prompt"] for t in turns}),
                 "answers": len(pairs), "love_rate": test_sim["love_rate"], "ceilings": test_sim["ceilings"]},
        "train_log": {"turns": train_sim["turns"], "love_rate": train_sim["love_rate"],
                      "ceilings": train_sim["ceilings"], "per_policy": train_sim.get("arms")},
        "dataset": {"kept": card["kept"], "train_rows": card["splits"]["train"]["rows_written"],
                    "train_turns": card["splits"]["train"]["n"], "dedupe": card["dedupe"],
                    "upsample_factor": card["upsample_factor"]},
        "train_seconds": train["seconds"], "data_seconds": round(t_data, 1),
    }


def share(r: dict) -> float:
    """How far P[Love] goes from chance (0.5) to the text-only ceiling."""
    return (r["aurocs"]["p_love"] - 0.5) / (r["aurocs"]["text_ceiling"] - 0.5)


def summarise(runs: list[dict]) -> dict:
    def stat(values):
        v = np.array(values, float)
        return {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max()),
                "sd": float(v.std(ddof=1)) if len(v) > 1 else None}

    keys = ("p_love", "tfidf_length", "length", "oracle", "text_ceiling", "feature_refit")
    out = {k: stat([r["aurocs"][k] for r in runs]) for k in keys}
    out["pearson_text_logit"] = stat([r["taste"]["pearson_text_logit"] for r in runs])
    out["pearson_tfidf_text_logit"] = stat([r["taste"]["pearson_tfidf_text_logit"] for r in runs])
    out["share_of_the_way"] = stat([share(r) for r in runs])
    return out


def write(runs: list[dict], args: argparse.Namespace, train_pools, test_pools) -> dict:
    s = summarise(runs)
    result = {
        "benchmark": "reward_simulated", "date": time.strftime("%Y-%m-%d"),
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "prompts": {"train": {k: len(v) for k, v in train_pools.pools.items()},
                    "test": {k: len(v) for k, v in test_pools.pools.items()}},
        # Means over seeds (the keys outside checks read).
        "auroc_p_love": s["p_love"]["mean"], "auroc_text_ceiling": s["text_ceiling"]["mean"],
        "auroc_oracle": s["oracle"]["mean"], "auroc_tfidf_length": s["tfidf_length"]["mean"],
        "auroc_length": s["length"]["mean"], "pearson_text_logit": s["pearson_text_logit"]["mean"],
        "share_of_the_way_to_text_ceiling": s["share_of_the_way"]["mean"],
        "targets": {
            "p_love_reaches_90pct_of_text_ceiling": s["share_of_the_way"]["mean"] >= 0.9,
            "p_love_beats_tfidf_length": s["p_love"]["mean"] > s["tfidf_length"]["mean"],
            "pearson_text_logit_at_least_0.8": s["pearson_text_logit"]["mean"] >= 0.8,
        },
        "summary": s, "runs": runs,
    }
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=2))
    _plot(runs, out / f"{args.name}.png")
    r0 = runs[0]
    md = [
        "# P[Love] on simulated real-text traffic vs the world's ceilings", "",
        f"{result['date']}, 2 CPU cores, {len(runs)} seed(s) ({', '.join(str(r['seed']) for r in runs)}). Train "
        f"traffic: {args.users:,} users × {args.days} days of the `world` responder on "
        f"{sum(result['prompts']['train'].values())} train prompts ({r0['train_log']['turns']:,} turns, love rate "
        f"{r0['train_log']['love_rate']:.2%} in seed {r0['seed']}); test traffic: the reference policy (SmolLM2, "
        f"4 samples per prompt) on {sum(result['prompts']['test'].values())} held-out prompts, {args.test_users:,} "
        f"other users ({r0['test']['turns']:,} turns, {r0['test']['positives']} hearts). P[Love]: "
        f"all-MiniLM-L6-v2, {args.max_steps} steps of 32 rows (max_length {args.max_length}, lr "
        f"{args.learning_rate:g}, mean pooling), on {r0['dataset']['train_rows']:,} train rows standing for "
        f"{r0['dataset']['train_turns']:,} shown turns (repeated answers aggregated).", "",
        "## AUROC on the reference policy's test turns (mean over seeds, [min, max])", "",
        "On the human users' turns (the bots' hearts, which the labelled set's filters remove, no text explains); "
        "`aurocs_all_turns` in the JSON has every turn.", "",
        "| scorer | AUROC | per-seed range |", "|---|---:|---|",
        *[f"| {name} | {s[k]['mean']:.4f} | [{s[k]['min']:.4f}, {s[k]['max']:.4f}] |" for k, name in (
            ("oracle", "oracle P[love] (knows each user: ceiling)"),
            ("text_ceiling", "oracle content logit (text-only ceiling)"),
            ("p_love", "**P[Love] (MiniLM)**"), ("tfidf_length", "TF-IDF + length (same rows)"),
            ("length", "answer length only"),
            ("feature_refit", "diagnostic: the world's own features refitted on the same rows"))],
        "",
        f"P[Love] goes **{s['share_of_the_way']['mean']:.0%}** of the way from 0.5 to the text-only ceiling "
        "(per seed " + ", ".join(f"{share(r):.0%}" for r in runs) + ").",
        "",
        "Per seed, with 95 % intervals from resampling the test prompts (a prompt's turns move together):", "",
        "| seed | P[Love] | TF-IDF + length | P[Love] − TF-IDF | text ceiling | oracle | train min |",
        "|---:|---|---|---|---:|---:|---:|",
        *[f"| {r['seed']} | {r['aurocs']['p_love']:.4f} [{r['intervals']['p_love'][0]:.3f}, "
          f"{r['intervals']['p_love'][1]:.3f}] | {r['aurocs']['tfidf_length']:.4f} "
          f"[{r['intervals']['tfidf_length'][0]:.3f}, {r['intervals']['tfidf_length'][1]:.3f}] | "
          f"{r['aurocs']['p_love'] - r['aurocs']['tfidf_length']:+.4f} "
          f"[{r['intervals']['p_love_minus_tfidf'][0]:+.3f}, {r['intervals']['p_love_minus_tfidf'][1]:+.3f}] | "
          f"{r['aurocs']['text_ceiling']:.4f} | {r['aurocs']['oracle']:.4f} | {r['train_seconds'] / 60:.1f} |"
          for r in runs],
        "",
        "## Has P[Love] learned the taste?", "",
        "Pearson of its logit with the oracle's text-only content logit over the distinct test answers shown to "
        "humans (each answer once):", "",
        "| seed | P[Love] | without adversarial prompts | TF-IDF + length | log length | per segment (P[Love]) |",
        "|---:|---:|---:|---:|---:|---|",
        *[f"| {r['seed']} | **{r['taste']['pearson_text_logit']:.3f}** | "
          f"{r['taste']['pearson_text_logit_without_adversarial']:.3f} | "
          f"{r['taste']['pearson_tfidf_text_logit']:.3f} | "
          f"{r['taste']['pearson_length_text_logit']:.3f} | "
          + ", ".join(f"{k} {v:.2f}" for k, v in r["taste"]["per_segment"].items()) + " |" for r in runs],
        "",
        "## Targets", "",
        *[f"- {k.replace('_', ' ')}: **{'met' if v else 'not met'}**" for k, v in result["targets"].items()],
        "",
        "## Where the gap is", "",
        *_gap_lines(s),
        "",
        *_scaling_lines(out),
        "## The logs", "",
        "Ceilings of every simulated log (AUROC of the oracle and of its content logit against the drawn hearts):",
        "",
        "| seed | log | turns | love rate | oracle | text-only |", "|---:|---|---:|---:|---:|---:|",
        *[f"| {r['seed']} | {name} | {lg['turns']:,} | {lg['love_rate']:.2%} | {lg['ceilings']['auroc_oracle']} | "
          f"{lg['ceilings']['auroc_text_ceiling']} |" for r in runs
          for name, lg in (("train (world)", r["train_log"]), ("test (reference)", r["test"]))],
        "",
        f"Per source policy in the train log (seed {r0['seed']}): turns, love rate, text-only ceiling; and what "
        "the labelled set merged:", "",
        "| policy | turns | love rate | text-only ceiling | merged turns |", "|---|---:|---:|---:|---:|",
        *[f"| {k} | {v['turns']:,} | {v['love_rate']:.2%} | {v.get('auroc_text_ceiling')} | "
          f"{r0['dataset']['dedupe'].get('per_policy', {}).get(k, {}).get('merged_turns', 0):,} |"
          for k, v in (r0["train_log"]["per_policy"] or {}).items()],
        "", f"![AUROC per seed]({args.name}.png)",
    ]
    (out / f"{args.name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return result


def _gap_lines(s: dict) -> list[str]:
    if "feature_refit" not in s:
        return []
    ceil, refit, p = s["text_ceiling"]["mean"], s["feature_refit"]["mean"], s["p_love"]["mean"]
    return [
        f"The world's own features, refitted by logistic regression on the same weighted rows, reach {refit:.4f}: "
        f"this much evidence supports {(refit - 0.5) / (ceil - 0.5):.0%} of the way to the text-only ceiling "
        f"({ceil:.4f}) even for a model that knows what the users look at. Of P[Love]'s gap to the ceiling "
        f"({ceil - p:.3f}), {ceil - refit:.3f} is the data's (sparse hearts: ~2.7 % of shown turns) and "
        f"{refit - p:.3f} the model's (what MiniLM has not extracted from the text in 300 steps).",
    ]


def _scaling_lines(out: Path) -> list[str]:
    """The other runs of this benchmark under benchmarks/results (e.g. other traffic sizes), side by side."""
    rows = []
    for f in sorted(out.glob("reward_simulated*.json")):
        d = json.loads(f.read_text())
        if "summary" not in d:
            continue
        r0 = d["runs"][0]
        rows.append(f"| [{f.stem}]({f.stem}.md) | {d['args']['users']:,} | {r0['dataset']['train_turns']:,} | "
                    f"{r0['dataset']['train_rows']:,} | {len(d['runs'])} | {d['summary']['p_love']['mean']:.4f} | "
                    f"{d['summary']['tfidf_length']['mean']:.4f} | "
                    + (f"{d['summary']['feature_refit']['mean']:.4f}" if "feature_refit" in d["summary"] else "–")
                    + f" | {d['summary']['text_ceiling']['mean']:.4f} | "
                    f"{d['summary']['pearson_text_logit']['mean']:.3f} |")
    if len(rows) < 2:
        return []
    return ["How the evidence scales (same world and model; only the number of train users changes):", "",
            "| run | train users | train turns | train rows | seeds | P[Love] | TF-IDF + length | features refit "
            "| text ceiling | Pearson |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|", *rows, ""]


def _plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("oracle", "oracle"), ("text_ceiling", "text ceiling"), ("p_love", "P[Love]"),
            ("tfidf_length", "TF-IDF+len"), ("length", "length")]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for j, r in enumerate(runs):
        ax.scatter(range(len(keys)), [r["aurocs"][k] for k, _ in keys], label=f"seed {r['seed']}",
                   marker="o^sDv"[j % 5])
    ax.set_xticks(range(len(keys)), [n for _, n in keys])
    ax.axhline(0.5, color="grey", lw=0.5)
    ax.set_ylabel("AUROC on the reference's test turns")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--users", type=int, default=30000,
                    help="users of the train traffic (more users add evidence, not rows: repeats aggregate)")
    ap.add_argument("--test-users", type=int, default=4000, help="users of the test traffic")
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--max-steps", type=int, default=300)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--learning-rate", type=float, default=1e-4)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--name", default="reward_simulated",
                    help="results file name (and work folder prefix), e.g. for a scaling point")
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                    help="bf16 autocast (default: where the CPU runs it fast)")
    args = ap.parse_args()
    from rluf.hardware import resolve_bf16

    args.bf16 = resolve_bf16(args.bf16)
    pools = load_prompt_pools(args.data_dir)
    if not pools.real_data:
        raise SystemExit(f"{args.data_dir}: real data not found; this benchmark needs AlpacaEval and HH-RLHF")
    train_pools, test_pools = split_prompts(pools)
    runs = []
    for seed in args.seeds:
        stderr.print(f"[bold]seed {seed}[/bold]")
        runs.append(run_seed(seed, args, train_pools, test_pools))
        write(runs, args, train_pools, test_pools)  # results so far, after every seed


if __name__ == "__main__":
    main()
