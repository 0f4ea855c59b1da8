"""Each validation rule of DESIGN §3, with accepted and rejected examples."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rluf.store.validate import (
    REACTION,
    TURN,
    RowError,
    _checked_reaction,
    _checked_turn,
    _fast_reaction,
    _fast_turn,
    infer_kind,
    ms_to_iso,
    parse_timestamp,
    reaction_key,
    validate_reaction,
    validate_turn,
)

T0_MS = 1_793_534_400_000  # 2026-11-01T12:00:00Z


def turn(**kw):
    row = {"response_id": "r1", "conversation_id": "c1", "user_id": "u1", "turn_index": 0,
           "created_at": "2026-11-01T12:00:00Z", "policy": "p", "prompt": "hi", "response": "hello"}
    row.update(kw)
    return {k: v for k, v in row.items() if v is not ...}


def reaction(**kw):
    row = {"response_id": "r1", "user_id": "u1", "reaction": "love", "created_at": T0_MS}
    row.update(kw)
    return {k: v for k, v in row.items() if v is not ...}


def code_of(fn, *a):
    with pytest.raises(RowError) as e:
        fn(*a)
    return e.value.code


@pytest.mark.parametrize("value", [
    "2026-11-01T12:00:00Z", "2026-11-01T12:00:00+00:00", "2026-11-01T13:00:00+01:00",
    "2026-11-01T12:00:00", "2026-11-01 12:00:00.000", 1_793_534_400, 1_793_534_400.0, T0_MS,
    "1793534400", "1793534400000", datetime(2026, 11, 1, 12, tzinfo=UTC), datetime(2026, 11, 1, 12),
])
def test_timestamps_accepted(value):
    assert parse_timestamp(value) == T0_MS


@pytest.mark.parametrize("value", ["yesterday", "2026-13-01T00:00:00Z", True, -5, 5e15, "", None, [1],
                                   float("nan"), "2200-01-01T00:00:00Z"])
def test_timestamps_rejected(value):
    assert code_of(parse_timestamp, value) in {"bad_timestamp", "missing_field"}


def test_iso_round_trip():
    assert parse_timestamp(ms_to_iso(T0_MS + 123)) == T0_MS + 123


def test_kind_inference():
    assert infer_kind(turn()) == TURN
    assert infer_kind(reaction()) == REACTION
    assert code_of(infer_kind, {"x": 1}) == "unknown_kind"


def test_valid_turn_columns():
    out = validate_turn(turn(), 1000, 64)
    assert out["created_at_ms"] == T0_MS and out["prompt"] == "hi" and len(out["row_hash"]) == 32


@pytest.mark.parametrize("field", ["response_id", "conversation_id", "user_id", "turn_index", "created_at",
                                   "policy", "response"])
def test_turn_required_fields(field):
    assert code_of(validate_turn, turn(**{field: ...}), 1000, 64) == "missing_field"


def test_turn_needs_prompt_or_messages():
    assert code_of(validate_turn, turn(prompt=...), 1000, 64) == "missing_field"
    out = validate_turn(turn(prompt=..., messages=[{"role": "system", "content": "s"},
                                                   {"role": "user", "content": "last"}]), 1000, 64)
    assert out["prompt"] == "last"  # derived from the last user message
    assert orjson.loads(out["messages"])[1]["content"] == "last"


@pytest.mark.parametrize("row,code", [
    (turn(response_id=""), "empty_id"),
    (turn(user_id="   "), "empty_id"),
    (turn(response_id=["x"]), "bad_type"),
    (turn(user_id=True), "bad_type"),
    (turn(turn_index=-1), "bad_type"),
    (turn(turn_index="two"), "bad_type"),
    (turn(turn_index=1.5), "bad_type"),
    (turn(response=5), "bad_type"),
    (turn(response="x" * 1001), "too_long"),
    (turn(response_id="x" * 65), "too_long"),
    (turn(response="a\x00b"), "nul_byte"),
    (turn(prompt="bad \udcff byte"), "invalid_utf8"),
    (turn(messages="not json"), "bad_type"),
    (turn(messages={"role": "user"}), "bad_type"),
    (turn(messages=[{"content": "no role"}]), "bad_type"),
    (turn(messages=[]), "bad_type"),
    (turn(metadata=[1, 2]), "bad_type"),
    (turn(created_at="soon"), "bad_timestamp"),
])
def test_turn_rejections(row, code):
    assert code_of(validate_turn, row, 1000, 64) == code


def test_turn_int_ids_and_csv_strings_are_normalised():
    out = validate_turn(turn(response_id=17, turn_index="3", metadata='{"a": 1}'), 1000, 64)
    assert out["response_id"] == "17" and out["turn_index"] == 3 and orjson.loads(out["metadata"]) == {"a": 1}


def test_unknown_turn_fields_are_kept_in_metadata():
    out = validate_turn(turn(app_version="1.2", metadata={"a": 1}), 1000, 64)
    assert orjson.loads(out["metadata"]) == {"app_version": "1.2", "a": 1}


def test_row_hash_tells_content_apart():
    assert validate_turn(turn(), 1000, 64)["row_hash"] != validate_turn(turn(response="other"), 1000, 64)["row_hash"]


@pytest.mark.parametrize("value,expected", [(None, False), (True, True), (False, False), ("true", True),
                                            ("0", False), (1, True), (0.0, False)])
def test_removed_flag(value, expected):
    row = reaction(removed=value) if value is not None else reaction()
    assert validate_reaction(row, 64)["removed"] is expected


@pytest.mark.parametrize("row,code", [
    (reaction(reaction=""), "empty_id"),
    (reaction(reaction=...), "missing_field"),
    (reaction(user_id=...), "missing_field"),
    (reaction(created_at="later"), "bad_timestamp"),
    (reaction(removed="maybe"), "bad_type"),
    (reaction(removed=[1]), "bad_type"),
])
def test_reaction_rejections(row, code):
    assert code_of(validate_reaction, row, 64) == code


def test_reaction_key_is_response_user_reaction_time():
    def key(**kw):
        return reaction_key(validate_reaction(reaction(**kw), 64))

    assert key() == key(reaction="LOVE")
    assert key() != key(created_at=T0_MS + 1)
    assert key() != key(removed=True)
    assert key() != key(user_id="u2")
    assert key() != key(response_id="r2")


@given(st.dictionaries(st.sampled_from(["response_id", "conversation_id", "user_id", "turn_index",
                                        "created_at", "policy", "prompt", "messages", "response",
                                        "reaction", "removed", "metadata", "x"]),
                       st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30),
                                 st.lists(st.text(max_size=5), max_size=3),
                                 st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2))))
def test_validators_never_raise_anything_but_row_error(row):
    """Whatever a row holds, validation either returns columns or raises RowError (never crashes)."""
    for fn in (lambda r: validate_turn(r, 1000, 64), lambda r: validate_reaction(r, 64), infer_kind):
        try:
            fn(row)
        except RowError:
            pass


_values = st.one_of(st.none(), st.booleans(), st.integers(-10**13, 10**13), st.text(max_size=12),
                    st.sampled_from(["", " ", "2026-11-01T12:00:00Z", "2026-11-01 12:00", "1793534400", "\x00",
                                     "love", "LOVE "]),
                    st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]),
                                                    "content": st.text(max_size=5)}), max_size=2))


@given(st.dictionaries(st.sampled_from(["response_id", "conversation_id", "user_id", "turn_index", "created_at",
                                        "policy", "prompt", "messages", "response", "surface", "locale"]),
                       _values), st.booleans())
def test_fast_path_agrees_with_checked_path(row, as_reaction):
    """Whenever the fast path accepts a row, the field-by-field path returns exactly the same columns."""
    if as_reaction:
        row = {k: row[k] for k in ("response_id", "user_id", "created_at") if k in row} | {
            "reaction": row.get("policy", "love"), "removed": row.get("turn_index", False)}
        fast, checked = _fast_reaction(row, 8), _checked_reaction
        args = (row, 8)
    else:
        base = turn()
        base.update(row)
        row = base
        fast, checked = _fast_turn(row, 10, 8), _checked_turn
        args = (row, 10, 8)
    if fast is not None:
        assert checked(*args) == fast


def test_fast_path_takes_the_common_rows():
    assert _fast_turn(turn(messages=[{"role": "user", "content": "hi"}]), 1000, 64) is not None
    assert _fast_reaction(reaction(), 64) is not None
    assert _fast_turn(turn(extra=1), 1000, 64) is None  # extra fields take the checked path
