"""Row validation against the DESIGN §3 data contracts.

Each function takes one decoded row (a dict) and returns the values to store, or raises `RowError` with a
short code (counted in summaries) and a message naming the field and what was expected (kept in the
quarantine table). They are plain functions on the ingest hot path: no pydantic model per row, because
validating ten million rows through model instances costs several times the whole ingest budget.
"""

from __future__ import annotations

import hashlib
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

TURN = "turn"
REACTION = "reaction"

TURN_FIELDS = (
    "response_id",
    "conversation_id",
    "user_id",
    "turn_index",
    "created_at",
    "policy",
    "prompt",
    "messages",
    "response",
    "surface",
    "locale",
    "metadata",
)
REACTION_FIELDS = ("response_id", "user_id", "reaction", "created_at", "removed")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
MAX_MS = 4_102_444_800_000  # 2100-01-01T00:00:00Z; later (or negative) times are typos, not data
# Epoch values at or above this are milliseconds: 1e11 seconds would be the year 5138.
MS_THRESHOLD = 100_000_000_000
_NUMERIC = re.compile(r"\s*-?\d+(\.\d+)?\s*")
# NUL bytes break C strings in drivers and PostgreSQL text; lone surrogates are what invalid UTF-8 becomes
# after surrogateescape decoding (CSV) and cannot be encoded back.
_BAD_CHARS = re.compile("[\x00\ud800-\udfff]")


class RowError(ValueError):
    """A row that fails validation; `code` is a short category, `str(self)` the full reason."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code


def infer_kind(row: dict[str, Any]) -> str:
    """A row with `reaction` is a reaction event; one with `response` is a turn (DESIGN §3)."""
    if "reaction" in row:
        return REACTION
    if "response" in row:
        return TURN
    raise RowError(
        "unknown_kind", "cannot tell the row's kind: expected a 'reaction' field (reaction event) "
        "or a 'response' field (turn); pass --kind to force it"
    )


def parse_timestamp(value: Any, field: str = "created_at") -> int:
    """ISO-8601 string, epoch seconds or epoch milliseconds (number or numeric string) → epoch ms (UTC).

    A time without an offset is taken as UTC.
    """
    if value is None or value == "":
        raise RowError("missing_field", f"field '{field}' is required (ISO-8601 or epoch seconds/ms)")
    if isinstance(value, bool):
        raise RowError("bad_timestamp", f"field '{field}': expected ISO-8601 or epoch seconds/ms, got a boolean")
    if isinstance(value, datetime):  # Parquet timestamp columns arrive as datetime objects
        dt = value if value.tzinfo else value.replace(tzinfo=UTC)
        ms = (dt - EPOCH) // timedelta(milliseconds=1)
    elif isinstance(value, int | float):
        ms = _epoch_to_ms(float(value), field)
    elif isinstance(value, str):
        if _NUMERIC.fullmatch(value):
            ms = _epoch_to_ms(float(value), field)
        else:
            try:
                dt = datetime.fromisoformat(value.strip())
            except ValueError:
                raise RowError(
                    "bad_timestamp",
                    f"field '{field}': expected ISO-8601 (e.g. 2026-11-01T12:00:00Z) or epoch seconds/ms, "
                    f"got {_preview(value)}",
                ) from None
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=UTC)
            ms = (dt - EPOCH) // timedelta(milliseconds=1)
    else:
        raise RowError(
            "bad_timestamp",
            f"field '{field}': expected ISO-8601 string or epoch number, got {type(value).__name__}",
        )
    if not 0 <= ms < MAX_MS:
        raise RowError("bad_timestamp", f"field '{field}': {_preview(value)} is outside 1970-2100")
    return ms


def _epoch_to_ms(x: float, field: str) -> int:
    if not math.isfinite(x):
        raise RowError("bad_timestamp", f"field '{field}': expected a finite epoch time, got {x}")
    return int(round(x)) if abs(x) >= MS_THRESHOLD else int(round(x * 1000))


def ms_to_iso(ms: int) -> str:
    """Epoch ms → ISO-8601 UTC with millisecond precision and a 'Z' suffix (what export writes)."""
    dt = EPOCH + timedelta(milliseconds=ms)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _preview(value: Any, n: int = 60) -> str:
    s = repr(value)
    return s if len(s) <= n else s[: n - 3] + "..."


def _id(row: dict[str, Any], field: str, max_chars: int) -> str:
    v = row.get(field)
    if v is None:
        raise RowError("missing_field", f"field '{field}' is required")
    if isinstance(v, bool) or not isinstance(v, str | int):
        raise RowError("bad_type", f"field '{field}': expected a string id, got {type(v).__name__}")
    s = str(v)
    if not s.strip():
        raise RowError("empty_id", f"field '{field}' is empty")
    if len(s) > max_chars:
        raise RowError("too_long", f"field '{field}' has {len(s)} characters, the limit is {max_chars}")
    if _BAD_CHARS.search(s):
        raise RowError(*_bad_char_reason(field, s))
    return s


def _text(row: dict[str, Any], field: str, max_chars: int, required: bool) -> str | None:
    v = row.get(field)
    if v is None or (v == "" and not required):
        if required:
            raise RowError("missing_field", f"field '{field}' is required")
        return None
    if not isinstance(v, str):
        raise RowError("bad_type", f"field '{field}': expected a string, got {type(v).__name__}")
    if len(v) > max_chars:
        raise RowError("too_long", f"field '{field}' has {len(v)} characters, the limit is {max_chars}")
    if _BAD_CHARS.search(v):
        raise RowError(*_bad_char_reason(field, v))
    return v


def _bad_char_reason(field: str, s: str) -> tuple[str, str]:
    if "\x00" in s:
        return "nul_byte", f"field '{field}' contains a NUL character"
    return "invalid_utf8", f"field '{field}' is not valid UTF-8"


def _json_field(row: dict[str, Any], field: str, expected: type) -> Any:
    """A nested JSON value: already decoded (JSONL, Parquet) or a JSON string (CSV)."""
    v = row.get(field)
    if v is None or v == "":
        return None
    if isinstance(v, str):
        try:
            v = orjson.loads(v)
        except orjson.JSONDecodeError as e:
            raise RowError("bad_type", f"field '{field}': not valid JSON ({e})") from None
    if not isinstance(v, expected):
        name = "an object" if expected is dict else "an array"
        raise RowError("bad_type", f"field '{field}': expected {name}, got {type(v).__name__}")
    return v


def _messages(row: dict[str, Any], max_chars: int) -> list[dict[str, Any]] | None:
    msgs = _json_field(row, "messages", list)
    if msgs is None:
        return None
    if not msgs:
        raise RowError("bad_type", "field 'messages': expected a non-empty array of {role, content}")
    total = 0
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or "content" not in m:
            raise RowError("bad_type", f"field 'messages[{i}]': expected an object with 'role' and 'content'")
        content = m["content"]
        if isinstance(content, list):  # OpenAI content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            raise RowError("bad_type", f"field 'messages[{i}].content': expected a string or content parts")
        if _BAD_CHARS.search(content) or _BAD_CHARS.search(m["role"]):
            raise RowError(*_bad_char_reason(f"messages[{i}]", content + m["role"]))
        total += len(content)
    if total > max_chars:
        raise RowError("too_long", f"field 'messages' has {total} characters, the limit is {max_chars}")
    return msgs


def last_user_message(messages: list[dict[str, Any]]) -> str | None:
    for m in reversed(messages):
        if m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, list):
                c = "".join(p.get("text", "") for p in c if isinstance(p, dict))
            return c if isinstance(c, str) else None
    return None


def _int(row: dict[str, Any], field: str) -> int:
    v = row.get(field)
    if v is None or v == "":
        raise RowError("missing_field", f"field '{field}' is required (an integer >= 0)")
    if isinstance(v, bool):
        raise RowError("bad_type", f"field '{field}': expected an integer, got a boolean")
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    elif isinstance(v, str) and v.strip().isdigit():
        v = int(v)
    if not isinstance(v, int):
        raise RowError("bad_type", f"field '{field}': expected an integer >= 0, got {_preview(v)}")
    if not 0 <= v < 2**31:
        raise RowError("bad_type", f"field '{field}': expected an integer >= 0, got {v}")
    return v


_TRUE = {True, "true", "True", "TRUE", "1", "yes"}
_FALSE = {False, None, "", "false", "False", "FALSE", "0", "no"}


def _bool(row: dict[str, Any], field: str) -> bool:
    v = row.get(field)
    if isinstance(v, float) and v in (0.0, 1.0):
        v = int(v)
    try:
        if v in _TRUE:
            return True
        if v in _FALSE:
            return False
    except TypeError:  # unhashable (a list or an object)
        pass
    raise RowError("bad_type", f"field '{field}': expected true or false, got {_preview(v)}")


def validate_turn(row: dict[str, Any], max_text: int, max_id: int) -> dict[str, Any]:
    """A DESIGN §3 interaction-log row → the `responses` columns (without ingest_run_id)."""
    out = _fast_turn(row, max_text, max_id)
    return out if out is not None else _checked_turn(row, max_text, max_id)


def reaction_key(r: dict[str, Any]) -> tuple:
    """What makes two reaction events the same event (the store's unique constraint)."""
    return (r["created_at_ms"], r["response_id"], r["user_id"], r["reaction"], r["removed"])


def validate_reaction(row: dict[str, Any], max_id: int) -> dict[str, Any]:
    """A DESIGN §3 reaction-event row → the `reactions` columns (without id and ingest_run_id)."""
    out = _fast_reaction(row, max_id)
    return out if out is not None else _checked_reaction(row, max_id)


# The fast paths accept only the plain, common shape of a valid row (native JSON types, no extra fields)
# and return None for anything else, which then goes through the field-by-field checks below; those give
# the same result for valid rows and the precise reason for bad ones. Ten million rows through the
# field-by-field checks alone cost ~3x the ingest budget (benchmarks/ingest.py).
_TURN_KEYS = frozenset(TURN_FIELDS) - {"metadata"}


def _fast_ts(ts: Any) -> int | None:
    t = type(ts)
    if t is int:
        ms = ts if ts >= MS_THRESHOLD else ts * 1000
    elif t is str and ts[:1].isdigit() and ("-" in ts):
        try:
            dt = datetime.fromisoformat(ts)
        except ValueError:
            return None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        ms = (dt - EPOCH) // _MS
    else:
        return None
    return ms if 0 <= ms < MAX_MS else None


def _fast_turn(row: dict[str, Any], max_text: int, max_id: int) -> dict[str, Any] | None:
    if not _TURN_KEYS.issuperset(row):
        return None
    g = row.get
    rid, cid, uid, pol = g("response_id"), g("conversation_id"), g("user_id"), g("policy")
    prompt, resp, ti = g("prompt"), g("response"), g("turn_index")
    surface, locale, msgs = g("surface"), g("locale"), g("messages")
    if not (type(rid) is str and type(cid) is str and type(uid) is str and type(pol) is str
            and type(prompt) is str and type(resp) is str and type(ti) is int and 0 <= ti < 2**31):
        return None
    if not (0 < len(rid) <= max_id and 0 < len(cid) <= max_id and 0 < len(uid) <= max_id
            and 0 < len(pol) <= max_id and 0 < len(prompt) <= max_text and len(resp) <= max_text):
        return None
    if not (rid.strip() and cid.strip() and uid.strip() and pol.strip()):
        return None
    if surface is not None and (type(surface) is not str or not 0 < len(surface) <= max_id):
        return None
    if locale is not None and (type(locale) is not str or not 0 < len(locale) <= max_id):
        return None
    parts = [rid, cid, uid, pol, prompt, resp, surface or "", locale or ""]
    if msgs is not None:
        if type(msgs) is not list or not msgs:
            return None
        total = 0
        for m in msgs:
            if type(m) is not dict or type(m.get("role")) is not str or type(m.get("content")) is not str:
                return None
            parts.append(m["role"])
            parts.append(m["content"])
            total += len(m["content"])
        if total > max_text:
            return None
    if _BAD_CHARS.search("\x1f".join(parts)):
        return None
    ms = _fast_ts(g("created_at"))
    if ms is None:
        return None
    out = {
        "response_id": rid, "conversation_id": cid, "user_id": uid, "turn_index": ti, "created_at_ms": ms,
        "policy": pol, "prompt": prompt, "messages": orjson.dumps(msgs).decode() if msgs is not None else None,
        "response": resp, "surface": surface, "locale": locale, "metadata": None,
    }
    out["row_hash"] = hashlib.blake2b(orjson.dumps(list(out.values())), digest_size=16).hexdigest()
    return out


_REACTION_KEYS = frozenset(REACTION_FIELDS)


def _fast_reaction(row: dict[str, Any], max_id: int) -> dict[str, Any] | None:
    if not _REACTION_KEYS.issuperset(row):
        return None
    g = row.get
    rid, uid, reaction, removed = g("response_id"), g("user_id"), g("reaction"), g("removed", False)
    if not (type(rid) is str and type(uid) is str and type(reaction) is str and type(removed) is bool):
        return None
    if not (0 < len(rid) <= max_id and 0 < len(uid) <= max_id and 0 < len(reaction) <= 64):
        return None
    if not (rid.strip() and uid.strip() and reaction.strip()) or _BAD_CHARS.search(rid + uid + reaction):
        return None
    ms = _fast_ts(g("created_at"))
    if ms is None:
        return None
    return {"response_id": rid, "user_id": uid, "reaction": reaction.strip().lower(), "created_at_ms": ms,
            "removed": removed}


def _checked_turn(row: dict[str, Any], max_text: int, max_id: int) -> dict[str, Any]:
    messages = _messages(row, max_text)
    prompt = _text(row, "prompt", max_text, required=False)
    if prompt is None:
        if messages is None:
            raise RowError("missing_field", "a turn needs 'prompt' (last user message) or 'messages'")
        # Downstream stages read `prompt`; derive it once here rather than in every reader.
        prompt = last_user_message(messages)
    metadata = _json_field(row, "metadata", dict)
    extra = {k: v for k, v in row.items() if k not in TURN_FIELDS}
    if extra:
        # Unknown fields are kept, not dropped: they join `metadata` (explicit metadata keys win).
        metadata = {**extra, **(metadata or {})}
    out = {
        "response_id": _id(row, "response_id", max_id),
        "conversation_id": _id(row, "conversation_id", max_id),
        "user_id": _id(row, "user_id", max_id),
        "turn_index": _int(row, "turn_index"),
        "created_at_ms": parse_timestamp(row.get("created_at")),
        "policy": _id(row, "policy", max_id),
        "prompt": prompt,
        "messages": orjson.dumps(messages).decode() if messages is not None else None,
        "response": _text(row, "response", max_text, required=True),
        "surface": _text(row, "surface", max_id, required=False),
        "locale": _text(row, "locale", max_id, required=False),
        "metadata": orjson.dumps(metadata, default=str).decode() if metadata is not None else None,
    }
    out["row_hash"] = hashlib.blake2b(
        orjson.dumps(list(out.values())), digest_size=16
    ).hexdigest()
    return out


def _checked_reaction(row: dict[str, Any], max_id: int) -> dict[str, Any]:
    response_id = _id(row, "response_id", max_id)
    user_id = _id(row, "user_id", max_id)
    reaction = _id(row, "reaction", 64).strip().lower()
    ms = parse_timestamp(row.get("created_at"))
    removed = _bool(row, "removed")
    return {
        "response_id": response_id,
        "user_id": user_id,
        "reaction": reaction,
        "created_at_ms": ms,
        "removed": removed,
    }
