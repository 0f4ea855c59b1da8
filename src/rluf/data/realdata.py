"""Loaders that turn the real data in ../shared/data (DESIGN §5) into judged responses.

Every loader returns an Arrow table with the generic judged-response columns `prompt`, `response`, `label`
(int8, 0/1) and `group`, plus columns of its own; the table's schema metadata holds the counts of what was
dropped and why (`skipped_*`, `dropped_*`), so that nothing disappears silently.

- AlpacaEval (`data_dir/alpacaeval/`): 21 models' answers to the 805 instructions, each judged against a
  GPT-4-Turbo reference; label = preference > 1.5 (the model's answer won; a 1.5 tie is a loss),
  group = model name. Judgments without a preference are dropped and counted.
- HH-RLHF harmless-base (`data_dir/hh_rlhf/harmless-base-test.jsonl.gz`): human preference pairs on red-team
  conversations. Each usable pair gives two rows, chosen (label 1) and rejected (label 0), group = pair id.
  `prompt` keeps the published HH format — the transcript up to and including the last "\\n\\nAssistant:" —
  which is what HH reward models are usually trained on; `messages` holds the same conversation as readable
  OpenAI-format JSON ([{"role": "user"|"assistant", "content": ...}]).

The files are gzip JSON Lines of a few MB, streamed line by line (no pandas).
"""

from __future__ import annotations

import csv
import gzip
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from rluf.paths import DEFAULT_DATA_DIR

ALPACA_DIR = "alpacaeval"
HH_FILE = Path("hh_rlhf") / "harmless-base-test.jsonl.gz"
WIN_THRESHOLD = 1.5
HUMAN, ASSISTANT = "\n\nHuman:", "\n\nAssistant:"
_TURN = re.compile(r"\n\n(Human|Assistant):")


def _require(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: the real data sets live in ../shared/data beside the checkout; pass --data-dir "
            f"(or set RLUF_DATA_DIR) to the folder holding alpacaeval/ and hh_rlhf/"
        )
    return path


def _jsonl_gz(path: Path) -> Iterator[dict[str, Any]]:
    with gzip.open(_require(path), "rb") as f:
        for line in f:
            if line.strip():
                yield orjson.loads(line)


def _meta(counts: dict[str, int]) -> dict[str, str]:
    return {k: str(v) for k, v in counts.items()}


# ----------------------------------------------------------------------------------------------- AlpacaEval


ALPACA_SCHEMA = pa.schema([
    ("prompt", pa.string()), ("response", pa.string()), ("label", pa.int8()), ("group", pa.string()),
    ("instruction_id", pa.string()), ("preference", pa.float64()), ("dataset", pa.string()),
])


def load_alpacaeval(data_dir: Path | str = DEFAULT_DATA_DIR) -> pa.Table:
    """One row per judged (instruction, model) answer: prompt = instruction, response = the model's output,
    label = 1 when preference > 1.5, group = model, plus instruction_id, preference and the instruction's
    source `dataset`. Judgments with a null preference, a null output or an unknown instruction are dropped;
    the counts are in the schema metadata (`dropped_null_preference`, `dropped_null_output`,
    `dropped_unknown_instruction`)."""
    d = Path(data_dir) / ALPACA_DIR
    instructions: dict[str, tuple[str, str | None]] = {
        str(r["instruction_id"]): (r["instruction"], r.get("dataset"))
        for r in _jsonl_gz(d / "instructions.jsonl.gz")
    }
    cols: dict[str, list] = {f.name: [] for f in ALPACA_SCHEMA}
    dropped = {"dropped_null_preference": 0, "dropped_null_output": 0, "dropped_unknown_instruction": 0}
    for r in _jsonl_gz(d / "judgments.jsonl.gz"):
        iid, pref, out = str(r.get("instruction_id")), r.get("preference"), r.get("output")
        if pref is None:
            dropped["dropped_null_preference"] += 1
            continue
        if out is None:
            dropped["dropped_null_output"] += 1
            continue
        if iid not in instructions:
            dropped["dropped_unknown_instruction"] += 1
            continue
        instruction, source = instructions[iid]
        cols["prompt"].append(instruction)
        cols["response"].append(out)
        cols["label"].append(int(float(pref) > WIN_THRESHOLD))
        cols["group"].append(r["model"])
        cols["instruction_id"].append(iid)
        cols["preference"].append(float(pref))
        cols["dataset"].append(source)
    return pa.table(cols, schema=ALPACA_SCHEMA.with_metadata(_meta(dropped)))


def load_alpacaeval_references(data_dir: Path | str = DEFAULT_DATA_DIR) -> dict[str, str]:
    """instruction_id → the GPT-4-Turbo reference answer (the baseline every judgment compares against)."""
    d = Path(data_dir) / ALPACA_DIR
    return {str(r["instruction_id"]): r["output"] for r in _jsonl_gz(d / "reference_outputs.jsonl.gz")}


def _number(v: str | None) -> int | float | str | None:
    if v in ("", None):
        return None
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


def load_alpacaeval_models(data_dir: Path | str = DEFAULT_DATA_DIR) -> dict[str, dict[str, Any]]:
    """models.csv: model → {n, win_rate_from_rows (percent), leaderboard figures, ...}; empty cells are None."""
    path = _require(Path(data_dir) / ALPACA_DIR / "models.csv")
    out: dict[str, dict[str, Any]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            rec: dict[str, Any] = {}
            for k, v in row.items():
                if k == "model":
                    continue
                rec[k] = _number(v)
            out[row["model"]] = rec
    return out


# ----------------------------------------------------------------------------------------------- HH-RLHF


def split_hh(transcript: str) -> tuple[str, str]:
    """An HH transcript → (prompt up to and including the last "\\n\\nAssistant:", final assistant answer).

    The prompt keeps the HH format; the answer is stripped of surrounding whitespace (it may be empty).
    """
    cut = transcript.rfind(ASSISTANT)
    if cut < 0:
        raise ValueError("no assistant turn in the transcript")
    end = cut + len(ASSISTANT)
    return transcript[:end], transcript[end:].strip()


def hh_messages(prompt: str) -> list[dict[str, str]]:
    """An HH prompt ("\\n\\nHuman: ...\\n\\nAssistant:") → OpenAI-format messages (the open last turn dropped)."""
    parts = _TURN.split(prompt if prompt.startswith("\n\n") else "\n\n" + prompt)
    msgs = []
    # parts = [before, role, text, role, text, ...]
    for role, text in zip(parts[1::2], parts[2::2], strict=True):
        msgs.append({"role": "user" if role == "Human" else "assistant", "content": text.strip()})
    if msgs and msgs[-1]["role"] == "assistant" and not msgs[-1]["content"]:
        msgs.pop()
    return msgs


def first_human_turn(transcript: str) -> str:
    """The opening user message of an HH transcript (a red-team prompt)."""
    msgs = hh_messages(transcript)
    return next((m["content"] for m in msgs if m["role"] == "user"), transcript.strip())


HH_SCHEMA = pa.schema([
    ("prompt", pa.string()), ("response", pa.string()), ("label", pa.int8()), ("group", pa.string()),
    ("pair_id", pa.string()), ("messages", pa.string()),
])


def load_hh_harmless(data_dir: Path | str = DEFAULT_DATA_DIR) -> pa.Table:
    """Two rows per usable pair (chosen = 1, rejected = 0), group = pair_id = "hh-<line index>".

    Skipped (counted in the schema metadata): pairs whose prompts differ (the transcripts diverge before the
    last assistant turn), whose answers are identical, where either answer is empty, or that do not parse.
    `skipped_pairs` is their total; `pairs` the usable ones.
    """
    cols: dict[str, list] = {f.name: [] for f in HH_SCHEMA}
    skipped = {"skipped_prompt_differs": 0, "skipped_identical": 0, "skipped_empty_response": 0,
               "skipped_malformed": 0}
    pairs = 0
    for i, r in enumerate(_jsonl_gz(Path(data_dir) / HH_FILE)):
        try:
            p_c, a_c = split_hh(r["chosen"])
            p_r, a_r = split_hh(r["rejected"])
        except (KeyError, TypeError, AttributeError, ValueError):
            skipped["skipped_malformed"] += 1
            continue
        if p_c != p_r:
            skipped["skipped_prompt_differs"] += 1
            continue
        if a_c == a_r:
            skipped["skipped_identical"] += 1
            continue
        if not a_c or not a_r:
            skipped["skipped_empty_response"] += 1
            continue
        pairs += 1
        pid = f"hh-{i:05d}"
        messages = orjson.dumps(hh_messages(p_c)).decode()
        for answer, label in ((a_c, 1), (a_r, 0)):
            cols["prompt"].append(p_c)
            cols["response"].append(answer)
            cols["label"].append(label)
            cols["group"].append(pid)
            cols["pair_id"].append(pid)
            cols["messages"].append(messages)
    meta = {"pairs": pairs, "skipped_pairs": sum(skipped.values()), **skipped}
    return pa.table(cols, schema=HH_SCHEMA.with_metadata(_meta(meta)))
