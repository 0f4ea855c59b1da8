"""Judged responses in: the labelled Parquet of `rluf dataset build`, or any JSONL / Parquet with
`prompt`, `response`, `label` (optional `weight`, `group`)."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

REQUIRED = ("prompt", "response", "label")


def read_table(path: Path) -> pa.Table:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix == ".parquet":
        return pq.read_table(path)
    rows = []
    with open(path, "rb") as f:
        for i, line in enumerate(f, start=1):
            if line.strip():
                row = orjson.loads(line)
                if not isinstance(row, dict):
                    raise ValueError(f"{path}:{i}: expected a JSON object")
                rows.append(row)
    return pa.Table.from_pylist(rows)


def read_judged(path: Path, need_label: bool = True) -> dict[str, list]:
    """Columns as lists; clear errors for what is missing or not 0/1."""
    t = read_table(path)
    need = REQUIRED if need_label else REQUIRED[:2]
    missing = [c for c in need if c not in t.column_names]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(need)}")
    cols = {c: t[c].to_pylist() for c in t.column_names}
    for i, (p, r) in enumerate(zip(cols["prompt"], cols["response"], strict=True)):
        if not isinstance(p, str) or not isinstance(r, str):
            raise ValueError(f"{path}: row {i + 1}: 'prompt' and 'response' must be strings")
    if need_label:
        bad = next((i for i, y in enumerate(cols["label"]) if y not in (0, 1, True, False)), None)
        if bad is not None:
            raise ValueError(f"{path}: row {bad + 1}: 'label' must be 0 or 1, got {cols['label'][bad]!r}")
        cols["label"] = [int(y) for y in cols["label"]]
    return cols


def upsample_factor_near(path: Path) -> float:
    """The positive upsampling factor recorded in a card.json beside the training file (1.0 when none)."""
    card = Path(path).parent / "card.json"
    if card.exists():
        return float(json.loads(card.read_text()).get("upsample_factor", 1.0) or 1.0)
    return 1.0
