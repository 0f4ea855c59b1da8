"""Preference pairs (prompt, chosen, rejected) for the pairwise reward models of the other objectives.

- helpfulness from AlpacaEval: each model's answer against the GPT-4-Turbo reference for the same
  instruction; preference > 1.5 means the model's answer is chosen, else the reference is; group = model
  (split by model so no model is on both sides);
- safety from HH-RLHF harmless-base: the published chosen / rejected answers; group = pair id.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

PAIR_COLUMNS = ("prompt", "chosen", "rejected")


def alpacaeval_pairs(data_dir: Path) -> pa.Table:
    from rluf.data import load_alpacaeval, load_alpacaeval_references

    t = load_alpacaeval(data_dir).to_pylist()
    refs = load_alpacaeval_references(data_dir)
    rows = []
    for r in t:
        ref = refs.get(r["instruction_id"])
        if ref is None or ref == r["response"]:
            continue
        won = r["label"] == 1
        rows.append({"prompt": r["prompt"], "chosen": r["response"] if won else ref,
                     "rejected": ref if won else r["response"], "group": r["group"]})
    return pa.Table.from_pylist(rows)


def hh_pairs(data_dir: Path) -> pa.Table:
    from rluf.data import load_hh_harmless

    by_pair: dict[str, dict] = {}
    for r in load_hh_harmless(data_dir).to_pylist():
        d = by_pair.setdefault(r["group"], {"prompt": r["prompt"], "group": r["group"]})
        d["chosen" if r["label"] == 1 else "rejected"] = r["response"]
    return pa.Table.from_pylist([d for d in by_pair.values() if "chosen" in d and "rejected" in d])
