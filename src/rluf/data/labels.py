"""`rluf dataset build`: a labelled set for one reaction signal, from the feedback store.

Top to bottom:
  1. read the turns and the signal's reaction events from the store (SQLAlchemy Core, any dialect);
  2. label each turn: positive when the net reaction at the end of its attribution window is "on"
     (a withdrawal before the window closes cancels it); turns whose window is still open at `as_of` are
     left unlabelled; reactions after the window are late and do not count;
  3. drop what adversarial and bot users leave: anomalous per-user reaction rates, bursts, hearts on unsafe
     answers, and positives beyond a per-user cap;
  4. dedupe identical (prompt, response) pairs, keeping the earliest (so a repeated answer cannot sit in
     train and test at once);
  5. split by time — train, then validation, then test; never at random;
  6. optionally upsample train positives to a target rate, recording the factor for the prior correction;
  7. write {train,validation,test}.parquet and card.json.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field
from sqlalchemy import Engine, func, select

from rluf.config import StrictModel
from rluf.progress import track
from rluf.store.schema import reactions, responses
from rluf.store.validate import ms_to_iso, parse_timestamp

SPLITS = ("train", "validation", "test")
HOUR_MS = 3_600_000

# A deliberately small lexicon of clearly harmful content. It is this stage's own guard against users who
# heart unsafe answers (adversarial users), independent of the simulator's scorers and of any reward model.
UNSAFE_PATTERNS = re.compile(
    r"\b(how to (make|build) (a )?(bomb|explosive|weapon)|pipe bomb|nerve agent|meth(amphetamine)? recipe|"
    r"cook meth|poison (him|her|them|someone)|kill (him|her|them|someone|yourself)|hurt (him|her|them) badly|"
    r"untraceable (gun|poison)|steal (a car|their identity|credit card)|credit card numbers|hotwire|"
    r"launder(ing)? money|make a weapon|racial slur|hate (all|every) \w+|self-harm method|suicide method|"
    # jailbreak compliance: how harmful how-tos usually open
    r"without getting caught|no one will (ever )?know|untraceable|here'?s exactly how to)\b",
    re.IGNORECASE,
)


class DatasetConfig(StrictModel):
    signal: str = "love"
    """The reaction that makes a positive."""
    window_hours: float = Field(24.0, gt=0)
    """Attribution window after the turn is shown; later reactions are late and do not count."""
    as_of: str | None = None
    """Time at which labels are read (ISO-8601); default: the latest time in the store."""
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    """Fractions of labelled turns, in time order, for train / validation / test."""
    split_at: tuple[str, str] | None = None
    """Explicit boundaries (ISO-8601): validation starts at the first, test at the second."""
    dedupe: bool = True
    """Keep only the earliest of identical (prompt, response) pairs."""
    upsample_to: float | None = Field(None, gt=0, lt=1)
    """Upsample train positives to this positive rate (e.g. 0.1); the factor goes in the card."""
    upsample_mode: str = Field("duplicate", pattern="^(duplicate|weight)$")
    """duplicate: repeat positive rows; weight: one row each, positives weighted by the factor."""
    owner_only: bool = True
    """Count only reactions by the user the turn was shown to (others cannot have seen it)."""
    max_user_rate: float | None = 0.3
    """Users reacting to more than this share of their turns are treated as bots (None: off)."""
    min_user_turns: int = 10
    """The rate filter applies to users with at least this many labelled turns."""
    burst_count: int | None = 5
    """Users with this many signal reactions within `burst_seconds` are treated as bots (None: off)."""
    burst_seconds: float = 10.0
    unsafe_hearts: bool = True
    """Drop positives on answers with clearly unsafe content; users who do it repeatedly are dropped."""
    unsafe_user_min: int = 2
    """Unsafe hearts after which a user's labels are all dropped."""
    max_positives_per_user: int | None = 50
    """Positives kept per user (the earliest); beyond it they are dropped (None: no cap)."""
    seed: int = 0
    """Seed for the fractional part of duplicate upsampling."""


@dataclass
class _Turn:
    response_id: str
    conversation_id: str
    user_id: str
    policy: str
    created_at_ms: int
    prompt: str | None
    messages: str | None
    response: str
    label: int = 0


def _read_turns(engine: Engine) -> list[_Turn]:
    cols = [responses.c[k] for k in ("response_id", "conversation_id", "user_id", "policy", "created_at_ms",
                                      "prompt", "messages", "response")]
    with engine.connect() as conn:
        n = conn.execute(select(func.count()).select_from(responses)).scalar_one()
        result = conn.execution_options(yield_per=20_000).execute(
            select(*cols).order_by(responses.c.created_at_ms, responses.c.response_id)
        )
        return [_Turn(*row) for row in track(result, "read turns", total=n)]


def _read_events(engine: Engine, signal: str) -> list[tuple[str, str, int, bool]]:
    q = (select(reactions.c.response_id, reactions.c.user_id, reactions.c.created_at_ms, reactions.c.removed)
         .where(reactions.c.reaction == signal)
         .order_by(reactions.c.created_at_ms, reactions.c.id))
    with engine.connect() as conn:
        return [(r, u, t, bool(rm)) for r, u, t, rm in conn.execution_options(yield_per=50_000).execute(q)]


def _label(turns: list[_Turn], events, window_ms: int, as_of_ms: int, owner_only: bool):
    """Label every turn whose window has closed; returns (labelled turns, counters, positive event times)."""
    by_turn: dict[str, list[tuple[str, int, bool]]] = defaultdict(list)
    for rid, uid, t, removed in events:
        by_turn[rid].append((uid, t, removed))
    known = {t.response_id for t in turns}
    c = {"open_window": 0, "late_reactions": 0, "withdrawn_in_window": 0, "foreign_user_reactions": 0,
         "orphan_reactions": sum(len(v) for k, v in by_turn.items() if k not in known)}
    labelled, pos_times = [], {}
    for t in turns:
        end = t.created_at_ms + window_ms
        if end > as_of_ms:
            c["open_window"] += 1
            continue
        on, first_on, withdrawn = False, None, False
        for uid, ts, removed in by_turn.get(t.response_id, ()):
            if owner_only and uid != t.user_id:
                c["foreign_user_reactions"] += 1
                continue
            if ts > end:
                c["late_reactions"] += 1
                continue
            if removed:
                withdrawn = withdrawn or on
                on = False
            else:
                on = True
                first_on = ts if first_on is None else first_on
        t.label = int(on)
        c["withdrawn_in_window"] += int(withdrawn and not on)
        if on:
            pos_times[t.response_id] = first_on
        labelled.append(t)
    return labelled, c, pos_times


def _adversarial_filters(turns: list[_Turn], events, pos_times: dict[str, int], cfg: DatasetConfig):
    """Drop the labels that bots and adversarial users leave; returns (kept turns, removal counts)."""
    removed: dict[str, Any] = {}
    bad_users: set[str] = set()
    per_user = defaultdict(lambda: [0, 0])  # user -> [labelled turns, positives]
    for t in turns:
        per_user[t.user_id][0] += 1
        per_user[t.user_id][1] += t.label
    if cfg.max_user_rate is not None:
        rate_users = {u for u, (n, p) in per_user.items() if n >= cfg.min_user_turns and p / n > cfg.max_user_rate}
        removed["rate_users"] = len(rate_users)
        bad_users |= rate_users
    if cfg.burst_count is not None:
        times = defaultdict(list)
        for _, uid, ts, rm in events:
            if not rm:
                times[uid].append(ts)
        window = cfg.burst_seconds * 1000
        burst_users = set()
        for uid, ts in times.items():
            k = cfg.burst_count - 1
            if len(ts) > k and any(ts[i + k] - ts[i] <= window for i in range(len(ts) - k)):
                burst_users.add(uid)
        removed["burst_users"] = len(burst_users)
        bad_users |= burst_users
    unsafe_drop: set[str] = set()
    if cfg.unsafe_hearts:
        unsafe_by_user = defaultdict(list)
        for t in turns:
            if t.label and UNSAFE_PATTERNS.search(t.response):
                unsafe_by_user[t.user_id].append(t.response_id)
        unsafe_drop = {rid for rids in unsafe_by_user.values() for rid in rids}
        unsafe_users = {u for u, rids in unsafe_by_user.items() if len(rids) >= cfg.unsafe_user_min}
        removed["unsafe_hearts"] = len(unsafe_drop)
        removed["unsafe_users"] = len(unsafe_users)
        bad_users |= unsafe_users
    kept, n_bad_user_turns, n_bad_user_pos, n_unsafe_dropped = [], 0, 0, 0
    for t in turns:
        if t.user_id in bad_users:
            n_bad_user_turns += 1
            n_bad_user_pos += t.label
        elif t.response_id in unsafe_drop:
            n_unsafe_dropped += 1
        else:
            kept.append(t)
    removed["unsafe_hearts_dropped"] = n_unsafe_dropped
    removed["flagged_users"] = len(bad_users)
    removed["flagged_user_turns"] = n_bad_user_turns
    removed["flagged_user_positives"] = n_bad_user_pos
    if cfg.max_positives_per_user is not None:
        seen = defaultdict(int)
        capped, out = 0, []
        for t in sorted(kept, key=lambda t: pos_times.get(t.response_id, t.created_at_ms)):
            if t.label:
                seen[t.user_id] += 1
                if seen[t.user_id] > cfg.max_positives_per_user:
                    capped += 1
                    continue
            out.append(t)
        kept = sorted(out, key=lambda t: (t.created_at_ms, t.response_id))
        removed["capped_positives"] = capped
    return kept, removed


def _split(turns: list[_Turn], cfg: DatasetConfig) -> list[str]:
    """Split names by time. Equal timestamps never straddle a boundary (they go to the earlier split)."""
    times = np.array([t.created_at_ms for t in turns], dtype=np.int64)
    if cfg.split_at is not None:
        b1, b2 = (parse_timestamp(x, "split_at") for x in cfg.split_at)
    else:
        f = np.asarray(cfg.split_fractions, dtype=float)
        if (f < 0).any() or not math.isclose(f.sum(), 1.0, abs_tol=1e-6):
            raise ValueError(f"split_fractions must be 3 non-negative numbers summing to 1, got {cfg.split_fractions}")
        n = len(times)
        i1, i2 = int(round(n * f[0])), int(round(n * (f[0] + f[1])))
        b1 = int(times[i1 - 1]) + 1 if 0 < i1 < n else (int(times[-1]) + 1 if i1 >= n else int(times[0]))
        b2 = int(times[i2 - 1]) + 1 if 0 < i2 < n else (int(times[-1]) + 1 if i2 >= n else int(times[0]))
    return [SPLITS[0] if t < b1 else SPLITS[1] if t < b2 else SPLITS[2] for t in times]


def _table(turns: list[_Turn], split: list[str], weights: list[float]) -> pa.Table:
    return pa.table({
        "response_id": pa.array([t.response_id for t in turns], pa.string()),
        "prompt": pa.array([t.prompt for t in turns], pa.string()),
        "messages": pa.array([t.messages for t in turns], pa.string()),
        "response": pa.array([t.response for t in turns], pa.string()),
        "label": pa.array([t.label for t in turns], pa.int8()),
        "weight": pa.array(weights, pa.float32()),
        "user_id": pa.array([t.user_id for t in turns], pa.string()),
        "conversation_id": pa.array([t.conversation_id for t in turns], pa.string()),
        "policy": pa.array([t.policy for t in turns], pa.string()),
        "created_at": pa.array([t.created_at_ms for t in turns], pa.timestamp("ms", tz="UTC")),
        "split": pa.array(split, pa.string()),
    })


def _upsample(train: list[_Turn], cfg: DatasetConfig) -> tuple[list[_Turn], list[float], dict[str, Any]]:
    n_pos = sum(t.label for t in train)
    n_neg = len(train) - n_pos
    info: dict[str, Any] = {"upsample_to": cfg.upsample_to, "upsample_mode": cfg.upsample_mode,
                            "upsample_factor": 1.0}
    if cfg.upsample_to is None or n_pos == 0 or n_neg == 0 or n_pos / len(train) >= cfg.upsample_to:
        return train, [1.0] * len(train), info
    # Factor on the positives' odds: after it, positives / all = upsample_to.
    factor = cfg.upsample_to / (1 - cfg.upsample_to) * n_neg / n_pos
    if cfg.upsample_mode == "weight":
        info["upsample_factor"] = factor
        return train, [factor if t.label else 1.0 for t in train], info
    rng = np.random.default_rng(cfg.seed)
    out: list[_Turn] = []
    for t in train:
        copies = 1
        if t.label:
            copies = int(factor) + int(rng.random() < factor - int(factor))
        out.extend([t] * copies)
    n_pos_after = sum(t.label for t in out)
    info["upsample_factor"] = n_pos_after / n_pos  # the realised factor, what a prior correction must undo
    return out, [1.0] * len(out), info


def build_dataset(engine: Engine, cfg: DatasetConfig, out_dir: Path) -> dict[str, Any]:
    """Build the labelled set; writes out_dir/{train,validation,test}.parquet and card.json; returns the card."""
    from rluf.store.stats import safe_url

    out_dir = Path(out_dir)
    turns = _read_turns(engine)
    events = _read_events(engine, cfg.signal)
    latest = max([t.created_at_ms for t in turns[-1:]] + [e[2] for e in events[-1:]], default=0)
    as_of_ms = parse_timestamp(cfg.as_of, "as_of") if cfg.as_of else latest
    window_ms = int(cfg.window_hours * HOUR_MS)

    labelled, label_counts, pos_times = _label(turns, events, window_ms, as_of_ms, cfg.owner_only)
    kept, filters = _adversarial_filters(labelled, events, pos_times, cfg)
    dedupe_removed = 0
    if cfg.dedupe:
        seen, unique = set(), []
        for t in kept:  # already in time order: the earliest copy stays
            key = (t.prompt, t.response)
            if key in seen:
                dedupe_removed += 1
            else:
                seen.add(key)
                unique.append(t)
        kept = unique
    if not kept:
        raise ValueError(
            f"no labelled turns: {len(turns)} turns in the store, {label_counts['open_window']} with an open "
            f"window at {ms_to_iso(as_of_ms) if as_of_ms else 'as_of'}; ingest more traffic or lower --window-hours"
        )
    split = _split(kept, cfg)
    by_split = {s: [t for t, sp in zip(kept, split, strict=True) if sp == s] for s in SPLITS}
    train, train_w, up = _upsample(by_split["train"], cfg)

    out_dir.mkdir(parents=True, exist_ok=True)
    splits_card = {}
    for s in SPLITS:
        rows = train if s == "train" else by_split[s]
        w = train_w if s == "train" else [1.0] * len(rows)
        pq.write_table(_table(rows, [s] * len(rows), w), out_dir / f"{s}.parquet")
        base = by_split[s]
        n_pos = sum(t.label for t in base)
        splits_card[s] = {
            "n": len(base), "positives": n_pos, "positive_rate": round(n_pos / len(base), 5) if base else None,
            "rows_written": len(rows),
            "start": ms_to_iso(base[0].created_at_ms) if base else None,
            "end": ms_to_iso(base[-1].created_at_ms) if base else None,
            "users": len({t.user_id for t in base}),
        }
    n_pos_all = sum(t.label for t in kept)
    card = {
        "signal": cfg.signal,
        "source": safe_url(engine.url.render_as_string(hide_password=True)),
        "created_at": ms_to_iso(int(time.time() * 1000)),
        "as_of": ms_to_iso(as_of_ms) if as_of_ms else None,
        "window_hours": cfg.window_hours,
        "turns_in_store": len(turns),
        "signal_events": len(events),
        "labelled": len(labelled),
        "unlabelled_open_window": label_counts["open_window"],
        "kept": len(kept),
        "positives": n_pos_all,
        "positive_rate": round(n_pos_all / len(kept), 5),
        "reactions": {k: v for k, v in label_counts.items() if k != "open_window"},
        "filters": filters,
        "dedupe_removed": dedupe_removed,
        "splits": splits_card,
        "boundaries": {"validation_start": splits_card["validation"]["start"],
                       "test_start": splits_card["test"]["start"]},
        **up,
        "prior_correction_logit": 0.0 - math.log(up["upsample_factor"]),
        "config": cfg.model_dump(mode="json"),
    }
    # Every labelled turn is accounted for: kept + dropped by a filter + deduplicated.
    card["accounting"] = {
        "labelled": len(labelled),
        "kept": len(kept),
        "dropped_flagged_users": filters.get("flagged_user_turns", 0),
        "dropped_unsafe_hearts": filters.get("unsafe_hearts_dropped", 0),
        "dropped_capped_positives": filters.get("capped_positives", 0),
        "dropped_duplicates": dedupe_removed,
    }
    (out_dir / "card.json").write_text(json.dumps(card, indent=2))
    return card
