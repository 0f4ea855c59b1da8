"""`rluf export`: the store written back as DESIGN §3 logs (`interactions.jsonl`, `reactions.jsonl`).

The output ingests back into an identical store (round trip): timestamps become ISO-8601 UTC with
millisecond precision (what the store keeps), JSON columns become nested JSON again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, func, select

from rluf.progress import make_progress
from rluf.store.schema import quarantine, reactions, responses
from rluf.store.validate import ms_to_iso

STREAM_ROWS = 10_000


def _turn_record(r) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "response_id": r.response_id,
        "conversation_id": r.conversation_id,
        "user_id": r.user_id,
        "turn_index": r.turn_index,
        "created_at": ms_to_iso(r.created_at_ms),
        "policy": r.policy,
        "prompt": r.prompt,
    }
    if r.messages is not None:
        rec["messages"] = orjson.loads(r.messages)
    rec["response"] = r.response
    for k in ("surface", "locale"):
        if getattr(r, k) is not None:
            rec[k] = getattr(r, k)
    if r.metadata is not None:
        rec["metadata"] = orjson.loads(r.metadata)
    return rec


def _reaction_record(r) -> dict[str, Any]:
    rec = {"response_id": r.response_id, "user_id": r.user_id, "reaction": r.reaction,
           "created_at": ms_to_iso(r.created_at_ms)}
    if r.removed:
        rec["removed"] = True
    return rec


def _write(engine: Engine, query, count_query, to_record, path: Path, label: str, bar) -> int:
    tmp = path.with_suffix(path.suffix + ".tmp")
    n = 0
    with engine.connect() as conn:
        total = conn.execute(count_query).scalar_one()
        task = bar.add_task(f"export {label}", total=total)
        with open(tmp, "wb") as f:
            result = conn.execution_options(yield_per=STREAM_ROWS).execute(query)
            for part in result.partitions():
                f.write(b"".join(orjson.dumps(to_record(r)) + b"\n" for r in part))
                n += len(part)
                bar.advance(task, len(part))
    os.replace(tmp, path)  # a reader never sees a half-written export
    return n


def export_store(engine: Engine, out_dir: Path, include_quarantine: bool = False) -> dict[str, Any]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"interactions": out_dir / "interactions.jsonl", "reactions": out_dir / "reactions.jsonl"}
    with make_progress() as bar:
        n_turns = _write(
            engine,
            select(responses).order_by(responses.c.created_at_ms, responses.c.response_id),
            select(func.count()).select_from(responses),
            _turn_record, files["interactions"], "interactions", bar,
        )
        n_reactions = _write(
            engine,
            select(reactions).order_by(reactions.c.created_at_ms, reactions.c.id),
            select(func.count()).select_from(reactions),
            _reaction_record, files["reactions"], "reactions", bar,
        )
        n_quarantine = None
        if include_quarantine:
            files["quarantine"] = out_dir / "quarantine.jsonl"
            n_quarantine = _write(
                engine,
                select(quarantine).order_by(quarantine.c.id),
                select(func.count()).select_from(quarantine),
                lambda r: {"source_file": r.source_file, "line": r.line, "kind": r.kind,
                           "reason": r.reason, "raw": r.raw},
                files["quarantine"], "quarantine", bar,
            )
    out = {
        "out": str(out_dir),
        "interactions": n_turns,
        "reactions": n_reactions,
        "files": {k: str(v) for k, v in files.items()},
    }
    if n_quarantine is not None:
        out["quarantine"] = n_quarantine
    return out
