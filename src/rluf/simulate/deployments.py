"""Real text for the simulated deployments: who answered the users, with which words.

A simulated log is only as informative as the answers in it. The world's traffic comes from several
deployments, each a bank of real answers per prompt:

- `reference`: the reference policy (SmolLM2 by default) answering every prompt of the pools several times,
  generated once and cached on disk by content (`AnswerCache`);
- `alpacaeval:<model>`: earlier deployments — the public AlpacaEval models' answers to the instructions in the
  pools (../shared/data/alpacaeval);
- `hh-rlhf`: earlier answers to red-team openers, the first assistant turn of HH-RLHF conversations (its chosen
  and rejected continuations where the conversation is a single exchange);
- `bait`: the template style responder with closers on every answer: an explicitly named love-bait arm.

`BankResponder` serves the banks to the simulated users: per turn it picks a deployment (by its traffic share,
among those that answered the prompt) and one of that deployment's answers, and logs the deployment's name
as the turn's `policy`. No deployment repeats a handful of answers to thousands of users: every reference
answer is one of `samples` draws for its own prompt.
"""

from __future__ import annotations

import gzip
import zlib
from collections import defaultdict
from pathlib import Path

import numpy as np
import orjson

from rluf.simulate.prompts import PromptPools, _hh_first_turn
from rluf.simulate.responders import StyleResponder

DEFAULT_SHARES = {"reference": 0.45, "alpacaeval": 0.3, "hh-rlhf": 0.15, "bait": 0.1}
"""Traffic share per deployment family (renormalised over the families that answered a prompt)."""
ALPACAEVAL_MODELS = 6
"""AlpacaEval models kept as earlier deployments, spread over the win-rate range (weak to strong)."""
BAIT_CLOSER = 1.0
BAIT_SAMPLES = 4


Bank = dict[str, list[tuple[str, str]]]  # prompt -> [(policy, answer), ...]


def _gz_jsonl(path: Path):
    with gzip.open(path, "rb") as f:
        for line in f:
            if line.strip():
                yield orjson.loads(line)


def alpacaeval_bank(data_dir: Path, prompts: set[str], models: int = ALPACAEVAL_MODELS) -> Bank:
    """The answers of `models` AlpacaEval models (evenly spaced by win rate) to the instructions in `prompts`."""
    d = Path(data_dir) / "alpacaeval"
    if not (d / "judgments.jsonl.gz").exists():
        return {}
    import csv

    with open(d / "models.csv", newline="") as f:
        rates = sorted((float(r["win_rate_from_rows"]), r["model"]) for r in csv.DictReader(f))
    keep = {rates[int(i)][1] for i in np.linspace(0, len(rates) - 1, min(models, len(rates)))}
    text = {r["instruction_id"]: r["instruction"].strip() for r in _gz_jsonl(d / "instructions.jsonl.gz")}
    bank: Bank = defaultdict(list)
    for r in _gz_jsonl(d / "judgments.jsonl.gz"):
        p = text.get(r["instruction_id"])
        if p in prompts and r["model"] in keep and r.get("output"):
            bank[p].append((f"alpacaeval:{r['model']}", r["output"].strip()))
    return dict(bank)


def _first_answer(transcript: str) -> tuple[str, bool]:
    """(first assistant answer, whether the conversation is a single exchange)."""
    parts = transcript.split("\n\nAssistant:")
    if len(parts) < 2:
        return "", False
    answer = parts[1].split("\n\nHuman:")[0].strip()
    return answer, len(parts) == 2


def hh_bank(data_dir: Path, prompts: set[str]) -> Bank:
    """First assistant answers of HH-RLHF red-team conversations whose opener is in `prompts`."""
    path = Path(data_dir) / "hh_rlhf" / "harmless-base-test.jsonl.gz"
    if not path.exists():
        return {}
    bank: Bank = defaultdict(list)
    for r in _gz_jsonl(path):
        p = _hh_first_turn(r.get("chosen", ""))
        if p not in prompts:
            continue
        seen = {a for _, a in bank[p]}
        for side in ("chosen", "rejected"):
            answer, single = _first_answer(r.get(side, ""))
            if answer and answer not in seen and (single or side == "chosen"):
                bank[p].append(("hh-rlhf", answer))
                seen.add(answer)
    return {p: v for p, v in bank.items() if v}


def reference_bank(pools: PromptPools, policy: str | None = None, samples: int = 4, max_new_tokens: int = 96,
                   cache_dir: Path | None = None, generator=None) -> Bank:
    """`samples` answers of the reference policy to every prompt of the pools (from the cache where there)."""
    from rluf.policy.generate import SamplingConfig
    from rluf.simulate.answer_cache import AnswerCache

    prompts = [p for v in pools.pools.values() for p in v]
    answers = AnswerCache(cache_dir).generate(policy, prompts, n=samples,
                                              sampling=SamplingConfig(max_new_tokens=max_new_tokens, temperature=0.7),
                                              progress="reference answers", generator=generator)
    return {p: [("reference", a) for a in answers[p]] for p in prompts}


class BankResponder:
    """Answers from banks of real answers; the `bait` family (if given a share) is the style responder with a
    closer on every answer. Users only ask prompts some deployment answered (`pools`)."""

    def __init__(self, banks: dict[str, Bank], pools: PromptPools, shares: dict[str, float] | None = None,
                 name: str = "world"):
        self.banks, self.name = banks, name
        self.shares = {k: v for k, v in (shares or DEFAULT_SHARES).items() if v > 0}
        unknown = set(self.shares) - set(banks) - {"bait"}
        if unknown:
            raise ValueError(f"shares for deployments without a bank: {sorted(unknown)}")
        answered = {p for b in banks.values() for p in b}
        if "bait" in self.shares:  # the template responder answers anything
            answered = {p for v in pools.pools.values() for p in v}
        self.pools = {s: [p for p in v if p in answered] for s, v in pools.pools.items()}
        self.bait = StyleResponder(p_closer=BAIT_CLOSER)
        self.bait_bank: dict[str, list[str]] = {}

    def respond_users(self, users, prompts, segments, harmful, rng):
        answers, policies = [], []
        for p, seg, h in zip(prompts, segments, harmful, strict=True):
            families = [f for f in self.shares if f == "bait" or p in self.banks.get(f, {})]
            w = np.array([self.shares[f] for f in families])
            family = families[int(rng.choice(len(families), p=w / w.sum()))]
            if family == "bait":
                # Like any deployment, the bait arm has a few answers per prompt (drawn once, seeded by the
                # prompt), not a fresh one per user: its evidence aggregates as the others' does.
                if p not in self.bait_bank:
                    own = np.random.default_rng(zlib.crc32(p.encode()))
                    self.bait_bank[p] = [self.bait.respond([p], [seg], [h], own)[0] for _ in range(BAIT_SAMPLES)]
                answers.append(self.bait_bank[p][int(rng.integers(BAIT_SAMPLES))])
                policies.append("bait")
                continue
            options = self.banks[family][p]
            policy, answer = options[int(rng.integers(len(options)))]
            answers.append(answer)
            policies.append(policy)
        return answers, policies

    def respond(self, prompts, segments, harmful, rng):
        return self.respond_users([None] * len(prompts), prompts, segments, harmful, rng)[0]

    def describe(self) -> dict:
        return {"shares": self.shares,
                "banks": {k: {"prompts": len(b), "answers": sum(len(v) for v in b.values())}
                          for k, b in self.banks.items()}}
