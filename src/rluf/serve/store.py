"""What the service reads and writes in the feedback store: users and their tokens, turns, reactions.

Everything goes through SQLAlchemy Core with bound parameters, in the same tables `rluf ingest` fills, so
`rluf export`, `rluf dataset build` and `rluf abtest analyze` read served traffic like any other log.
A turn's row is built by the ingest validator (`validate_turn`), which also computes its `row_hash`.

Reactions are a small state machine per (turn, user, reaction): sending `love` when the love is already
active, or withdrawing one that is not, changes nothing. That makes retries and double clicks idempotent
whatever their timestamps; the store's unique event key (the ingest dedupe key) is the second line.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError

from rluf.config import IngestConfig
from rluf.store.ingest import REACTION_COLUMNS, _InsertIgnore
from rluf.store.schema import reactions, responses, users
from rluf.store.validate import ms_to_iso, validate_turn

REACTIONS = ("love", "like", "dislike")
USER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}")
_LOCK_STRIPES = 64


class NotFound(LookupError):
    """The object does not exist, or belongs to someone else (the caller cannot tell which)."""


class Conflict(ValueError):
    """The object already exists."""


def now_ms() -> int:
    return int(time.time() * 1000)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "rluf_" + secrets.token_urlsafe(32)


def create_user(engine: Engine, user_id: str | None = None, is_admin: bool = False) -> dict[str, str]:
    """A new user with a fresh bearer token; only the token's hash is stored, so it is shown once here."""
    if user_id is None:
        user_id = "u_" + secrets.token_hex(8)
    elif not USER_ID.fullmatch(user_id):
        raise ValueError("user_id: 1-128 letters, digits or . _ @ : - (starting with a letter or digit)")
    token = new_token()
    try:
        with engine.begin() as conn:
            conn.execute(insert(users).values(user_id=user_id, token_sha256=hash_token(token),
                                              created_at_ms=now_ms(), is_admin=is_admin))
    except IntegrityError:
        raise Conflict(f"user_id: {user_id!r} exists already") from None
    return {"user_id": user_id, "token": token}


@dataclass(frozen=True)
class Caller:
    user_id: str
    is_admin: bool = False


class ServeStore:
    """The service's view of the store. Thread-safe: each call takes its own connection."""

    def __init__(self, engine: Engine, ingest: IngestConfig | None = None):
        self.engine = engine
        self.limits = ingest or IngestConfig()
        self._insert_reaction = _InsertIgnore(engine, reactions, REACTION_COLUMNS)
        # Tokens never change once issued, so a verified hash can skip the database next time.
        self._callers: dict[str, Caller] = {}
        # Striped locks serialise the read-then-write of one user's reaction state inside this process.
        self._locks = [threading.Lock() for _ in range(_LOCK_STRIPES)]

    # ------------------------------------------------------------------------------------------- users
    def caller_for_token(self, token: str) -> Caller | None:
        digest = hash_token(token)
        hit = self._callers.get(digest)
        if hit is not None:
            return hit
        with self.engine.connect() as conn:
            row = conn.execute(select(users.c.user_id, users.c.token_sha256, users.c.is_admin)
                               .where(users.c.token_sha256 == digest)).first()
        if row is None or not hmac.compare_digest(row.token_sha256, digest):
            return None
        caller = Caller(row.user_id, bool(row.is_admin))
        if len(self._callers) > 100_000:  # bounded memory; a miss only costs one indexed lookup
            self._callers.clear()
        self._callers[digest] = caller
        return caller

    def create_user(self, user_id: str | None = None, is_admin: bool = False) -> dict[str, str]:
        return create_user(self.engine, user_id, is_admin)

    # ------------------------------------------------------------------------------------------- turns
    def conversation_owned(self, user_id: str, conversation_id: str) -> bool:
        """Whether the user has turns in this conversation (looked up through the user index)."""
        with self.engine.connect() as conn:
            return conn.execute(select(responses.c.response_id).where(
                responses.c.user_id == user_id, responses.c.conversation_id == conversation_id).limit(1)
            ).first() is not None

    def add_turn(self, *, response_id: str, conversation_id: str, user_id: str, turn_index: int, arm: str,
                 messages: list[dict[str, str]], response: str, created_at_ms: int,
                 metadata: dict[str, Any]) -> dict[str, Any]:
        row = validate_turn({
            "response_id": response_id, "conversation_id": conversation_id, "user_id": user_id,
            "turn_index": turn_index, "created_at": created_at_ms, "policy": arm, "messages": messages,
            "response": response, "metadata": metadata,
        }, self.limits.max_text_chars, self.limits.max_id_chars)
        row["ingest_run_id"] = None
        with self.engine.begin() as conn:
            conn.execute(insert(responses).values(**row))
        return row

    def get_turn(self, user_id: str, response_id: str) -> dict[str, Any]:
        """The caller's own turn with its current reactions; someone else's turn is NotFound."""
        with self.engine.connect() as conn:
            r = conn.execute(select(responses).where(responses.c.response_id == response_id)).first()
            if r is None or not hmac.compare_digest(r.user_id.encode(), user_id.encode()):
                raise NotFound(response_id)
            events = conn.execute(select(reactions.c.reaction, reactions.c.removed)
                                  .where(reactions.c.response_id == response_id, reactions.c.user_id == user_id)
                                  .order_by(reactions.c.created_at_ms, reactions.c.id)).all()
        active: dict[str, bool] = {}
        for e in events:
            active[e.reaction] = not e.removed
        return {
            "id": r.response_id, "conversation_id": r.conversation_id, "turn_index": r.turn_index,
            "created_at": ms_to_iso(r.created_at_ms), "arm": r.policy,
            "messages": orjson.loads(r.messages) if r.messages else None, "response": r.response,
            "reactions": sorted(k for k, v in active.items() if v),
        }

    # --------------------------------------------------------------------------------------- reactions
    def react(self, user_id: str, response_id: str, reaction: str, removed: bool) -> dict[str, Any]:
        """Record a reaction (or its withdrawal) on the caller's own turn; a no-op when nothing changes.

        Returns the event and `status`: 'recorded' (a row was written) or 'unchanged'.
        """
        if reaction not in REACTIONS:
            raise ValueError(f"reaction: one of {', '.join(REACTIONS)}")
        lock = self._locks[hash(user_id) % _LOCK_STRIPES]
        with lock, self.engine.begin() as conn:
            owner = conn.execute(select(responses.c.user_id).where(responses.c.response_id == response_id)
                                 ).scalar_one_or_none()
            if owner is None or not hmac.compare_digest(owner.encode(), user_id.encode()):
                raise NotFound(response_id)
            last = conn.execute(
                select(reactions.c.removed, reactions.c.created_at_ms)
                .where(reactions.c.response_id == response_id, reactions.c.user_id == user_id,
                       reactions.c.reaction == reaction)
                .order_by(reactions.c.created_at_ms.desc(), reactions.c.id.desc()).limit(1)
            ).first()
            active = last is not None and not last.removed
            out = {"response_id": response_id, "reaction": reaction, "removed": removed}
            if active != removed:  # love while active, or withdraw while not active: nothing to do
                ms = last.created_at_ms if last is not None else now_ms()
                return {**out, "status": "unchanged", "created_at": ms_to_iso(ms)}
            # Strictly after the previous event, so that "latest event wins" is well defined downstream.
            ms = max(now_ms(), last.created_at_ms + 1) if last is not None else now_ms()
            row = {"response_id": response_id, "user_id": user_id, "reaction": reaction, "created_at_ms": ms,
                   "removed": removed, "ingest_run_id": None}
            inserted = self._insert_reaction(conn, [row])
        return {**out, "status": "recorded" if inserted else "unchanged", "created_at": ms_to_iso(ms)}
