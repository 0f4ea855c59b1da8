"""`rluf dataset build`: a labelled set for one reaction signal, from the feedback store.

Top to bottom:
  1. `as_of`: the time labels are read at (default: the latest time in the store, turns or reactions);
  2. read the signal's reaction events up to `as_of` (they are sparse: a dict keyed by turn);
  3. stream the turns in time order, in chunks: label every turn whose attribution window has closed and
     stage it (text included) in a temporary Parquet file; keep only small per-turn arrays in memory;
  4. adversarial filters on those arrays: users with an anomalous reaction rate, bursts of reactions, hearts
     on unsafe answers (and users who leave them repeatedly), a per-user cap on positives;
  5. repeated (prompt, response) pairs: aggregated into one train row with all their impressions and loves
     (default), or deduped keeping the earliest;
  6. split by time: train, then validation, then test; never at random;
  7. optionally upsample train positives to a target rate, recording the factor for the prior correction;
  8. stream the staged rows into {train,validation,test}.parquet, then write card.json.

Labelling rules (DESIGN §2):
  - positive: at the end of the window (created_at + window, inclusive) the turn's reaction is on: a
    reaction inside the window that was not withdrawn (a `removed=true` event by the same user) before the
    window closed. A withdrawal after the window does not undo it. A user who withdraws and reacts again
    inside the window counts as on.
  - negative: the turn was shown and has no net reaction at the end of the window.
  - unlabelled: the window has not closed at `as_of` (excluded, counted), never negative.
  - late reactions (after the window) do not count; reactions whose turn is not in the store ("orphans") are
    counted and ignored; with `owner_only` (the default) only the user the turn was shown to can make it
    positive (reactions by others are counted as `foreign_user_reactions`).

Decisions:
  - Adversarial filters (each can be turned off; the card counts what each removed). Flagged users — an
    anomalous reaction rate (above `max_user_rate` from `min_user_turns` labelled turns, or improbably far above
    it on fewer: `rate_alpha`), a burst (`burst_count`
    reactions within `burst_seconds`), or `unsafe_user_min` hearts on unsafe answers — lose ALL their labels
    (the turns shown to them are excluded, not made negative: a bot's silence is no more a signal than its
    hearts). Single hearts on unsafe answers are dropped (excluded). Positives beyond `max_positives_per_user`
    are dropped, keeping each user's earliest. Each removed turn is counted under exactly one reason, the first
    that applies in the order rate, burst, unsafe users, unsafe hearts, cap, dedupe; the flagged users are
    listed in flagged_users.csv.
  - Dedupe is global and runs before the split, after the filters: of identical (prompt, response) pairs the
    earliest turn is kept with its own label (no OR over copies: it would inflate the positive rate of generic
    answers); a later copy can therefore never sit in test while the first is in train. The key is what the
    reward model reads: the prompt (the last user message) and the response (a 128-bit BLAKE2b of both).
  - Aggregation (`duplicates="aggregate"`, the default): a policy that answers many users from a few samples per
    prompt shows each answer many times, and each showing is evidence. Train copies of a pair become one pair of
    rows carrying all of them: `label` 1 with `weight` = its loves and `label` 0 with `weight` = its silent
    impressions (`impressions` says how many turns a row stands for). Its binary cross-entropy is the sum over
    the copies, at the cost of one row. Validation and test keep one row per shown turn (metrics count
    impressions, not texts); a copy in a later split than its pair's first is removed as a duplicate, as with
    dedupe. Split boundaries are set on the turns before merging. The card lists per source policy how many
    turns were merged into how many rows.
  - Upsampling touches train only. Default `duplicate`: positive rows repeated (`upsample_copy` numbers the
    copies; a fractional factor gives a seeded subset one extra copy) and `upsample_factor` is the realised
    factor on the positives' odds; `weight` keeps one row each with weight = factor. Either way a model trained
    on it corrects its logit by -log(upsample_factor) (`prior_correction_logit`).
  - Split boundaries are the first timestamp of the later split, so turns sharing a timestamp never straddle.

Memory: the per-turn state kept in memory is a few numeric arrays (~60 bytes a turn) plus the reaction events
of the one signal; the text goes through a staging Parquet file in the output folder, read back in batches.
The SQL is plain SQLAlchemy Core (parametrised selects, `ORDER BY`, `max`, `count`), the same on SQLite and
PostgreSQL; all per-turn logic runs in Python / NumPy after fetching.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import time
import uuid
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ConfigDict, Field, field_validator, model_validator
from sqlalchemy import URL, Engine, func, select

from rluf.config import StrictModel
from rluf.data.unsafe import is_unsafe
from rluf.progress import track
from rluf.store.schema import reactions, responses

SPLITS = ("train", "validation", "test")
HOUR_MS = 3_600_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Why a labelled turn left the set; each turn gets exactly one reason (the first that applies, in this order),
# so the removal counts in the card add up: labelled = kept + sum(removed).
KEPT, RATE, BURST, UNSAFE_USER, UNSAFE_HEART, CAP, DUPLICATE = range(7)
REASONS = {RATE: "rate", BURST: "burst", UNSAFE_USER: "unsafe_users", UNSAFE_HEART: "unsafe_hearts",
           CAP: "cap", DUPLICATE: "dedupe"}

TS = pa.timestamp("ms", tz="UTC")
STAGING_SCHEMA = pa.schema([
    ("response_id", pa.string()), ("prompt", pa.string()), ("messages", pa.string()), ("response", pa.string()),
    ("label", pa.int8()), ("user_id", pa.string()), ("conversation_id", pa.string()), ("policy", pa.string()),
    ("created_at", TS), ("turn_index", pa.int32()), ("surface", pa.string()), ("locale", pa.string()),
    ("reacted_at", TS),
])
OUTPUT_SCHEMA = pa.schema([
    ("response_id", pa.string()),
    ("prompt", pa.string()),          # the last user message (derived from `messages` when the store has none)
    ("messages", pa.string()),        # the chat history as stored (JSON, OpenAI format) or null
    ("response", pa.string()),
    ("label", pa.int8()),             # 1: net reaction at the end of the window; 0: none
    ("weight", pa.float32()),         # 1, or the upsampling factor on train positives in `weight` mode
    ("user_id", pa.string()),
    ("conversation_id", pa.string()),
    ("policy", pa.string()),
    ("created_at", TS),
    ("split", pa.string()),
    ("turn_index", pa.int32()),
    ("surface", pa.string()),
    ("locale", pa.string()),
    ("reacted_at", TS),               # when the counted reaction was made (null for negatives)
    ("upsample_copy", pa.int16()),    # 0: the row itself; k >= 1: its k-th duplicate from upsampling
    ("impressions", pa.int32()),      # shown turns the row stands for (> 1: aggregated copies of one pair)
])


# ----------------------------------------------------------------------------------------------- config


class DatasetConfig(StrictModel):
    """How `build_dataset` turns the store into a labelled set. Every field can be set in YAML."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    signal: str = Field("love", min_length=1)
    """The reaction name that makes a positive (e.g. love, like, dislike)."""
    window_hours: float = Field(24.0, gt=0)
    """Attribution window after the turn is shown (inclusive); later reactions are late and do not count."""
    as_of: str | None = None
    """Time labels are read at (ISO-8601; no offset means UTC). Default: the latest time in the store (turns or
    reactions). Turns whose window closes after it are unlabelled; events after it are not read."""
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    """Shares of the kept labelled turns, in time order, for train / validation / test (sum 1). Turns with the
    same timestamp never straddle a boundary."""
    split_at: tuple[str, str] | None = None
    """Explicit boundaries instead of fractions (ISO-8601): validation starts at the first, test at the second."""
    dedupe: bool = True
    """Handle repeated (prompt, response) pairs as `duplicates` says; False keeps every copy as its own row."""
    duplicates: Literal["aggregate", "earliest"] = "aggregate"
    """aggregate: train copies of a pair become one row pair carrying all their loves and impressions (weights);
    earliest: keep the earliest copy with its own label and drop the rest (their evidence is lost)."""
    upsample_to: float | None = Field(None, gt=0, lt=1)
    """Upsample TRAIN positives to this positive rate (e.g. 0.1); None: no upsampling. Validation and test keep
    the true rate. Never downsamples: a train rate already above the target leaves the factor at 1."""
    upsample_mode: Literal["duplicate", "weight"] = "duplicate"
    """duplicate: repeat positive rows (weight 1); weight: one row each, positives carry the factor as weight."""
    owner_only: bool = True
    """Count only reactions by the user the turn was shown to (nobody else saw it in a private chat)."""
    max_user_rate: float | None = Field(0.3, gt=0, le=1)
    """Rate filter: users whose labelled turns are positive more often than this are treated as bots and all
    their labels dropped (None: off). Applies from `min_user_turns` labelled turns."""
    min_user_turns: int = Field(10, ge=1)
    """Labelled turns a user needs before the rate filter judges them by their rate alone."""
    rate_alpha: float | None = Field(0.01, gt=0, lt=1)
    """Rate filter, for any number of turns: a user is also treated as a bot when their positives would be
    this improbable (one-sided binomial tail) if their true rate were `max_user_rate` — 4 hearts on 4 turns
    (0.3^4 = 0.008) is a bot, 3 on 3 is not yet. Catches spam accounts that leave before `min_user_turns`;
    on simulated spam it halved the bots' surviving positives without dropping a human's (None: off)."""
    burst_count: int | None = Field(5, ge=2)
    """Burst filter: a user with this many `signal` reactions within `burst_seconds` is treated as a bot and all
    their labels dropped (None: off)."""
    burst_seconds: float = Field(10.0, gt=0)
    """Length of the burst window, in seconds."""
    unsafe_hearts: bool = True
    """Unsafe filter: drop positives on answers that match the builder's unsafe lexicon (rluf.data.unsafe);
    users with `unsafe_user_min` such positives are treated as adversarial and all their labels dropped."""
    unsafe_user_min: int = Field(2, ge=1)
    """Unsafe-answer positives after which a user's labels are all dropped."""
    max_positives_per_user: int | None = Field(50, ge=1)
    """Cap filter: keep at most this many positives per user (the earliest); the rest are dropped, not turned
    negative (None: no cap)."""
    seed: int = 0
    """Seed for which positives get the extra copy when the duplicate factor is fractional."""
    chunk_rows: int = Field(5_000, ge=100)
    """Rows fetched from the store (and written to Parquet) per chunk. Peak memory follows it, not the store's
    size: about 400 MB at 5,000 rows of ~2 KB text (SQLite, 400k turns)."""

    @field_validator("as_of", mode="before")
    @classmethod
    def _as_of_text(cls, v: Any) -> Any:
        return _time_text(v)

    @field_validator("split_at", mode="before")
    @classmethod
    def _split_at_text(cls, v: Any) -> Any:
        return None if v is None else [_time_text(x) for x in v]

    @field_validator("split_fractions")
    @classmethod
    def _fractions(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(x < 0 for x in v) or not math.isclose(sum(v), 1.0, abs_tol=1e-6):
            raise ValueError(f"split_fractions must be 3 non-negative numbers summing to 1, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _times_parse(self) -> DatasetConfig:
        if self.as_of is not None:
            to_ms(self.as_of, "as_of")
        if self.split_at is not None:
            b1, b2 = (to_ms(x, "split_at") for x in self.split_at)
            if b1 > b2:
                raise ValueError(f"split_at: validation start {self.split_at[0]} is after test start "
                                 f"{self.split_at[1]}")
        return self


# ----------------------------------------------------------------------------------------------- time


def _time_text(v: Any) -> Any:
    """YAML turns unquoted timestamps into datetimes (and bare dates into dates); keep them as ISO text."""
    if isinstance(v, datetime):
        return (v if v.tzinfo else v.replace(tzinfo=UTC)).isoformat()
    if isinstance(v, date):
        return v.isoformat()
    return v


def to_ms(value: str, field: str = "time") -> int:
    """ISO-8601 (a trailing Z or an offset; none means UTC) → epoch milliseconds."""
    try:
        dt = datetime.fromisoformat(value.strip())
    except (ValueError, AttributeError):
        raise ValueError(f"{field}: expected an ISO-8601 time such as 2026-11-01T12:00:00Z, got {value!r}") from None
    dt = dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    return (dt - EPOCH) // timedelta(milliseconds=1)


def ms_to_iso(ms: int | None) -> str | None:
    """Epoch ms → ISO-8601 UTC with millisecond precision and a Z."""
    if ms is None:
        return None
    dt = EPOCH + timedelta(milliseconds=int(ms))
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def safe_url(engine: Engine) -> str:
    """The store URL without its password (not even masked)."""
    u = engine.url
    return URL.create(u.drivername, username=u.username, host=u.host, port=u.port, database=u.database,
                      query=u.query).render_as_string(hide_password=False)


# ----------------------------------------------------------------------------------------------- read + label


def _last_user_message(messages: str | None) -> str | None:
    """The last user message of an OpenAI-format JSON chat history, or None."""
    if not messages:
        return None
    try:
        msgs = orjson.loads(messages)
    except orjson.JSONDecodeError:
        return None
    for m in reversed(msgs if isinstance(msgs, list) else []):
        if isinstance(m, dict) and m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, list):
                c = "".join(p.get("text", "") for p in c if isinstance(p, dict))
            return c if isinstance(c, str) else None
    return None


class _Counters(dict):
    def add(self, key: str, n: int = 1) -> None:
        self[key] = self.get(key, 0) + n


def _read_events(conn, cfg: DatasetConfig, as_of_ms: int, users: dict[str, int]):
    """The signal's events up to as_of, grouped by turn (time order), plus every user's reaction times."""
    q = (select(reactions.c.response_id, reactions.c.user_id, reactions.c.created_at_ms, reactions.c.removed)
         .where(reactions.c.reaction == cfg.signal, reactions.c.created_at_ms <= as_of_ms)
         .order_by(reactions.c.created_at_ms, reactions.c.id))
    by_turn: dict[str, list[tuple[str, int, bool]]] = defaultdict(list)
    ev_user: list[int] = []
    ev_ts: list[int] = []
    n = 0
    result = conn.execution_options(yield_per=cfg.chunk_rows).execute(q)
    for part in result.partitions():
        for rid, uid, ts, removed in part:
            removed = bool(removed)
            by_turn[rid].append((uid, ts, removed))
            if not removed:
                ev_user.append(users.setdefault(uid, len(users)))
                ev_ts.append(ts)
            n += 1
    return dict(by_turn), np.asarray(ev_user, np.int64), np.asarray(ev_ts, np.int64), n


def _label_turn(events, owner: str, t0: int, end: int, owner_only: bool, c: _Counters):
    """(label, reactor, reacted_at) at the end of the window from one turn's events (in time order)."""
    on: dict[str, int] = {}  # user -> time their current (not withdrawn) reaction was made
    withdrew = False
    late_on = late_off = 0
    for uid, ts, removed in events:
        if owner_only and uid != owner:
            c.add("foreign_user_reactions")
            continue
        if ts > end:
            if removed:
                late_off += 1
            else:
                late_on += 1
            continue
        if removed:
            withdrew = withdrew or uid in on
            on.pop(uid, None)
        else:
            on.setdefault(uid, ts)
            c.add("counted_reactions")
            if ts < t0:
                c.add("reactions_before_turn")
    if late_on:
        c.add("late_reactions", late_on)
    if late_off:
        c.add("late_withdrawals", late_off)
    if not on:
        if withdrew:
            c.add("withdrawn_in_window")
        return 0, None, None
    if late_off:
        c.add("withdrawn_after_window")
    reactor = owner if owner in on else min(on, key=lambda u: (on[u], u))
    return 1, reactor, on[reactor]


def _scan_turns(conn, cfg: DatasetConfig, as_of_ms: int, events: dict, users: dict[str, int],
                staging: Path, c: _Counters) -> dict[str, np.ndarray]:
    """Stream the turns in time order; stage each labelled turn, return its per-turn arrays (staging order)."""
    window_ms = int(round(cfg.window_hours * HOUR_MS))
    n_total = conn.execute(select(func.count()).select_from(responses)).scalar_one()
    cols = [responses.c[k] for k in ("response_id", "conversation_id", "user_id", "turn_index", "created_at_ms",
                                      "policy", "prompt", "messages", "response", "surface", "locale")]
    # Time order, ties by id: the staging (and output) order, and what "earliest" means everywhere below.
    q = select(*cols).order_by(responses.c.created_at_ms, responses.c.response_id)
    arrays: dict[str, list[np.ndarray]] = defaultdict(list)
    seen_event_turns: set[str] = set()  # turns in the store that have events (sparse, like the events)
    policies: dict[str | None, int] = {}
    result = conn.execution_options(yield_per=cfg.chunk_rows).execute(q)
    with pq.ParquetWriter(staging, STAGING_SCHEMA) as writer:
        chunks = track(result.partitions(), "label turns", total=max(1, math.ceil(n_total / cfg.chunk_rows)))
        for part in chunks:
            staged: list[tuple] = []  # one tuple per labelled turn, in STAGING_SCHEMA order
            owner, reactor_code, unsafe, policy = [], [], [], []
            digests = bytearray()
            for rid, cid, uid, ti, t0, pol, prompt, msgs, resp, surf, loc in part:
                c.add("turns_in_store")
                evs = events.get(rid)
                if evs is not None:
                    seen_event_turns.add(rid)
                end = t0 + window_ms
                if end > as_of_ms:
                    c.add("unlabelled_open_window")
                    if t0 > as_of_ms:
                        c.add("turns_after_as_of")
                    continue
                if evs is None:
                    label, reactor, reacted_at = 0, None, None
                else:
                    label, reactor, reacted_at = _label_turn(evs, uid, t0, end, cfg.owner_only, c)
                if prompt is None:
                    prompt = _last_user_message(msgs)
                    c.add("prompt_from_messages" if prompt is not None else "prompt_missing")
                    prompt = prompt or ""
                staged.append((rid, prompt, msgs, resp, label, uid, cid, pol, t0, ti, surf, loc, reacted_at))
                owner.append(users.setdefault(uid, len(users)))
                policy.append(policies.setdefault(pol, len(policies)))
                reactor_code.append(users.setdefault(reactor, len(users)) if label else -1)
                unsafe.append(bool(label and cfg.unsafe_hearts and is_unsafe(resp)))
                p, r = prompt.encode(), resp.encode()
                digests += hashlib.blake2b(len(p).to_bytes(8, "little") + p + r, digest_size=16).digest()
            if not staged:
                continue
            columns = list(zip(*staged, strict=True))
            del staged
            writer.write_batch(pa.RecordBatch.from_arrays(
                [pa.array(col, f.type) for col, f in zip(columns, STAGING_SCHEMA, strict=True)], schema=STAGING_SCHEMA))
            arrays["t"].append(np.asarray(columns[8], np.int64))
            arrays["label"].append(np.asarray(columns[4], np.int8))
            arrays["owner"].append(np.asarray(owner, np.int64))
            arrays["reactor"].append(np.asarray(reactor_code, np.int64))
            arrays["unsafe"].append(np.asarray(unsafe, bool))
            arrays["policy"].append(np.asarray(policy, np.int32))
            arrays["hash"].append(np.frombuffer(bytes(digests), dtype=np.uint64).reshape(-1, 2))
    c["orphan_reactions"] = sum(len(v) for k, v in events.items() if k not in seen_event_turns)
    empty = {"t": np.int64, "label": np.int8, "owner": np.int64, "reactor": np.int64, "unsafe": bool,
             "policy": np.int32}
    out = {k: np.concatenate(arrays[k]) if arrays[k] else np.zeros(0, dt) for k, dt in empty.items()}
    out["policy_names"] = [str(k) for k in policies]
    out["hash"] = np.concatenate(arrays["hash"]) if arrays["hash"] else np.zeros((0, 2), np.uint64)
    return out


# ----------------------------------------------------------------------------------------------- filters


def _burst_users(ev_user: np.ndarray, ev_ts: np.ndarray, count: int, seconds: float) -> np.ndarray:
    """Users with `count` reactions within `seconds` (inclusive), from arrays of (user, time)."""
    if len(ev_user) < count:
        return np.zeros(0, np.int64)
    order = np.lexsort((ev_ts, ev_user))
    u, t = ev_user[order], ev_ts[order]
    k = count - 1
    hit = (u[k:] == u[:-k]) & (t[k:] - t[:-k] <= seconds * 1000)
    return np.unique(u[k:][hit])


def rate_anomalous(turns: np.ndarray, positives: np.ndarray, max_rate: float = 0.3, min_turns: int = 10,
                   alpha: float | None = 0.01) -> np.ndarray:
    """Per user: reacts more often than `max_rate` on at least `min_turns` turns, or (any number of turns) so
    often that a true rate of `max_rate` would make it improbable (one-sided binomial tail below `alpha`).
    The rate filter of the labelled set; `rluf abtest analyze` uses it to drop bots from an experiment."""
    turns = np.asarray(turns, dtype=float)
    positives = np.asarray(positives, dtype=float)
    rate = np.divide(positives, turns, out=np.zeros(len(turns)), where=turns > 0)
    anomalous = (turns >= min_turns) & (rate > max_rate)
    if alpha is not None:
        from scipy.stats import binom

        anomalous |= (positives > 0) & (binom.sf(positives - 1, turns, max_rate) < alpha)
    return anomalous


def _adversarial_filters(m: dict[str, np.ndarray], ev_user, ev_ts, n_users: int, cfg: DatasetConfig):
    """Reason per labelled turn (KEPT or the first filter that removes it) and per-filter user counts.

    Flagged users (rate, burst, repeated unsafe hearts; a user flagged for several reasons is counted under
    the first of these) lose every label: the turns they were shown and the positives they made. Then single
    positives on unsafe answers are dropped, then positives beyond the per-user cap (the earliest are kept).
    """
    label, owner, reactor = m["label"], m["owner"], m["reactor"]
    pos = label == 1
    user_reason = np.zeros(n_users, np.int8)
    flagged_users: dict[str, int] = {}

    def flag(users: np.ndarray, why: int) -> None:
        new = users[user_reason[users] == KEPT]
        user_reason[new] = why
        flagged_users[REASONS[why]] = int(len(new))

    if cfg.max_user_rate is not None:
        n = np.bincount(owner, minlength=n_users)
        p = np.bincount(owner, weights=pos, minlength=n_users)
        flag(np.nonzero(rate_anomalous(n, p, cfg.max_user_rate, cfg.min_user_turns, cfg.rate_alpha))[0], RATE)
    if cfg.burst_count is not None:
        flag(_burst_users(ev_user, ev_ts, cfg.burst_count, cfg.burst_seconds), BURST)
    if cfg.unsafe_hearts:
        per_user = np.bincount(reactor[pos & m["unsafe"]], minlength=n_users)
        flag(np.nonzero(per_user >= cfg.unsafe_user_min)[0], UNSAFE_USER)

    reason = user_reason[owner].copy()
    from_reactor = (reason == KEPT) & pos
    reason[from_reactor] = user_reason[reactor[from_reactor]]
    if cfg.unsafe_hearts:
        reason[(reason == KEPT) & pos & m["unsafe"]] = UNSAFE_HEART
    capped_users = 0
    if cfg.max_positives_per_user is not None:
        idx = np.nonzero((reason == KEPT) & pos)[0]  # in time order
        order = np.argsort(reactor[idx], kind="stable")  # by user, time order within a user
        idx, users = idx[order], reactor[idx][order]
        first = np.r_[0, np.nonzero(np.diff(users))[0] + 1] if len(users) else np.zeros(0, np.int64)
        starts = np.repeat(first, np.diff(np.r_[first, len(users)]))
        over = (np.arange(len(users)) - starts) >= cfg.max_positives_per_user
        reason[idx[over]] = CAP
        capped_users = int(len(np.unique(users[over])))
    return reason, user_reason, flagged_users, capped_users


def _write_flagged(path: Path, users: dict[str, int], user_reason: np.ndarray, m: dict[str, np.ndarray]) -> None:
    """flagged_users.csv: user_id, reason, labelled turns shown to them, positives they made (for an audit)."""
    n = np.bincount(m["owner"], minlength=len(user_reason))
    p = np.bincount(m["reactor"][m["label"] == 1], minlength=len(user_reason))
    names = list(users)  # insertion order = code
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["user_id", "reason", "labelled_turns", "positives"])
        for code in np.nonzero(user_reason != KEPT)[0]:
            w.writerow([names[code], REASONS[int(user_reason[code])], int(n[code]), int(p[code])])


def _dedupe(m: dict[str, np.ndarray], reason: np.ndarray) -> dict[str, int]:
    """Mark every repeat of a (prompt, response) pair among the kept turns; the earliest stays, own label."""
    idx = np.nonzero(reason == KEPT)[0]
    h = m["hash"][idx]
    order = np.lexsort((idx, h[:, 1], h[:, 0]))  # by pair, then time
    idx, h = idx[order], h[order]
    same = np.zeros(len(idx), bool)
    same[1:] = (h[1:] == h[:-1]).all(axis=1)
    reason[idx[same]] = DUPLICATE
    group = np.cumsum(~same) - 1
    n_groups = int(group[-1]) + 1 if len(group) else 0
    lab = m["label"][idx].astype(np.int64)
    g_pos = np.bincount(group, weights=lab, minlength=n_groups)
    g_n = np.bincount(group, minlength=n_groups)
    return {
        "removed": int(same.sum()),
        "removed_positives": int(lab[same].sum()),
        "pairs_repeated": int((g_n > 1).sum()),
        "label_conflicts": int(((g_pos > 0) & (g_pos < g_n)).sum()),
    }


def _aggregate(m: dict[str, np.ndarray], reason: np.ndarray, code: np.ndarray) -> tuple[dict[str, Any], np.ndarray,
                                                                                     np.ndarray]:
    """Merge train copies of each pair into its earliest train copy; drop copies in a later split than the
    pair's first (DUPLICATE). Returns the summary and, per labelled turn, the loves and silent impressions it
    carries (a merged-away copy carries none; an unmerged turn carries its own label)."""
    lab = m["label"].astype(np.int64)
    pos, neg = lab.copy(), 1 - lab
    idx = np.nonzero(reason == KEPT)[0]
    h = m["hash"][idx]
    order = np.lexsort((idx, h[:, 1], h[:, 0]))  # by pair, then time
    idx, h = idx[order], h[order]
    first = np.ones(len(idx), bool)
    first[1:] = ~(h[1:] == h[:-1]).all(axis=1)
    group = np.cumsum(first) - 1
    head = idx[first][group]  # the earliest copy of each turn's pair
    later_split = code[idx] > code[head]
    reason[idx[later_split]] = DUPLICATE
    code[idx[later_split]] = -1
    merge = (~first) & (~later_split) & (code[idx] == 0)  # train copies after the first
    np.add.at(pos, head[merge], lab[idx[merge]])
    np.add.at(neg, head[merge], 1 - lab[idx[merge]])
    pos[idx[merge]] = neg[idx[merge]] = 0
    per_policy: dict[str, dict[str, int]] = {}
    for code_p, name in enumerate(m["policy_names"]):
        sel = m["policy"][idx] == code_p
        if sel.any():
            per_policy[name] = {"kept_turns": int(sel.sum()), "merged_turns": int((sel & merge).sum()),
                                "duplicates_removed": int((sel & later_split).sum()),
                                "train_pairs_with_copies": int(len(np.unique(head[sel & merge])))}
    g_n = np.bincount(group[~later_split], minlength=int(group[-1]) + 1 if len(group) else 0)
    summary = {"removed": int(later_split.sum()), "removed_positives": int(lab[idx[later_split]].sum()),
               "merged_turns": int(merge.sum()), "merged_positives": int(lab[idx[merge]].sum()),
               "pairs_repeated": int((g_n > 1).sum()), "max_impressions_per_pair": int(g_n.max()) if len(g_n) else 0,
               "per_policy": per_policy}
    return summary, pos, neg


# ----------------------------------------------------------------------------------------------- split


def _split(t: np.ndarray, keep: np.ndarray, cfg: DatasetConfig) -> tuple[np.ndarray, int, int]:
    """Split code per labelled turn (-1: not kept; 0/1/2: train/validation/test) and the two boundaries.

    A boundary is the first time of the later split: train has t < b1, validation b1 <= t < b2, test t >= b2,
    so turns sharing a timestamp always land in the same split.
    """
    kt = t[keep]  # already in time order
    if cfg.split_at is not None:
        b1, b2 = (to_ms(x, "split_at") for x in cfg.split_at)
    else:
        n = len(kt)
        f = cfg.split_fractions

        def boundary(i: int) -> int:
            return int(kt[i]) if i < n else int(kt[-1]) + 1

        b1 = boundary(int(round(n * f[0])))
        b2 = max(b1, boundary(int(round(n * (f[0] + f[1])))))
    code = np.full(len(t), -1, np.int8)
    code[keep] = np.where(kt < b1, 0, np.where(kt < b2, 1, 2))
    return code, b1, b2


def _upsample(pos: np.ndarray, neg: np.ndarray, code: np.ndarray, cfg: DatasetConfig):
    """Copies and weight of each labelled turn's positive row in TRAIN, and the upsampling summary for the card.
    `pos` / `neg`: the loves and silent impressions a turn carries (aggregated copies carry several)."""
    copies = np.ones(len(pos), np.int64)
    weight = np.ones(len(pos), np.float32)
    train = code == 0
    n_pos = int(pos[train].sum())
    n_neg = int(neg[train].sum())
    info: dict[str, Any] = {"upsample_to": cfg.upsample_to, "upsample_mode": cfg.upsample_mode,
                            "upsample_factor": 1.0, "note": None}
    if cfg.upsample_to is None:
        return copies, weight, info
    if n_pos == 0 or n_neg == 0:
        info["note"] = "no upsampling: train has no positives or no negatives"
        return copies, weight, info
    # The factor multiplies the positives' odds: after it, positives / all = upsample_to.
    factor = cfg.upsample_to / (1 - cfg.upsample_to) * n_neg / n_pos
    if factor <= 1.0:
        info["note"] = f"no upsampling: the train positive rate {n_pos / (n_pos + n_neg):.4f} is already >= target"
        return copies, weight, info
    pos_idx = np.nonzero(train & (pos > 0))[0]
    if cfg.upsample_mode == "weight":
        weight[pos_idx] = factor
        info["upsample_factor"] = float(factor)
        return copies, weight, info
    whole = int(math.floor(factor))
    extra = int(round((factor - whole) * len(pos_idx)))
    copies[pos_idx] = whole
    if extra:
        rng = np.random.default_rng(cfg.seed)
        copies[rng.choice(pos_idx, size=extra, replace=False)] += 1
    # The realised factor (integer copies, over the loves each row carries) is what the prior correction undoes.
    info["upsample_factor"] = float((copies[pos_idx] * pos[pos_idx]).sum() / n_pos)
    return copies, weight, info


# ----------------------------------------------------------------------------------------------- write


def _write_splits(staging: Path, out_dir: Path, code: np.ndarray, pos: np.ndarray, neg: np.ndarray,
                  copies: np.ndarray, weight: np.ndarray, chunk_rows: int) -> dict[str, dict[str, int]]:
    """Stream the staged rows into {split}.parquet (written to temporary names, then moved into place).

    A staged turn becomes up to two rows: its positive row (`copies` times, weight `weight` × loves in weight
    mode) when it carries loves, its negative row when it carries silent impressions; a merged-away copy none."""
    tmp = {s: out_dir / f".{s}.parquet.tmp-{uuid.uuid4().hex[:8]}" for s in SPLITS}
    written = {s: {"rows_written": 0, "positives_written": 0} for s in SPLITS}
    writers = {s: pq.ParquetWriter(tmp[s], OUTPUT_SCHEMA) for s in SPLITS}
    try:
        pf = pq.ParquetFile(staging)
        offset = 0
        for batch in track(pf.iter_batches(batch_size=chunk_rows), "write splits",
                           total=max(1, math.ceil(pf.metadata.num_rows / chunk_rows))):
            n = batch.num_rows
            sl = slice(offset, offset + n)
            b_code, b_pos, b_neg, b_copies, b_weight = code[sl], pos[sl], neg[sl], copies[sl], weight[sl]
            offset += n
            for k, s in enumerate(SPLITS):
                idx = np.nonzero(b_code == k)[0]
                if not len(idx):
                    continue
                reps_pos = np.where(b_pos[idx] > 0, b_copies[idx], 0)
                reps_neg = (b_neg[idx] > 0).astype(np.int64)
                take = np.concatenate([np.repeat(idx, reps_pos), np.repeat(idx, reps_neg)])
                n_p = int(reps_pos.sum())
                label = np.concatenate([np.ones(n_p, np.int8), np.zeros(len(take) - n_p, np.int8)])
                impressions = np.concatenate([np.repeat(b_pos[idx], reps_pos), np.repeat(b_neg[idx], reps_neg)])
                w = np.concatenate([np.repeat(b_weight[idx], reps_pos), np.ones(len(take) - n_p, np.float32)])
                copy_no = np.concatenate([np.arange(n_p) - np.repeat(np.cumsum(reps_pos) - reps_pos, reps_pos),
                                          np.zeros(len(take) - n_p, np.int64)])
                order = np.argsort(take, kind="stable")  # time order; a pair's positive row before its negative
                take, label, impressions, w, copy_no = take[order], label[order], impressions[order], w[order], \
                    copy_no[order]
                sub = batch.take(pa.array(take))
                cols = {name: sub.column(name) for name in STAGING_SCHEMA.names}
                cols["label"] = pa.array(label, pa.int8())
                cols["weight"] = pa.array(w * impressions, pa.float32())
                cols["impressions"] = pa.array(impressions.astype(np.int32), pa.int32())
                cols["split"] = pa.array([s] * len(take), pa.string())
                cols["upsample_copy"] = pa.array(copy_no.astype(np.int16), pa.int16())
                writers[s].write_batch(pa.RecordBatch.from_arrays([cols[f] for f in OUTPUT_SCHEMA.names],
                                                                  schema=OUTPUT_SCHEMA))
                written[s]["rows_written"] += len(take)
                written[s]["positives_written"] += n_p
        for w_ in writers.values():
            w_.close()
        for s in SPLITS:
            os.replace(tmp[s], out_dir / f"{s}.parquet")
    finally:
        for s in SPLITS:
            writers[s].close()
            tmp[s].unlink(missing_ok=True)
    return written


# ----------------------------------------------------------------------------------------------- build


def build_dataset(engine: Engine, cfg: DatasetConfig, out_dir: Path) -> dict[str, Any]:
    """Build the labelled set for `cfg.signal`: writes out_dir/{train,validation,test}.parquet and card.json.

    Returns the card (also written as card.json). Raises ValueError when no labelled turn is left.
    """
    started = time.time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir / f".staging-{uuid.uuid4().hex[:8]}.parquet"
    c = _Counters()
    users: dict[str, int] = {}
    try:
        with engine.connect() as conn:
            t_max = conn.execute(select(func.max(responses.c.created_at_ms))).scalar()
            r_max = conn.execute(select(func.max(reactions.c.created_at_ms))).scalar()
            latest = max((x for x in (t_max, r_max) if x is not None), default=None)
            if cfg.as_of is not None:
                as_of_ms = to_ms(cfg.as_of, "as_of")
            elif latest is not None:
                as_of_ms = int(latest)
            else:
                raise ValueError("no labelled turns: the store is empty; ingest an interaction log first")
            events, ev_user, ev_ts, n_events = _read_events(conn, cfg, as_of_ms, users)
            m = _scan_turns(conn, cfg, as_of_ms, events, users, staging, c)
        del events
        n_lab = len(m["t"])
        if n_lab == 0:
            raise ValueError(
                f"no labelled turns: {c.get('turns_in_store', 0)} turns in the store, all with a window "
                f"({cfg.window_hours} h) still open at {ms_to_iso(as_of_ms)}; ingest more traffic, pass an "
                f"earlier as_of or a shorter window_hours")

        reason, user_reason, flagged_users, capped_users = _adversarial_filters(m, ev_user, ev_ts, len(users), cfg)
        dedupe: dict[str, Any] = {"removed": 0, "removed_positives": 0, "pairs_repeated": 0, "label_conflicts": 0}
        aggregate = cfg.dedupe and cfg.duplicates == "aggregate"
        if cfg.dedupe and not aggregate:
            dedupe = _dedupe(m, reason)
        keep = reason == KEPT
        if not keep.any():
            raise ValueError(f"no labelled turns left: all {n_lab} labelled turns were removed by the filters; "
                             f"see the filter settings (max_user_rate, burst_count, ...)")
        code, b1, b2 = _split(m["t"], keep, cfg)
        pos, neg = m["label"].astype(np.int64), 1 - m["label"].astype(np.int64)
        if aggregate:
            dedupe, pos, neg = _aggregate(m, reason, code)
            keep = reason == KEPT
        copies, weight, up = _upsample(pos, neg, code, cfg)
        written = _write_splits(staging, out_dir, code, pos, neg, copies, weight, cfg.chunk_rows)
        _write_flagged(out_dir / "flagged_users.csv", users, user_reason, m)
    finally:
        staging.unlink(missing_ok=True)

    label, t = m["label"], m["t"]
    splits: dict[str, Any] = {}
    for k, s in enumerate(SPLITS):
        sel = code == k
        n, p = int(sel.sum()), int(label[sel].sum())
        splits[s] = {
            "n": n, "positives": p, "positive_rate": round(p / n, 6) if n else None,
            **written[s],
            "start": ms_to_iso(int(t[sel].min())) if n else None,
            "end": ms_to_iso(int(t[sel].max())) if n else None,
            "users": int(len(np.unique(m["owner"][sel]))),
        }
    removed = {name: int((reason == r).sum()) for r, name in REASONS.items()}
    removed_pos = {name: int(label[reason == r].sum()) for r, name in REASONS.items()}
    n_kept, n_pos = int(keep.sum()), int(label[keep].sum())
    reaction_keys = ("counted_reactions", "late_reactions", "late_withdrawals", "withdrawn_in_window",
                     "withdrawn_after_window", "orphan_reactions", "foreign_user_reactions", "reactions_before_turn")
    card: dict[str, Any] = {
        "signal": cfg.signal,
        "source": safe_url(engine),
        "created_at": ms_to_iso(int(time.time() * 1000)),
        "build_seconds": round(time.time() - started, 3),
        "as_of": ms_to_iso(as_of_ms),
        "as_of_from": "config" if cfg.as_of is not None else "latest time in the store",
        "window_hours": cfg.window_hours,
        "turns_in_store": c.get("turns_in_store", 0),
        "labelled": n_lab,
        "unlabelled_open_window": c.get("unlabelled_open_window", 0),
        "turns_after_as_of": c.get("turns_after_as_of", 0),
        "kept": n_kept,
        "positives": n_pos,
        "positive_rate": round(n_pos / n_kept, 6),
        "signal_events": n_events,
        "reactions": {k: c.get(k, 0) for k in reaction_keys},
        "prompts": {"from_messages": c.get("prompt_from_messages", 0), "missing": c.get("prompt_missing", 0)},
        "filters": {
            "rate": {"enabled": cfg.max_user_rate is not None, "users": flagged_users.get("rate", 0),
                     "turns": removed["rate"], "positives": removed_pos["rate"]},
            "burst": {"enabled": cfg.burst_count is not None, "users": flagged_users.get("burst", 0),
                      "turns": removed["burst"], "positives": removed_pos["burst"]},
            "unsafe_users": {"enabled": cfg.unsafe_hearts, "users": flagged_users.get("unsafe_users", 0),
                             "turns": removed["unsafe_users"], "positives": removed_pos["unsafe_users"]},
            "unsafe_hearts": {"enabled": cfg.unsafe_hearts, "turns": removed["unsafe_hearts"],
                              "positives": removed_pos["unsafe_hearts"]},
            "cap": {"enabled": cfg.max_positives_per_user is not None, "users": capped_users,
                    "turns": removed["cap"], "positives": removed_pos["cap"]},
            "flagged_users": int(sum(flagged_users.values())),
            "flagged_users_file": "flagged_users.csv",
        },
        "dedupe": {"enabled": cfg.dedupe, "mode": cfg.duplicates if cfg.dedupe else "keep",
                   "scope": ("train copies merged; later-split copies removed" if aggregate
                             else "global, before the split"), **dedupe},
        "dedupe_removed": dedupe["removed"],
        "accounting": {"labelled": n_lab, "kept": n_kept, "removed": removed},
        "splits": splits,
        "boundaries": {"method": "split_at" if cfg.split_at is not None else "fractions",
                       "validation_start": ms_to_iso(b1), "test_start": ms_to_iso(b2)},
        **{k: v for k, v in up.items() if k != "note"},
        "prior_correction_logit": -math.log(up["upsample_factor"]),
        "upsample_note": up["note"],
        "config": cfg.model_dump(mode="json"),
    }
    # Every turn is accounted for, and every labelled turn is kept or removed for exactly one reason.
    assert card["turns_in_store"] == n_lab + card["unlabelled_open_window"]
    assert n_lab == n_kept + sum(removed.values())
    (out_dir / "card.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return card
