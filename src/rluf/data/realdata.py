"""Loaders that turn the real data in ../shared/data into judged responses (prompt, response, label, group).

- AlpacaEval: 21 models' answers to 805 instructions, each judged against a GPT-4-Turbo reference;
  label = preference > 1.5 (the model's answer won), group = model.
- HH-RLHF harmless-base: human preference pairs on red-team conversations; each pair gives two rows,
  chosen (label 1) and rejected (label 0), group = pair id.

Both stream the gzip JSONL with pyarrow-free plain Python (the files are a few MB) and return Arrow tables.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

ALPACA = "alpacaeval"
HH_FILE = Path("hh_rlhf") / "harmless-base-test.jsonl.gz"
HUMAN, ASSISTANT = "\n\nHuman: ", "\n\nAssistant: "


def _jsonl_gz(path: Path) -> Iterator[dict[str, Any]]:
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: pass --data-dir pointing at the shared data folder")
    with gzip.open(path, "rb") as f:
        for line in f:
            if line.strip():
                yield orjson.loads(line)


def load_alpacaeval(data_dir: Path) -> pa.Table:
    """One row per (instruction, model) answer with a judgment; unjudged answers are dropped."""
    d = Path(data_dir) / ALPACA
    instructions = {r["instruction_id"]: r["instruction"] for r in _jsonl_gz(d / "instructions.jsonl.gz")}
    cols: dict[str, list] = {k: [] for k in ("prompt", "response", "label", "group", "instruction_id",
                                             "preference")}
    for r in _jsonl_gz(d / "judgments.jsonl.gz"):
        pref = r.get("preference")
        if pref is None or r.get("output") is None or r["instruction_id"] not in instructions:
            continue
        cols["prompt"].append(instructions[r["instruction_id"]])
        cols["response"].append(r["output"])
        cols["label"].append(int(pref > 1.5))
        cols["group"].append(r["model"])
        cols["instruction_id"].append(r["instruction_id"])
        cols["preference"].append(float(pref))
    schema = pa.schema([("prompt", pa.string()), ("response", pa.string()), ("label", pa.int8()),
                        ("group", pa.string()), ("instruction_id", pa.string()), ("preference", pa.float64())])
    return pa.table(cols, schema=schema)


def load_alpacaeval_references(data_dir: Path) -> dict[str, str]:
    """instruction_id → the GPT-4-Turbo reference answer (the baseline of the helpfulness judgments)."""
    d = Path(data_dir) / ALPACA
    return {r["instruction_id"]: r["output"] for r in _jsonl_gz(d / "reference_outputs.jsonl.gz")}


def split_hh(transcript: str) -> tuple[str, str]:
    """An HH transcript → (prompt up to and including the last 'Assistant:', final assistant answer).

    The prompt keeps the HH format ("\\n\\nHuman: ...\\n\\nAssistant:"), which is how the data set is
    published and what a reward model for it is usually trained on.
    """
    cut = transcript.rfind(ASSISTANT)
    if cut < 0:
        cut = transcript.rfind(ASSISTANT.rstrip())
        if cut < 0:
            raise ValueError("no assistant turn in the transcript")
        return transcript[: cut + len(ASSISTANT.rstrip())], transcript[cut + len(ASSISTANT.rstrip()):].strip()
    return transcript[: cut + len(ASSISTANT) - 1], transcript[cut + len(ASSISTANT):].strip()


def first_human_turn(transcript: str) -> str:
    """The opening user message of an HH transcript (a red-team prompt)."""
    start = transcript.find(HUMAN)
    start = start + len(HUMAN) if start >= 0 else 0
    end = transcript.find("\n\nAssistant:", start)
    return transcript[start: end if end >= 0 else None].strip()


def load_hh_harmless(data_dir: Path) -> pa.Table:
    """Two rows per usable pair (chosen = 1, rejected = 0); pairs with different prompts or equal answers
    are skipped (their count is in the table's metadata as `skipped_pairs`)."""
    cols: dict[str, list] = {k: [] for k in ("prompt", "response", "label", "group", "pair_id")}
    skipped = 0
    for i, r in enumerate(_jsonl_gz(Path(data_dir) / HH_FILE)):
        try:
            p_c, a_c = split_hh(r["chosen"])
            p_r, a_r = split_hh(r["rejected"])
        except (KeyError, ValueError):
            skipped += 1
            continue
        if p_c != p_r or a_c == a_r or not a_c or not a_r:
            skipped += 1
            continue
        pid = f"hh-{i:05d}"
        for answer, label in ((a_c, 1), (a_r, 0)):
            cols["prompt"].append(p_c)
            cols["response"].append(answer)
            cols["label"].append(label)
            cols["group"].append(pid)
            cols["pair_id"].append(pid)
    schema = pa.schema([("prompt", pa.string()), ("response", pa.string()), ("label", pa.int8()),
                        ("group", pa.string()), ("pair_id", pa.string())],
                       metadata={"skipped_pairs": str(skipped)})
    return pa.table(cols, schema=schema)
