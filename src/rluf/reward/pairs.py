"""Preference pairs (prompt, chosen, rejected) for the pairwise reward models of the other objectives.

- helpfulness from AlpacaEval: each model's answer against the GPT-4-Turbo reference for the same
  instruction; preference > 1.5 means the model's answer is chosen, else the reference is; group = model.
  Split by model (`split_by_model`), so no model is on two sides;
- safety from HH-RLHF harmless-base: the published chosen / rejected answers; group = pair id.

Why the AlpacaEval pairs carry more than the trainer reads: most models lose to the reference almost always
(the median model wins 5 % of its pairs), so on a held-out side of such models "always prefer the reference"
and "prefer the longer answer" are already right ~95 % of the time. A pairwise accuracy means something only
beside those two baselines, which need `chosen_is_reference` and the two answers' lengths
(see rluf.reward.metrics.pairwise_baselines).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa

PAIR_COLUMNS = ("prompt", "chosen", "rejected")
SIDES = ("train", "validation", "test")


def alpacaeval_pairs(data_dir: Path) -> pa.Table:
    """prompt, chosen, rejected, group (model), plus instruction_id (the cluster for intervals: every model
    answers the same instructions), preference, chosen_is_reference and chosen_length / rejected_length
    (characters). The reference is chosen exactly when it won the judgment (a 1.5 tie counts as its win, as
    in the loaders), so which side it sits on follows the data, not a position. Answers identical to the
    reference are dropped: they carry no preference."""
    from rluf.data import load_alpacaeval, load_alpacaeval_references

    t = load_alpacaeval(data_dir).to_pylist()
    refs = load_alpacaeval_references(data_dir)
    rows = []
    for r in t:
        ref = refs.get(r["instruction_id"])
        if ref is None or ref == r["response"]:
            continue
        won = r["label"] == 1
        chosen, rejected = (r["response"], ref) if won else (ref, r["response"])
        rows.append({"prompt": r["prompt"], "chosen": chosen, "rejected": rejected, "group": r["group"],
                     "instruction_id": r["instruction_id"], "preference": r["preference"],
                     "chosen_is_reference": not won, "chosen_length": len(chosen),
                     "rejected_length": len(rejected)})
    return pa.Table.from_pylist(rows)


def model_win_rates(pairs: pa.Table) -> dict[str, float]:
    """group → share of its pairs where the model's answer beat the reference."""
    cols = pairs.select(["group", "chosen_is_reference"]).to_pydict()
    n: dict[str, int] = defaultdict(int)
    won: dict[str, int] = defaultdict(int)
    for g, ref in zip(cols["group"], cols["chosen_is_reference"], strict=True):
        n[g] += 1
        won[g] += not ref
    return {g: won[g] / n[g] for g in n}


def assign_models(win_rates: dict[str, float], every: int = 6) -> dict[str, str]:
    """model → train / validation / test, deterministic.

    Models sorted by win rate (strongest first, ties by name) are dealt in blocks of `every`: the first two of
    each block go to validation and test, the rest to train; which held-out side gets the stronger of the two
    alternates from block to block, so neither side is systematically the stronger. Each held-out side then
    holds one model from every band of win rates, strong to weak. Why not at random: AlpacaEval has only a
    few models that often beat the reference, and a draw that left a held-out side without one gives a side
    where "the reference wins" is the right answer ~97 % of the time. 21 models, every=6: 13 / 4 / 4.
    """
    if every < 3:
        raise ValueError(f"every={every}: a block needs room for validation, test and at least one train model")
    ranked = sorted(win_rates, key=lambda m: (-win_rates[m], m))
    side = {}
    for i, m in enumerate(ranked):
        block, pos = divmod(i, every)
        held = ("validation", "test") if block % 2 == 0 else ("test", "validation")
        side[m] = held[pos] if pos < 2 else "train"
    return side


def split_by_model(pairs: pa.Table, every: int = 6, seed: int = 0) -> tuple[dict[str, pa.Table], dict[str, str]]:
    """AlpacaEval pairs → ({train, validation, test: table}, {model: side}); see `assign_models`.

    Each side's rows are in a seeded random order, so a prefix of a side (a capped validation set) is a sample
    of all its models rather than the first model's pairs."""
    side = assign_models(model_win_rates(pairs), every)
    groups = np.asarray(pairs["group"].to_pylist(), dtype=object)
    rng = np.random.default_rng(seed)
    parts = {}
    for k in SIDES:
        idx = np.flatnonzero(np.array([side[g] == k for g in groups], dtype=bool))
        parts[k] = pairs.take(rng.permutation(idx))
    return parts, side


def hh_pairs(data_dir: Path) -> pa.Table:
    from rluf.data import load_hh_harmless

    by_pair: dict[str, dict] = {}
    for r in load_hh_harmless(data_dir).to_pylist():
        d = by_pair.setdefault(r["group"], {"prompt": r["prompt"], "group": r["group"]})
        d["chosen" if r["label"] == 1 else "rejected"] = r["response"]
    return pa.Table.from_pylist([d for d in by_pair.values() if "chosen" in d and "rejected" in d])
