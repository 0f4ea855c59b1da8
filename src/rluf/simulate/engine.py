"""The simulated population at work: users chat over several days and react to what they are shown.

Top to bottom: draw the population (segments, heavy-tailed propensity, activity); generate traffic day by
day (conversations continue or stop depending on the answers); turn each shown answer's hidden features
into a love probability (segment tastes + user propensity + one global intercept fitted so the population
loves ~`love_rate` of a reference responder's answers); draw reactions with delays, withdrawals, likes and
dislikes; write DESIGN §3 logs plus the oracle.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from rluf.paths import DEFAULT_DATA_DIR
from rluf.progress import stderr, track
from rluf.simulate.config import SEGMENTS, SimulateConfig
from rluf.simulate.prompts import PromptPools, load_prompt_pools
from rluf.simulate.responders import Responder, StyleResponder, make_responder
from rluf.simulate.scorers import AnswerScorer, Features
from rluf.simulate.taste import content_logit, continue_prob, quality
from rluf.store.validate import ms_to_iso, parse_timestamp

DAY_MS = 86_400_000
BOT_EVERYTHING_P = 0.95


@dataclass
class Population:
    segment: np.ndarray  # segment name per user
    reactive: np.ndarray  # bool: ever reacts at all
    propensity: np.ndarray  # log-odds offset per user
    activity: np.ndarray  # chance of being active on a day
    first_day: np.ndarray  # day the user joins
    bot_everything: np.ndarray  # bool: a bot that hearts every answer


def make_population(cfg: SimulateConfig, rng: np.random.Generator) -> Population:
    names = [s for s in SEGMENTS if cfg.mixture.get(s, 0) > 0]
    shares = np.array([cfg.mixture[s] for s in names], dtype=float)
    # Exact shares (largest remainder), then shuffled: a small population has the mixture it was asked for.
    quota = shares / shares.sum() * cfg.users
    counts = np.floor(quota).astype(int)
    counts[np.argsort(counts - quota)[: cfg.users - counts.sum()]] += 1
    segment = rng.permutation(np.repeat(np.array(names), counts))
    is_bot = segment == "bot"
    reactive = (rng.random(cfg.users) < cfg.reactive_share) | is_bot
    # Heavy right tail: a few reactive users react far more than the typical one.
    propensity = rng.normal(0.0, cfg.propensity_sigma, cfg.users)
    a = 2.0
    activity = rng.beta(a, a * (1 - cfg.daily_active) / cfg.daily_active, cfg.users)
    first_day = np.minimum(rng.geometric(0.5, cfg.users) - 1, cfg.days - 1)
    bot_everything = is_bot & (rng.random(cfg.users) < cfg.bot_love_everything)
    return Population(segment, reactive, propensity, activity, first_day, bot_everything)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _love_probs(intercept: float, turns: list[dict], pop: Population, cfg: SimulateConfig) -> np.ndarray:
    users = np.array([t["_user"] for t in turns], dtype=np.int64)
    content = np.array([t["_content"] for t in turns], dtype=float)
    p = _sigmoid(intercept + pop.propensity[users] + content) * pop.reactive[users]
    bots = pop.segment[users] == "bot"
    p[bots] = np.where(pop.bot_everything[users[bots]], BOT_EVERYTHING_P, cfg.bot_random_rate)
    return p


def _fit_intercept(turns: list[dict], pop: Population, cfg: SimulateConfig) -> float:
    """Global intercept so that the mean love probability over human users' turns equals cfg.love_rate
    (bisection). Bots are left out of the target: they add their own hearts on top, as they would."""
    human = np.array([pop.segment[t["_user"]] != "bot" for t in turns])
    lo, hi = -50.0, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if _love_probs(mid, turns, pop, cfg)[human].mean() < cfg.love_rate:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


class _Traffic:
    """Generates conversations day by day; each step answers all open conversations in one batch (so a
    real model can generate them batched)."""

    def __init__(self, cfg: SimulateConfig, pools: PromptPools, responder: Responder, scorer: AnswerScorer,
                 pop: Population, rng: np.random.Generator):
        self.cfg, self.pools, self.responder, self.scorer, self.pop, self.rng = cfg, pools, responder, scorer, pop, rng
        self.start_ms = parse_timestamp(cfg.start, "start")
        self.n_turns = self.n_convs = 0

    def _prompt(self, segment: str) -> tuple[str, bool]:
        pool_name = "information" if segment == "bot" else segment
        pool = self.pools.pools.get(pool_name) or [p for v in self.pools.pools.values() for p in v]
        return pool[int(self.rng.integers(len(pool)))], segment == "adversarial"

    def day(self, d: int, limit: int | None = None) -> list[dict]:
        cfg, pop, rng = self.cfg, self.pop, self.rng
        active = np.flatnonzero((rng.random(cfg.users) < pop.activity) & (pop.first_day <= d))
        convs = []
        for u in active:
            for _ in range(1 + rng.poisson(max(cfg.conversations_per_day - 1, 0))):
                seg = str(pop.segment[u])
                self.n_convs += 1
                convs.append({"user": int(u), "segment": seg, "id": f"{cfg.id_prefix}c{self.n_convs:07d}",
                              "messages": [], "t": self.start_ms + d * DAY_MS + int(rng.integers(0, DAY_MS))})
        turns: list[dict] = []
        open_convs = convs
        for turn_index in range(cfg.max_turns):
            if not open_convs:
                break
            prompts, harmful = zip(*(self._prompt(c["segment"]) for c in open_convs), strict=True)
            segments = [c["segment"] for c in open_convs]
            arms: list[str | None] = [None] * len(open_convs)
            if hasattr(self.responder, "respond_users"):  # an A/B router: each user's arm answers
                users = [f"{cfg.id_prefix}u{c['user']:06d}" for c in open_convs]
                answers, arms = self.responder.respond_users(users, list(prompts), segments, list(harmful), rng)
            else:
                answers = self.responder.respond(list(prompts), segments, list(harmful), rng)
            still_open = []
            for c, prompt, is_harmful, answer, arm in zip(open_convs, prompts, harmful, answers, arms, strict=True):
                c["messages"] = [*c["messages"], {"role": "user", "content": prompt}]
                f = self.scorer(prompt, answer, is_harmful)
                self.n_turns += 1
                turns.append({
                    "response_id": f"{cfg.id_prefix}r{self.n_turns:08d}", "conversation_id": c["id"],
                    "user_id": f"{cfg.id_prefix}u{c['user']:06d}",
                    "turn_index": turn_index, "created_ms": c["t"], "prompt": prompt, "messages": c["messages"],
                    "response": answer, "_user": c["user"], "_segment": c["segment"], "_features": f,
                    "_content": content_logit(c["segment"], f), "_p_continue": continue_prob(c["segment"], f),
                })
                if arm is not None:
                    turns[-1]["policy"] = arm
                c["messages"] = [*c["messages"], {"role": "assistant", "content": answer}]
                c["t"] += int(rng.integers(30_000, 240_000))
                if rng.random() < turns[-1]["_p_continue"]:
                    still_open.append(c)
            open_convs = still_open
            if limit is not None and len(turns) >= limit:
                break
        return turns


def _calibration_intercept(cfg: SimulateConfig, pools: PromptPools, scorer: AnswerScorer) -> float:
    """The intercept is fitted on the style responder's traffic for this population, not on the run's own
    answers: a better responder then really does get more hearts."""
    stderr.print(f"fitting the love-rate intercept on {cfg.calibration_turns:,} reference turns")
    rng = np.random.default_rng([cfg.seed, 1])
    pop = make_population(cfg, np.random.default_rng([cfg.seed, 0]))
    traffic = _Traffic(cfg, pools, StyleResponder(), scorer, pop, rng)
    turns: list[dict] = []
    d = 0
    while len(turns) < cfg.calibration_turns:
        turns += traffic.day(d % cfg.days, limit=cfg.calibration_turns - len(turns))
        d += 1
    return _fit_intercept(turns, pop, cfg)


def _draw_reactions(turns: list[dict], p_love: np.ndarray, pop: Population, cfg: SimulateConfig,
                    rng: np.random.Generator) -> list[dict]:
    events = []
    mu = math.log(cfg.reaction_delay_minutes)
    for t, p in zip(turns, p_love, strict=True):
        u = t["_user"]
        f: Features = t["_features"]
        delay = int(60_000 * math.exp(rng.normal(mu, cfg.reaction_delay_sigma))) + 1000
        if rng.random() < p:
            at = t["created_ms"] + delay
            events.append({"response_id": t["response_id"], "user_id": t["user_id"], "reaction": "love",
                           "created_ms": at})
            if pop.segment[u] != "bot" and rng.random() < cfg.withdraw_prob:
                back = at + int(60_000 * math.exp(rng.normal(math.log(60), 1.5)))
                events.append({"response_id": t["response_id"], "user_id": t["user_id"], "reaction": "love",
                               "created_ms": back, "removed": True})
            continue
        if not pop.reactive[u] or pop.segment[u] == "bot":
            continue
        if rng.random() < cfg.like_rate * (0.5 + quality(f)):
            events.append({"response_id": t["response_id"], "user_id": t["user_id"], "reaction": "like",
                           "created_ms": t["created_ms"] + delay})
            continue
        harmed = f.unsafe and pop.segment[u] != "adversarial"
        if rng.random() < cfg.dislike_rate * (1 + 3 * (1 - quality(f)) + 4 * harmed):
            events.append({"response_id": t["response_id"], "user_id": t["user_id"], "reaction": "dislike",
                           "created_ms": t["created_ms"] + delay})
    return events


def _write(out_dir: Path, turns: list[dict], events: list[dict], p_love: np.ndarray, policy: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    order = sorted(range(len(turns)), key=lambda i: (turns[i]["created_ms"], turns[i]["response_id"]))
    with open(out_dir / "interactions.jsonl", "wb") as fi, open(out_dir / "oracle.jsonl", "wb") as fo:
        for i in order:
            t = turns[i]
            fi.write(orjson.dumps({
                "response_id": t["response_id"], "conversation_id": t["conversation_id"], "user_id": t["user_id"],
                "turn_index": t["turn_index"], "created_at": ms_to_iso(t["created_ms"]),
                "policy": t.get("policy", policy),
                "prompt": t["prompt"], "messages": t["messages"], "response": t["response"],
                "surface": "web", "locale": "en-US",
            }) + b"\n")
            f: Features = t["_features"]
            fo.write(orjson.dumps({
                "response_id": t["response_id"], "user_id": t["user_id"], "segment": t["_segment"],
                "p_love": round(float(p_love[i]), 6), "content_logit": round(float(t["_content"]), 6),
                "p_continue": round(t["_p_continue"], 6),
                **{k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(f).items()},
            }) + b"\n")
    with open(out_dir / "reactions.jsonl", "wb") as fr:
        for e in sorted(events, key=lambda e: (e["created_ms"], e["response_id"], e.get("removed", False))):
            row = {"response_id": e["response_id"], "user_id": e["user_id"], "reaction": e["reaction"],
                   "created_at": ms_to_iso(e["created_ms"])}
            if e.get("removed"):
                row["removed"] = True
            fr.write(orjson.dumps(row) + b"\n")


def _summary(cfg: SimulateConfig, pools: PromptPools, turns: list[dict], events: list[dict], p_love: np.ndarray,
             intercept: float, out_dir: Path) -> dict[str, Any]:
    n = len(turns)
    loves = [e for e in events if e["reaction"] == "love" and not e.get("removed")]
    loved = {e["response_id"] for e in loves}
    created = {t["response_id"]: t["created_ms"] for t in turns}
    seg = np.array([t["_segment"] for t in turns])
    per_segment = {}
    for s in SEGMENTS:
        idx = np.flatnonzero(seg == s)
        if len(idx):
            n_loved = sum(turns[i]["response_id"] in loved for i in idx)
            per_segment[s] = {"turns": int(len(idx)), "love_rate": round(n_loved / len(idx), 5),
                              "mean_p_love": round(float(p_love[idx].mean()), 5)}
    users_reacting = len({e["user_id"] for e in events})
    y = np.array([t["response_id"] in loved for t in turns], dtype=bool)
    summary = {
        "out": str(out_dir),
        "users": cfg.users, "days": cfg.days, "seed": cfg.seed,
        "turns": n, "conversations": len({t["conversation_id"] for t in turns}),
        "reactions": {k: sum(1 for e in events if e["reaction"] == k and not e.get("removed"))
                      for k in ("love", "like", "dislike")},
        "withdrawn": sum(1 for e in events if e.get("removed")),
        "love_rate": round(len(loved) / n, 5) if n else 0.0,
        "human_love_rate": round(sum(t["response_id"] in loved for t in turns if t["_segment"] != "bot")
                                 / max(1, sum(t["_segment"] != "bot" for t in turns)), 5),
        "target_love_rate": cfg.love_rate,
        "mean_p_love": round(float(p_love.mean()), 5) if n else 0.0,
        "late_loves_after_24h": sum(1 for e in loves if e["created_ms"] - created[e["response_id"]] > DAY_MS),
        "users_who_never_react": cfg.users - users_reacting,
        "per_segment": per_segment,
        "intercept": round(intercept, 4),
        # What any model could reach on this log's hearts: the full oracle knows each user; a text model can at
        # best learn the content logit (the oracle without the user's terms).
        "ceilings": ceilings(y, p_love, np.array([t["_content"] for t in turns]), seg != "bot"),
        "prompt_sources": pools.sources,
        "real_data": pools.real_data,
    }
    if not pools.real_data:
        summary["note"] = "real data not found: built-in prompts were used (pass --data-dir)"
    return summary


def ceilings(loved: np.ndarray, p_love: np.ndarray, content: np.ndarray, human: np.ndarray) -> dict[str, float | None]:
    """AUROC of the oracle's probability and of the text-only content logit against the drawn hearts, on the
    human users' turns (a labelled set's rate and burst filters remove the bots, whose hearts no text
    explains) and, as `*_all_turns`, on every turn."""
    from sklearn.metrics import roc_auc_score

    def auc(y: np.ndarray, s: np.ndarray) -> float | None:
        return round(float(roc_auc_score(y, s)), 4) if 0 < y.sum() < len(y) else None

    return {"auroc_oracle": auc(loved[human], p_love[human]), "auroc_text_ceiling": auc(loved[human], content[human]),
            "auroc_oracle_all_turns": auc(loved, p_love), "auroc_text_ceiling_all_turns": auc(loved, content)}


def _setup(cfg: SimulateConfig) -> tuple[PromptPools, AnswerScorer]:
    data_dir = cfg.data_dir if cfg.data_dir is not None else DEFAULT_DATA_DIR
    pools = load_prompt_pools(data_dir)
    if not pools.real_data:
        stderr.print(f"[yellow]{data_dir}: real data not found, using rluf's built-in prompts[/yellow]")
    return pools, AnswerScorer()


def _trim_pools(pools: PromptPools, n: int, seed: int) -> PromptPools:
    rng = np.random.default_rng([seed, 5])
    kept = {k: [v[i] for i in sorted(rng.choice(len(v), size=min(n, len(v)), replace=False))]
            for k, v in pools.pools.items()}
    return PromptPools(pools=kept, sources=pools.sources, real_data=pools.real_data)


def world_responder(cfg: SimulateConfig, pools: PromptPools, split: str = "train") -> Responder:
    """The `world` responder on one side of the prompt split (`train`: the traffic a reward model learns from;
    `test`: the held-out prompts), its reference answers from `cfg.reference_policy`."""
    from rluf.simulate.deployments import BankResponder, alpacaeval_bank, hh_bank, reference_bank
    from rluf.simulate.prompts import split_prompts

    side = dict(zip(("train", "test"), split_prompts(pools), strict=True))[split]
    prompts = {p for v in side.pools.values() for p in v}
    data_dir = cfg.data_dir if cfg.data_dir is not None else DEFAULT_DATA_DIR
    banks = {"reference": reference_bank(side, cfg.reference_policy, cfg.responder_samples,
                                         cfg.responder_max_new_tokens)}
    if pools.real_data:
        banks["alpacaeval"] = alpacaeval_bank(data_dir, prompts)
        banks["hh-rlhf"] = hh_bank(data_dir, prompts)
    banks = {k: b for k, b in banks.items() if b}
    from rluf.simulate.deployments import DEFAULT_SHARES

    shares = {k: v for k, v in DEFAULT_SHARES.items() if k in banks or k == "bait"}
    return BankResponder(banks, side, shares=shares, name="world")


def run_simulation(cfg: SimulateConfig, out_dir: Path, responder: Responder | None = None) -> dict[str, Any]:
    """Simulate cfg.users users over cfg.days days; writes interactions / reactions / oracle JSONL.
    `responder` overrides cfg.responder (the A/B simulation passes its arm router)."""
    out_dir = Path(out_dir)
    pools, scorer = _setup(cfg)
    if responder is None and cfg.responder == "world":
        responder = world_responder(cfg, pools)
    elif responder is None:
        responder = make_responder(cfg.responder, cfg.responder_samples, cfg.responder_max_new_tokens, cfg.seed)
    policy = cfg.policy_name or responder.name
    intercept = _calibration_intercept(cfg, pools, scorer)
    if getattr(responder, "pools", None) is not None:  # a bank of answers: users ask what it can answer
        pools = PromptPools(pools=responder.pools, sources=pools.sources, real_data=pools.real_data)
    if cfg.prompts_per_segment:  # after the intercept: trimming must not change how users react
        pools = _trim_pools(pools, cfg.prompts_per_segment, cfg.seed)
        if hasattr(responder, "prewarm"):  # a model answers: generate its answers for the bounded pool at once
            responder.prewarm([p for v in pools.pools.values() for p in v])
    pop = make_population(cfg, np.random.default_rng([cfg.seed, 0]))
    traffic = _Traffic(cfg, pools, responder, scorer, pop, np.random.default_rng([cfg.seed, 2]))
    turns: list[dict] = []
    for d in track(range(cfg.days), "simulate days"):
        turns += traffic.day(d)
    p_love = _love_probs(intercept, turns, pop, cfg) if turns else np.zeros(0)
    events = _draw_reactions(turns, p_love, pop, cfg, np.random.default_rng([cfg.seed, 3]))
    # The log is exported at the end of the last day, as in production: reactions that would come later are
    # not in it yet (so the last day's turns still have open attribution windows).
    horizon = parse_timestamp(cfg.start, "start") + cfg.days * DAY_MS
    cut = [e for e in events if e["created_ms"] < horizon]
    _write(out_dir, turns, cut, p_love, policy)
    out = _summary(cfg, pools, turns, cut, p_love, intercept, out_dir)
    out["reactions_after_export"] = len(events) - len(cut)
    if any("policy" in t for t in turns):
        out["arms"] = _arm_summary(turns, cut, p_love)
    return out


def _arm_summary(turns: list[dict], events: list[dict], p_love: np.ndarray) -> dict[str, Any]:
    """Per A/B arm: users, turns, love rate per impression, mean oracle P[love], share of turns followed by
    another turn in the same conversation. A quick look; `rluf abtest analyze` does the statistics."""
    loved = {e["response_id"] for e in events if e["reaction"] == "love" and not e.get("removed")}
    next_turn = {(t["conversation_id"], t["turn_index"]) for t in turns}
    out = {}
    for arm in sorted({t["policy"] for t in turns}):
        idx = [i for i, t in enumerate(turns) if t["policy"] == arm]
        out[arm] = {
            "users": len({turns[i]["user_id"] for i in idx}), "turns": len(idx),
            "love_rate": round(sum(turns[i]["response_id"] in loved for i in idx) / len(idx), 5),
            "mean_p_love": round(float(p_love[idx].mean()), 5),
            **ceilings(np.array([turns[i]["response_id"] in loved for i in idx]), p_love[idx],
                       np.array([turns[i]["_content"] for i in idx]),
                       np.array([turns[i]["_segment"] != "bot" for i in idx])),
            "continuation_rate": round(sum((turns[i]["conversation_id"], turns[i]["turn_index"] + 1) in next_turn
                                           for i in idx) / len(idx), 5),
        }
    return out


def _read_rows(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    rows = []
    with open(path, "rb") as f:
        for i, line in enumerate(f, start=1):
            if line.strip():
                row = orjson.loads(line)
                if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in ("prompt", "response")):
                    raise ValueError(f"{path}:{i}: expected an object with string 'prompt' and 'response'")
                rows.append(row)
    return rows


def react_to_file(cfg: SimulateConfig, rows_path: Path, out_dir: Path) -> dict[str, Any]:
    """The population reacts to given answers (rows with prompt, response, policy; optional segment,
    user_id, response_id) — how a policy is measured "online". Same three output files."""
    out_dir = Path(out_dir)
    pools, scorer = _setup(cfg)
    rows = _read_rows(Path(rows_path))
    if not rows:
        raise ValueError(f"{rows_path}: no rows")
    intercept = _calibration_intercept(cfg, pools, scorer)
    pop = make_population(cfg, np.random.default_rng([cfg.seed, 0]))
    rng = np.random.default_rng([cfg.seed, 4])
    source = {p: s for s, ps in pools.pools.items() for p in ps}
    by_segment = {s: np.flatnonzero(pop.segment == s) for s in SEGMENTS}
    start = parse_timestamp(cfg.start, "start")
    turns = []
    for i, r in enumerate(track(rows, "users react")):
        seg = r.get("segment") or source.get(r["prompt"]) or "information"
        if seg not in SEGMENTS:
            raise ValueError(f"row {i + 1}: unknown segment {seg!r}; expected one of {', '.join(SEGMENTS)}")
        candidates = by_segment[seg] if len(by_segment[seg]) else np.arange(cfg.users)
        # A given user_id is always the same simulated person (same taste, same propensity) — so two policies
        # answering the same users are compared on the same people, as in an A/B test.
        pick = zlib.crc32(str(r["user_id"]).encode()) if r.get("user_id") else int(rng.integers(len(candidates)))
        u = int(candidates[pick % len(candidates)])
        f = scorer(r["prompt"], r["response"], seg == "adversarial")
        turns.append({
            "response_id": r.get("response_id") or f"r{i + 1:08d}",
            "conversation_id": r.get("conversation_id") or f"c{i + 1:07d}",
            "user_id": r.get("user_id") or f"u{u:06d}", "turn_index": 0,
            "created_ms": start + int(rng.integers(0, cfg.days * DAY_MS)), "prompt": r["prompt"],
            "messages": [{"role": "user", "content": r["prompt"]}], "response": r["response"],
            "policy": r.get("policy") or cfg.policy_name or "external", "_user": u, "_segment": seg,
            "_features": f, "_content": content_logit(seg, f), "_p_continue": continue_prob(seg, f),
        })
    p_love = _love_probs(intercept, turns, pop, cfg)
    events = _draw_reactions(turns, p_love, pop, cfg, np.random.default_rng([cfg.seed, 5]))
    _write(out_dir, turns, events, p_love, cfg.policy_name or "external")
    out = _summary(cfg, pools, turns, events, p_love, intercept, out_dir)
    out["input"] = str(rows_path)
    out["mean_p_continue"] = round(float(np.mean([t["_p_continue"] for t in turns])), 5)
    return out


__all__ = ["content_logit", "continue_prob", "make_population", "react_to_file", "run_simulation"]
