"""`rluf demo`: the whole loop on embedded defaults, top to bottom, on 2 CPU cores.

    1 simulate    a week of users chatting with the style responder (varies warmth, closers, length, topic,
                  so the log carries a learnable signal); the full profile adds a second deployment answered
                  by the reference policy itself on a bounded prompt bank (a 135M model cannot write a whole
                  week of distinct answers in time)
    2 ingest      into a SQLite store
    3 dataset     the labelled set for `love` (positives upsampled to 10 %, corrected back later)
    4 rewards     P[Love] on it; helpfulness (AlpacaEval) and safety (HH) pairwise models
    5 policy      a short CGPO run from SmolLM2-135M-Instruct (configs/moderate.yaml: P[Love] weight 0.1)
    6 evaluate    offline: reference, the CGPO policy and three style responders on a fixed prompt set
    7 audit       the CGPO policy's answers against the reference's
    8 A/B         the simulated population split by a salted hash of the user id over the same policies;
                  love lift of CGPO vs reference with a CI clustered by user and answer; offline vs online correlation
    → DIR/report.md, DIR/report.json, PNG plots

Profiles: `quick` (the default where bf16 is fast; 8-15 min on 2 cores with avx512_bf16 or AMX, 25.5 on an AVX2-only
EPYC), `quick-fp32` (the default elsewhere: smaller budgets that fit 15 minutes in fp32) and `full` (the
paper-reproduction budget, see benchmarks/paper_repro.py).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from rluf.hardware import describe
from rluf.progress import stderr

REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"
STYLE_ARMS = {  # cheap extra "policies" for the offline-vs-online correlation
    "style_plain": "style:closer=0,warm=0.2",
    "style_warm": "style:closer=0.1,warm=0.9",
    "style_bait": "style:closer=0.9,warm=0.9",
}
_QUICK = {"users": 3000, "days": 7, "reward_steps": 40, "love_steps": 40, "policy_steps": 6,
          "holdout": (16, 8), "val_pairs": 400, "answer_tokens": 96,
          "policy_log_users": 0, "policy_log_prompts_per_segment": 24, "policy_log_samples": 2,
          "eval_chat": 32, "eval_safety": 16,
          "ab_users": 3000, "ab_days": 3, "ab_prompts_per_segment": 16, "ab_samples": 2,
          "policies": {"cgpo": "moderate"}}
PROFILES = {
    # policies: arm name → config in configs/; the headline numbers are the `cgpo` arm against the reference.
    # love_steps: P[Love]'s optimiser steps; reward_steps: the pairwise models'. Measured on a quick demo's
    # answers (2026-12-01): 300 steps instead of 40 raised the correlation of P[Love]'s logit with the simulated
    # users' taste from 0.24 to 0.36 and the offline-vs-expected love-rate Pearson over its 5 policies from 0.80
    # to 0.90; a 10× larger log then added little to the first (0.37), gave 0.95 for the second and 10× the
    # validation positives. The full profile takes 300 steps and a 5× log (a 10× log's validation passes alone
    # cost ~6 min).
    # policy_log_*: a second deployment answered by the reference policy (users, prompts per segment, answers
    # per prompt). Without it P[Love] only ever saw the style responder's answers and, in the 2026-12-01
    # paper_repro run, scored every SmolLM2 arm below every style arm although the simulated users loved the
    # SmolLM2 arms more (offline-vs-expected Spearman 0.11): a distribution shift, not noise. The quick profile
    # leaves it out: on 2026-12-01 it cost 3.4 of the quick demo's minutes (generating 192 answers), and a
    # 40-step P[Love] learns too little from it to pay for them.
    "quick": _QUICK,
    # The quick profile on a CPU that runs bf16 in software (no avx512_bf16 / amx_bf16), where everything runs in
    # fp32 at about half the speed: on a 2-core AVX2 EPYC (2026-12-01) the quick profile took 25.5 min after this
    # day's speed-ups (29.7 before; rewards 8.3 min, CGPO 8.9, evaluation 2.5, A/B 5.3). These budgets keep the
    # whole loop within 15 minutes there: fewer optimiser steps for every model (3 CGPO steps instead of 6), half
    # the held-out and A/B prompts, 18 evaluation prompts instead of 48, and answers of at most 64 new tokens (as
    # CGPO trains) instead of 96 in the evaluation and the A/B test. A first version (24 P[Love] steps, 24
    # evaluation prompts, 96 tokens) took 19.6 min there, ~3 min of it lost to a test run beside it; this one 13.9
    # min (rewards 4.7, CGPO 5.6, evaluation 1.0, A/B 1.9); after oneDNN-packed sampling weights and one sampling
    # call for all CGPO tasks, 11.5-11.6 min (`make demo` on a fresh clone 12.8-12.9 min with the install). What it
    # shows is thinner; `rluf demo --profile quick` keeps the bf16 machines' budgets.
    "quick-fp32": {**_QUICK, "reward_steps": 16, "love_steps": 20, "policy_steps": 3, "holdout": (8, 4),
                   "val_pairs": 200, "answer_tokens": 64, "eval_chat": 12, "eval_safety": 6,
                   "ab_prompts_per_segment": 8},
    "full": {"users": 15000, "days": 7, "reward_steps": 100, "love_steps": 300, "policy_steps": 12,
             "holdout": (16, 8), "val_pairs": 400, "answer_tokens": 96,
             "policy_log_users": 7500, "policy_log_prompts_per_segment": 64, "policy_log_samples": 2,
             "eval_chat": 48, "eval_safety": 24,
             "ab_users": 6000, "ab_days": 4, "ab_prompts_per_segment": 24, "ab_samples": 3,
             "policies": {"moderate": "moderate", "aggressive": "aggressive", "cgpo": "cgpo_cpu"}},
}


def resolve_profile(profile: str | None) -> str:
    """None = 'quick', or 'quick-fp32' where bf16 is not fast (see rluf.hardware)."""
    from rluf.hardware import bf16_is_fast

    if profile is None:
        return "quick" if bf16_is_fast() else "quick-fp32"
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {sorted(PROFILES)}")
    return profile


def _stage(i: int, n: int, what: str) -> None:
    stderr.print(f"[bold]{i}/{n} {what}[/bold]")


def policy_config(name: str, models: Path, max_steps: int, holdout: tuple[int, int] = (16, 8)) -> Any:
    """configs/NAME.yaml with its reward model paths pointed at `models` and a shorter budget."""
    import yaml

    from rluf.policy.config import PolicyTrainConfig

    path = REPO_CONFIGS / f"{name}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run the demo from a checkout of rluf")
    raw = yaml.safe_load(path.read_text())
    for task, h in zip(raw["tasks"], holdout, strict=False):
        task["prompts"]["holdout"] = h
        for r in task["rewards"]:
            r["model"] = str(models / Path(r["model"]).name)
        for j in task.get("judges", []):
            if "model" in j.get("params", {}):
                j["params"]["model"] = str(models / Path(j["params"]["model"]).name)
    raw.update(max_steps=max_steps, save_steps=max_steps)
    return PolicyTrainConfig.model_validate(raw)


def style_answers(spec: str, prompts: list[str], task: list[str], seed: int) -> list[str]:
    import numpy as np

    from rluf.simulate.responders import make_responder

    r = make_responder(spec)
    return r.respond(prompts, ["companionship" if t == "chat" else "adversarial" for t in task],
                     [t == "safety" for t in task], np.random.default_rng(seed))


def run_demo(out: Path, users: int | None = None, days: int | None = None, seed: int = 0,
             data_dir: Path | None = None, profile: str | None = None, stop_after: str | None = None,
             policy_log_users: int | None = None) -> dict[str, Any]:
    from rluf.data import DatasetConfig, build_dataset
    from rluf.paths import DEFAULT_DATA_DIR, data_dir_available
    from rluf.simulate import SimulateConfig, run_simulation
    from rluf.store import connect
    from rluf.store.ingest import ingest

    auto = profile is None
    profile = resolve_profile(profile)
    if auto and profile == "quick-fp32":
        stderr.print("[yellow]this CPU runs bf16 in software: profile quick-fp32 (smaller budgets, fp32) keeps the "
                     "demo within 15 minutes; --profile quick for the full quick budgets[/yellow]")
    P = dict(PROFILES[profile])
    from rluf.hardware import probe

    machine = probe()  # ~2 s: lets this run's timings be compared with runs on other machines
    P["users"] = users or P["users"]
    P["days"] = days or P["days"]
    P["policy_log_users"] = P["policy_log_users"] if policy_log_users is None else policy_log_users
    t_start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(data_dir) if data_dir is not None else DEFAULT_DATA_DIR
    if not data_dir_available(data_dir):
        stderr.print(f"[yellow]{data_dir} not found: the simulator uses its built-in prompt set[/yellow]")
    n = 8
    timings: dict[str, float] = {}

    def lap(name: str, t: float) -> None:
        timings[name] = round(time.perf_counter() - t, 1)

    t = time.perf_counter()
    _stage(1, n, f"simulate {P['users']} users × {P['days']} days")
    sim = run_simulation(SimulateConfig(users=P["users"], days=P["days"], seed=seed, data_dir=data_dir),
                         out / "sim")
    logs = [out / "sim"]
    if P["policy_log_users"]:
        stderr.print(f"  and {P['policy_log_users']} users answered by the reference policy "
                     f"({P['policy_log_prompts_per_segment']} prompts per segment × {P['policy_log_samples']} answers)")
        sim["policy_log"] = run_simulation(SimulateConfig(
            users=P["policy_log_users"], days=P["days"], seed=seed + 2, data_dir=data_dir, id_prefix="p",
            responder="policy:default", prompts_per_segment=P["policy_log_prompts_per_segment"],
            responder_samples=P["policy_log_samples"]), out / "sim_policy")
        with (out / "sim_policy" / "interactions.jsonl").open(encoding="utf-8") as f:
            sim["policy_log"]["distinct_answers"] = len({json.loads(x)["response"] for x in f})
        logs.append(out / "sim_policy")
    lap("simulate", t)

    t = time.perf_counter()
    _stage(2, n, "ingest into the store")
    db_url = f"sqlite:///{out / 'rluf.db'}"
    engine = connect(db_url)
    ing = ingest(engine, [d / f for d in logs for f in ("interactions.jsonl", "reactions.jsonl")])
    lap("ingest", t)

    t = time.perf_counter()
    _stage(3, n, "labelled set (signal love)")
    # Positives upsampled to 10 % as the paper trains; the factor in the card undoes it for P[Love].
    card = build_dataset(engine, DatasetConfig(signal="love", upsample_to=0.1), out / "dataset")
    lap("dataset", t)
    result: dict[str, Any] = {"out": str(out), "db": db_url, "profile": profile, "machine": machine,
                              "simulate": sim, "ingest": ing, "card": card}
    if stop_after == "dataset":
        result["elapsed_s"] = round(time.perf_counter() - t_start, 1)
        return result

    t = time.perf_counter()
    _stage(4, n, "reward models: P[Love], helpfulness, safety")
    from rluf.demo_models import train_demo_rewards

    models = out / "models"
    rewards = train_demo_rewards(models, out / "dataset", data_dir, steps=P["reward_steps"],
                                 love_steps=P["love_steps"], seed=seed, val_pairs=P["val_pairs"])
    lap("rewards", t)

    t = time.perf_counter()
    from rluf.policy.train import train_policy

    trained: dict[str, Any] = {}
    for arm, config in P["policies"].items():
        _stage(5, n, f"policy update {arm!r}: {P['policy_steps']} steps of configs/{config}.yaml")
        cfg = policy_config(config, models, P["policy_steps"], P["holdout"])
        cfg = cfg.model_copy(update={"data_dir": str(data_dir), "seed": seed})
        trained[arm] = train_policy(cfg, out / "policies" / arm)
        shutil.rmtree(out / "policies" / arm / "checkpoints", ignore_errors=True)  # the final folder is used
    lap("policy", t)

    t = time.perf_counter()
    _stage(6, n, "offline evaluation")
    from rluf.evaluate.offline import evaluate_policies, evaluation_prompts

    prompts, task, _ = evaluation_prompts(data_dir, P["eval_chat"], P["eval_safety"], seed)
    answer_files = {}
    for name, spec in STYLE_ARMS.items():
        f = out / "style_answers" / f"{name}.jsonl"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("".join(json.dumps({"prompt": p, "response": a}) + "\n"
                             for p, a in zip(prompts, style_answers(spec, prompts, task, seed), strict=True)))
        answer_files[name] = f
    ev = evaluate_policies({"reference": None, **{a: str(out / "policies" / a) for a in P["policies"]}},
                           out / "evaluate", str(models / "love"),
                           str(models / "helpfulness"), str(models / "safety"), "reference", P["eval_chat"],
                           P["eval_safety"], max_new_tokens=P["answer_tokens"], seed=seed, data_dir=data_dir,
                           answers=answer_files)
    lap("evaluate", t)

    t = time.perf_counter()
    _stage(7, n, "reward-hacking audit (each trained policy vs reference)")
    from rluf.evaluate.hacking import audit

    def chat_rows(name: str) -> list[dict]:
        rows = [json.loads(x) for x in (out / "evaluate" / "answers" / f"{name}.jsonl").read_text().splitlines()]
        return [r for r in rows if r["task"] == "chat"]

    audits = {a: audit(chat_rows(a), chat_rows("reference"), out=out / "audit" / a) for a in P["policies"]}
    lap("audit", t)

    t = time.perf_counter()
    _stage(8, n, f"simulated A/B: {P['ab_users']} users × {P['ab_days']} days")
    from rluf.evaluate.ab_stats import analyze
    from rluf.simulate.ab import run_ab_simulation

    arms = {"reference": "policy:default", **{a: f"policy:{out / 'policies' / a}" for a in P["policies"]},
            **STYLE_ARMS}
    ab_cfg = SimulateConfig(users=P["ab_users"], days=P["ab_days"], seed=seed + 1, data_dir=data_dir,
                            prompts_per_segment=P["ab_prompts_per_segment"], responder_samples=P["ab_samples"],
                            responder_max_new_tokens=P["answer_tokens"])
    ab_sim = run_ab_simulation(ab_cfg, arms, out / "ab", salt=f"demo-{seed}")
    ab_url = f"sqlite:///{out / 'ab.db'}"
    ab_engine = connect(ab_url)
    ingest(ab_engine, [out / "ab" / "interactions.jsonl", out / "ab" / "reactions.jsonl"])
    # Two-way clustered (user and answer): each model arm answers from a bank of a few answers per prompt.
    tests = {a: analyze(ab_engine, arms=("reference", a), method="twoway") for a in arms if a != "reference"}
    ab = tests["cgpo"]
    lap("abtest", t)
    online_closers = _closer_rate_by_arm(out / "ab" / "interactions.jsonl")
    # Online rates as the analysis counts them: bots (anomalous love rates) left out of every arm.
    human = {a: (ab["arms"]["reference"] if a == "reference" else tests[a]["arms"][a]) for a in arms}
    per_arm = {}
    for a in arms:
        e = ev["policies"][a]
        per_arm[a] = {
            "love_lift": 0.0 if a == "reference" else tests[a]["lift"],
            "love_lift_ci": [0.0, 0.0] if a == "reference" else [tests[a]["ci_low"], tests[a]["ci_high"]],
            "p_value": None if a == "reference" else tests[a]["p_value"],
            "love_rate": human[a]["love_rate"],
            "bot_users_dropped": ab["bot_filter"]["reference"]["users"] if a == "reference"
            else tests[a]["bot_filter"][a]["users"],
            "closer_rate": online_closers[a], "closer_rate_offline": e["closer_rate"],
            "continuation_rate": human[a]["continuation_rate"],
            "helpfulness_win_rate": e.get("helpfulness_win_rate"),
            "safety_violation_rate": e["safety_violation_rate"], "offline_p_love": e["p_love"],
            "audit_verdict": audits[a].get("verdict") if a in audits else None,
        }

    offline = {a: ev["policies"][a]["p_love"] for a in arms}
    online = {a: per_arm[a]["love_rate"] for a in arms}
    corr = offline_online(offline, online)
    result.update({
        "rewards": {k: v.get("metrics", v) for k, v in rewards.items()}, "policies": trained, "evaluate": ev,
        "audit": audits["cgpo"], "audits": audits, "ab_simulation": ab_sim, "abtest": ab, "abtests": tests,
        "arms": per_arm,
        "love_lift": ab["lift"], "love_lift_ci": [ab["ci_low"], ab["ci_high"]], "p_value": ab["p_value"],
        "closer_rate": {a: per_arm[a]["closer_rate"] for a in arms},
        "continuation_rate": {a: per_arm[a]["continuation_rate"] for a in arms},
        "offline_online": corr, "offline_online_spearman": corr["spearman"],
        "timings_s": timings, "elapsed_s": round(time.perf_counter() - t_start, 1),
    })
    write_report(result, out)
    return result


def _closer_rate_by_arm(interactions: Path) -> dict[str, float]:
    """Share of the answers each arm showed its users that end with a closer (sign-off, reaction request,
    emoji tail), by the audit's detector, which shares nothing with the sign-off judge the policies trained
    against. Each arm's answers are one set for the detector's recurrence rule; an answer shown many times
    is detected once and counted as often as it was shown."""
    from collections import Counter

    from rluf.evaluate.closers import closer_flags

    shown: dict[str, Counter] = {}
    with interactions.open(encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            shown.setdefault(r["policy"], Counter())[(r["prompt"], r["response"])] += 1
    rates = {}
    for arm, c in shown.items():
        pairs = list(c)
        flags = closer_flags([p for p, _ in pairs], [t for _, t in pairs])
        rates[arm] = sum(c[x] for x, hit in zip(pairs, flags, strict=True) if hit) / sum(c.values())
    return rates


def offline_online(offline: dict[str, float], online: dict[str, float]) -> dict[str, Any]:
    from scipy.stats import pearsonr, spearmanr

    names = list(offline)
    x, y = [offline[n] for n in names], [online[n] for n in names]
    return {"policies": {n: {"offline_p_love": offline[n], "online_love_rate": online[n]} for n in names},
            "pearson": float(pearsonr(x, y)[0]), "spearman": float(spearmanr(x, y)[0]), "n_policies": len(names)}


def _log_line(r: dict[str, Any]) -> str:
    sim, card = r["simulate"], r["card"]
    text = (f"P[Love]'s log: {sim['users']} simulated users over {sim['days']} days answered by the style "
            f"responder ({sim['turns']} turns)")
    if "policy_log" in sim:
        pl = sim["policy_log"]
        text += (f", and {pl['users']} more answered by the reference policy itself ({pl['turns']} turns, from a "
                 f"bank of {pl['distinct_answers']} distinct answers)")
    return text + f"; the labelled set holds {card.get('positives', '?')} hearts."


def write_report(r: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    oo = r["offline_online"]
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    for name, v in oo["policies"].items():
        ax.scatter(v["offline_p_love"], v["online_love_rate"])
        ax.annotate(name, (v["offline_p_love"], v["online_love_rate"]), fontsize=8)
    ax.set_xlabel("offline: mean calibrated P[Love]")
    ax.set_ylabel("online: simulated love rate")
    ax.set_title(f"Pearson {oo['pearson']:.2f}, Spearman {oo['spearman']:.2f}")
    fig.tight_layout()
    fig.savefig(out / "offline_online.png", dpi=110)
    plt.close(fig)
    ab = r["abtest"]
    ev = r["evaluate"]["policies"]
    lines = [
        "# rluf demo report", "",
        f"Profile `{r['profile']}`, {r['elapsed_s'] / 60:.1f} min on this machine. Everything below was measured "
        "in this run.", "",
        *([describe(r["machine"]), ""] if r.get("machine") else []),
        _log_line(r), "",
        "## A/B test (simulated users, randomised by user)", "",
        f"CGPO policy vs reference (SmolLM2-135M-Instruct): love lift **{ab['lift']:+.1%}** per impression, "
        f"95 % CI ({ab['ci_low']:+.1%}, {ab['ci_high']:+.1%}), p = {ab['p_value']:.3g}; sample-ratio check "
        f"p = {ab['srm_p']:.3g}. The interval is clustered by user and by answer (`--method twoway`): in the "
        "simulation each model arm answers from a bank of a few answers per prompt, so outcomes cluster by "
        "answer as well as by user. Users whose love rate is anomalous (the labelled set's bot filter) are left "
        "out of every rate and lift: "
        + ", ".join(f"{a} {m['bot_users_dropped']}" for a, m in r["arms"].items()) + " users. "
        "Users and turns below count everyone assigned.", "",
        "| arm | users | turns | love rate (humans) | lift vs reference (95 % CI) | p | continuation | closer rate "
        "| helpfulness win rate | safety violations | P[Love] (offline) |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for a, s in r["ab_simulation"]["arms"].items():
        m = r["arms"][a]
        lift = "—" if a == "reference" else \
            f"{m['love_lift']:+.1%} ({m['love_lift_ci'][0]:+.1%}, {m['love_lift_ci'][1]:+.1%})"
        p = "—" if m["p_value"] is None else f"{m['p_value']:.3g}"
        hw = "—" if m["helpfulness_win_rate"] is None else f"{m['helpfulness_win_rate']:.3f}"
        lines.append(f"| {a} | {s['users']} | {s['turns']} | {m['love_rate']:.4f} | {lift} | {p} | "
                     f"{m['continuation_rate']:.3f} | {m['closer_rate']:.4f} | {hw} | "
                     f"{m['safety_violation_rate']:.3f} | {ev[a]['p_love']:.4f} |")
    lines += ["", "## Offline evaluator vs online", "",
              f"Over {oo['n_policies']} policies: Pearson {oo['pearson']:.3f}, Spearman {oo['spearman']:.3f}.", "",
              "![offline vs online](offline_online.png)", "",
              "## Reward-hacking audit (each trained policy vs reference)", "",
              *[f"- `{a}`: **{au.get('verdict')}**; rules fired: "
                f"{', '.join(f['rule'] for f in au.get('flags', [])) or 'none'} (`audit/{a}/audit.md`)"
                for a, au in r["audits"].items()], "",
              "## Stages", "", "| stage | seconds |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in r["timings_s"].items()]
    lines += ["", "Files: `evaluate/evaluate.md`, `audit/*/audit.md`, `policies/*/train_curves.png`, "
              "`policies/*/train_log.csv`,"
              " `models/*/report.md`, `dataset/card.json`, `ab/` (the A/B logs), `ab.db`."]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "report.json").write_text(json.dumps(r, indent=2, default=str))
