"""`rluf evaluate`: the offline evaluator — several policies on one fixed prompt set per task, scored by the
reward models and the judges, before any user sees them.

Per policy: mean calibrated P[Love] (the predicted love rate per impression) with a 95 % bootstrap
interval over prompts, helpfulness win rate against the reference policy (the pairwise helpfulness model
prefers the policy's answer to the reference's on the same prompt) with a Wilson interval, the
safety-violation rate on red-team prompts (`rluf.evaluate.safety`'s detector, with a Wilson interval; beside
it the safety model's own rate when it has a threshold fitted on held-out HH-RLHF pairs), each judge's
violation rate, the closer rate (chat answers ending
with a sign-off, reaction request or emoji tail, by `rluf.evaluate.closers` — a detector independent of the
judges, so a closer the sign-off judge misses still counts) and length statistics. Writes `evaluate.json`,
`evaluate.md`, PNG plots, and every answer with its scores under `answers/NAME.jsonl` (the input of
`rluf audit`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from rluf.progress import stderr

CHAT_JUDGES = ("signoff", "refusal", "repetition", "length", "instructions")


def bootstrap_ci(x: np.ndarray, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap of the mean (prompts are the resampling unit)."""
    from scipy.stats import bootstrap

    if len(x) < 2 or np.all(x == x[0]):
        return float(np.mean(x)), float(np.mean(x))
    res = bootstrap((x,), np.mean, n_resamples=n_boot, confidence_level=level, method="percentile",
                    random_state=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def wilson_ci(wins: float, n: int, level: float = 0.95) -> tuple[float, float]:
    from statsmodels.stats.proportion import proportion_confint

    lo, hi = proportion_confint(wins, n, alpha=1 - level, method="wilson")
    return float(lo), float(hi)


def evaluation_prompts(data_dir: Path | None, n_chat: int = 64, n_safety: int = 32, seed: int = 0
                       ) -> tuple[list[str], list[str], dict[str, str]]:
    """The fixed prompt set: (prompts, task per prompt — chat or safety, where each set came from). A seed
    apart from training's, so the evaluator's prompts are not the ones a policy was trained on first."""
    from rluf.policy.prompts import load_prompts

    chat, chat_src = load_prompts("chat", data_dir, seed=seed + 101, limit=n_chat)
    unsafe, unsafe_src = load_prompts("adversarial", data_dir, seed=seed + 101, limit=n_safety)
    return chat + unsafe, ["chat"] * len(chat) + ["safety"] * len(unsafe), {"chat": chat_src, "safety": unsafe_src}


def evaluate_policies(policies: dict[str, str | None], out: Path, love_model: str, helpfulness_model: str | None,
                      safety_model: str | None, reference: str | None = None, n_chat: int = 64, n_safety: int = 32,
                      max_new_tokens: int = 96, temperature: float = 0.7, seed: int = 0,
                      data_dir: Path | None = None, answers: dict[str, Path] | None = None) -> dict[str, Any]:
    """`policies`: name → policy folder (None = default policy). `answers`: name → a JSONL of (prompt,
    response) rows to evaluate instead of generating (e.g. logged answers)."""
    from rluf.evaluate.closers import closer_flags
    from rluf.evaluate.safety import THRESHOLD_FILE, load_threshold, safety_violation, summarize_violations
    from rluf.policy.generate import PolicyGenerator, SamplingConfig
    from rluf.policy.judges import build_judge
    from rluf.reward.model import RewardModel

    out = Path(out)
    (out / "answers").mkdir(parents=True, exist_ok=True)
    names = list(policies) + [n for n in (answers or {}) if n not in policies]
    if not names:
        raise ValueError("nothing to evaluate: give at least one --policy NAME=DIR")
    reference = reference or names[0]
    if reference not in names:
        raise ValueError(f"--reference {reference!r} is not one of the policies {names}")
    prompts, task, sources = evaluation_prompts(data_dir, n_chat, n_safety, seed)

    texts: dict[str, list[str]] = {}
    for name in names:
        if answers and name in answers:
            rows = [json.loads(x) for x in Path(answers[name]).read_text(encoding="utf-8").splitlines() if x.strip()]
            by_prompt = {r["prompt"]: r["response"] for r in rows}
            missing = [p for p in prompts if p not in by_prompt]
            if missing:
                raise ValueError(f"{answers[name]}: no answer for {len(missing)} of the evaluation prompts, "
                                 f"e.g. {missing[0][:80]!r}")
            texts[name] = [by_prompt[p] for p in prompts]
            continue
        stderr.print(f"evaluate: {name} answers {len(prompts)} prompts")
        gen = PolicyGenerator.load(policies[name])
        texts[name] = [a[0] for a in gen.generate(prompts, n=1, seed=seed, progress=f"generate {name}",
                                                  sampling=SamplingConfig(max_new_tokens, temperature))]
        del gen

    love = RewardModel.load(love_model)
    helpful = RewardModel.load(helpfulness_model) if helpfulness_model else None
    safety = RewardModel.load(safety_model) if safety_model else None
    judges = [build_judge(j) for j in CHAT_JUDGES]
    safety_threshold = None
    if safety_model and (Path(safety_model) / THRESHOLD_FILE).is_file():
        safety_threshold = load_threshold(safety_model)
    ci, si = [i for i, t in enumerate(task) if t == "chat"], [i for i, t in enumerate(task) if t == "safety"]
    ref_help = helpful.logits(prompts, texts[reference]) if helpful else None
    ref_safe = safety.logits([prompts[i] for i in si], [texts[reference][i] for i in si]) if safety else None

    table: dict[str, dict[str, Any]] = {}
    for name in names:
        a = texts[name]
        p_love = love.score([prompts[i] for i in ci], [a[i] for i in ci])
        row: dict[str, Any] = {"p_love": float(p_love.mean())}
        row["p_love_ci"] = list(bootstrap_ci(p_love, seed=seed))
        help_z = None
        if helpful is not None:
            help_z = helpful.logits(prompts, a) - ref_help
            wins = float(np.sum(help_z[ci] > 0) + 0.5 * np.sum(help_z[ci] == 0))
            row["helpfulness_win_rate"] = wins / len(ci)
            row["helpfulness_win_rate_ci"] = list(wilson_ci(wins, len(ci)))
        # Safety by instruments that share nothing with the simulator or the training judges: the evaluation
        # detector (rluf.evaluate.safety) and, where the safety model has a threshold fitted on held-out
        # HH-RLHF pairs, the model below it — each rate on its own (the model alone is a weak classifier).
        verdicts = safety_violation([prompts[i] for i in si], [a[i] for i in si],
                                    safety if safety is not None and safety_threshold is not None else None,
                                    safety_threshold)
        rates = summarize_violations(verdicts)
        row["safety_violation_rate"] = rates["detector"]["rate"] if si else 0.0
        row["safety_violation_rate_ci"] = [rates["detector"]["ci_low"], rates["detector"]["ci_high"]] if si else None
        if rates.get("reward_model"):
            row["safety_model_violation_rate"] = rates["reward_model"]["rate"]
        if safety is not None and si:
            z = safety.logits([prompts[i] for i in si], [a[i] for i in si]) - ref_safe
            row["safety_vs_reference"] = float(np.mean(1 / (1 + np.exp(-z))))
        for j in judges:
            row[f"violation_{j.name}"] = float(np.mean([v.violated for v in j([prompts[i] for i in ci],
                                                                                  [a[i] for i in ci])]))
        # Over this policy's chat answers as one set: the detector's recurrence rule needs the whole set.
        flags = closer_flags([prompts[i] for i in ci], [a[i] for i in ci])
        row["closer_rate"] = float(np.mean(flags)) if flags else 0.0
        words = np.array([len(x.split()) for x in a])
        row["length_words_mean"], row["length_words_median"] = float(words.mean()), float(np.median(words))
        table[name] = row
        with (out / "answers" / f"{name}.jsonl").open("w", encoding="utf-8") as f:
            for k, (p, t) in enumerate(zip(prompts, a, strict=True)):
                r = {"prompt": p, "response": t, "task": task[k], "policy": name}
                if task[k] == "chat":
                    r["p_love"] = round(float(p_love[ci.index(k)]), 6)
                if help_z is not None:
                    r["helpfulness"] = round(float(help_z[k]), 6)
                f.write(json.dumps(r, ensure_ascii=False) + "\n")

    result = {"reference": reference, "policies": table, "prompts": {"chat": len(ci), "safety": len(si)},
              "prompt_sources": sources,
              "models": {"love": love_model, "helpfulness": helpfulness_model, "safety": safety_model},
              "out": str(out)}
    (out / "evaluate.json").write_text(json.dumps(result, indent=2))
    _report(result, out)
    return result


def _report(result: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = result["policies"]
    names = list(t)
    lines = ["# Offline evaluation", "",
             f"Reference policy: `{result['reference']}`. {result['prompts']['chat']} chat prompts "
             f"({result['prompt_sources']['chat']}); {result['prompts']['safety']} red-team prompts "
             f"({result['prompt_sources']['safety']}).", "",
             "| policy | P[Love] (95 % CI) | helpfulness win rate vs reference | safety violations | closer rate "
             "| judge violations (signoff / refusal / repetition / length / instructions) | mean words |",
             "|---|---|---|---:|---:|---|---:|"]
    for n in names:
        r = t[n]
        hw = (f"{r['helpfulness_win_rate']:.3f} ({r['helpfulness_win_rate_ci'][0]:.3f}–"
              f"{r['helpfulness_win_rate_ci'][1]:.3f})") if "helpfulness_win_rate" in r else "–"
        jv = " / ".join(f"{r[f'violation_{j}']:.3f}" for j in CHAT_JUDGES)
        lines.append(f"| {n} | {r['p_love']:.4f} ({r['p_love_ci'][0]:.4f}–{r['p_love_ci'][1]:.4f}) | {hw} | "
                     f"{r['safety_violation_rate']:.3f} | {r['closer_rate']:.3f} | {jv} | "
                     f"{r['length_words_mean']:.1f} |")
    lines += ["", "Closer rate: the share of chat answers that end with a sign-off, a reaction request or an emoji "
              "tail, found by `rluf.evaluate.closers` from the form of the last sentences; it shares nothing with "
              "the sign-off judge, whose own violation rate is in the judges column.", "",
              "![P[Love] per policy](p_love.png)"]
    (out / "evaluate.md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(max(4, 1.3 * len(names)), 3.2))
    m = [t[n]["p_love"] for n in names]
    err = np.array([[t[n]["p_love"] - t[n]["p_love_ci"][0], t[n]["p_love_ci"][1] - t[n]["p_love"]] for n in names]).T
    ax.bar(names, m, yerr=err, capsize=4, color="#c44")
    ax.set_ylabel("mean calibrated P[Love]")
    ax.set_title("offline evaluator: predicted love rate")
    fig.tight_layout()
    fig.savefig(out / "p_love.png", dpi=110)
    plt.close(fig)
