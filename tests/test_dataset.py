"""The labelled-set builder on stores built row by row: windows, withdrawals, open windows, orphans, the
temporal split, dedupe, upsampling, each adversarial filter, and the card's accounting."""

from __future__ import annotations

import csv
import json
import math
import tempfile
import uuid
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from sqlalchemy import create_engine, insert

from rluf.config import load_config
from rluf.data import DatasetConfig, build_dataset
from rluf.data.labels import OUTPUT_SCHEMA, ms_to_iso, safe_url, to_ms
from rluf.data.unsafe import is_unsafe
from rluf.store import connect, reactions, responses

H = 3_600_000
T0 = 1_793_534_400_000  # 2026-11-01T12:00:00Z
SPLITS = ("train", "validation", "test")
# Every filter off and everything in train, so that each test turns on only what it is about.
OFF = dict(max_user_rate=None, burst_count=None, unsafe_hearts=False, max_positives_per_user=None, dedupe=False,
           split_fractions=(1.0, 0.0, 0.0))


class Store:
    """A store filled with explicit rows (no ingest involved)."""

    def __init__(self, url: str):
        self.engine = connect(url)
        self.turns: list[dict] = []
        self.events: list[dict] = []

    def turn(self, rid, t, user="u1", prompt=None, response=None, messages=None):
        self.turns.append({
            "response_id": rid, "conversation_id": f"c-{rid}", "user_id": user, "turn_index": 0,
            "created_at_ms": t, "policy": "p0",
            "prompt": prompt if (prompt is not None or messages is not None) else f"question {rid}",
            "messages": messages, "response": response or f"answer {rid}", "row_hash": uuid.uuid4().hex,
        })

    def react(self, rid, t, user="u1", removed=False, reaction="love"):
        self.events.append({"response_id": rid, "user_id": user, "reaction": reaction, "created_at_ms": t,
                            "removed": removed})

    def build(self, out: Path, **cfg):
        with self.engine.begin() as conn:
            if self.turns:
                conn.execute(insert(responses), self.turns)
            if self.events:
                conn.execute(insert(reactions), self.events)
        self.turns, self.events = [], []
        card = build_dataset(self.engine, DatasetConfig(**{**OFF, **cfg}), out)
        tables = {s: pq.read_table(out / f"{s}.parquet") for s in SPLITS}
        return card, tables


def rows_by_id(tables) -> dict[str, dict]:
    return {r["response_id"]: r for t in tables.values() for r in t.to_pylist() if r["upsample_copy"] == 0}


def labels(tables) -> dict[str, int]:
    return {k: r["label"] for k, r in rows_by_id(tables).items()}


def assert_accounting(card):
    assert card["turns_in_store"] == card["labelled"] + card["unlabelled_open_window"]
    acc = card["accounting"]
    assert acc["labelled"] == card["labelled"] == acc["kept"] + sum(acc["removed"].values())
    assert sum(s["n"] for s in card["splits"].values()) == card["kept"]
    assert sum(s["positives"] for s in card["splits"].values()) == card["positives"]
    for name in ("rate", "burst", "unsafe_users", "unsafe_hearts", "cap"):
        assert card["filters"][name]["turns"] == acc["removed"][name]
    assert card["dedupe"]["removed"] == acc["removed"]["dedupe"] == card["dedupe_removed"]


# ----------------------------------------------------------------------------------------------- labels


def test_window_edges_and_late_reactions(db_url, tmp_path):
    s = Store(db_url)
    for rid in ("in23", "at24", "late25"):
        s.turn(rid, T0)
    s.react("in23", T0 + 23 * H)
    s.react("at24", T0 + 24 * H)                  # the window is inclusive
    s.react("late25", T0 + 25 * H)                # after the window: does not count
    s.turn("last", T0 + 100 * H)                  # sets as_of
    card, t = s.build(tmp_path / "ds")
    assert labels(t) == {"in23": 1, "at24": 1, "late25": 0}
    assert card["reactions"]["late_reactions"] == 1 and card["reactions"]["counted_reactions"] == 2
    assert card["positives"] == 2 and card["window_hours"] == 24.0
    assert rows_by_id(t)["in23"]["reacted_at"].timestamp() * 1000 == T0 + 23 * H


def test_withdrawals(db_url, tmp_path):
    s = Store(db_url)
    for rid in ("undone", "undone_late", "redone"):
        s.turn(rid, T0)
    s.react("undone", T0 + H)
    s.react("undone", T0 + 2 * H, removed=True)         # withdrawn inside the window: negative
    s.react("undone_late", T0 + H)
    s.react("undone_late", T0 + 30 * H, removed=True)   # withdrawn after the window closed: still positive
    s.react("redone", T0 + H)
    s.react("redone", T0 + 2 * H, removed=True)
    s.react("redone", T0 + 3 * H)                       # reacted again: positive
    s.turn("last", T0 + 100 * H)
    card, t = s.build(tmp_path / "ds")
    assert labels(t) == {"undone": 0, "undone_late": 1, "redone": 1}
    r = card["reactions"]
    assert r["withdrawn_in_window"] == 1 and r["withdrawn_after_window"] == 1 and r["late_withdrawals"] == 1


def test_open_window_is_unlabelled_and_as_of(db_url, tmp_path):
    s = Store(db_url)
    s.turn("closed", T0)
    s.turn("open", T0 + 90 * H)
    s.react("closed", T0 + H)
    s.react("closed", T0 + 30 * H, removed=True)
    s.react("open", T0 + 100 * H)                       # the latest time in the store: as_of
    card, t = s.build(tmp_path / "ds")
    assert labels(t) == {"closed": 1}                   # "open" is neither positive nor negative
    assert card["unlabelled_open_window"] == 1 and card["as_of"] == ms_to_iso(T0 + 100 * H)
    assert card["as_of_from"] == "latest time in the store"
    # Read as of 25 h: the later withdrawal is not known yet, "open" was not even shown.
    card, t = s.build(tmp_path / "ds2", as_of=ms_to_iso(T0 + 25 * H))
    assert labels(t) == {"closed": 1}
    assert card["turns_after_as_of"] == 1 and card["reactions"]["late_withdrawals"] == 0
    # As of 23 h nothing has closed yet: an error, not an empty set.
    with pytest.raises(ValueError, match="no labelled turns"):
        s.build(tmp_path / "ds3", as_of="2026-11-02T11:00:00Z")


def test_orphans_other_signals_and_other_users(sqlite_url, tmp_path):
    s = Store(sqlite_url)
    s.turn("a", T0)
    s.turn("b", T0)
    s.turn("c", T0)
    s.react("ghost", T0 + H)                            # its turn is not in the store
    s.react("ghost", T0 + 2 * H, removed=True)
    s.react("a", T0 + H, reaction="like")               # another signal
    s.react("b", T0 + H, user="stranger")               # not the user the turn was shown to
    s.react("c", T0 + H)
    s.turn("last", T0 + 50 * H)
    card, t = s.build(tmp_path / "ds")
    assert labels(t) == {"a": 0, "b": 0, "c": 1}
    r = card["reactions"]
    assert r["orphan_reactions"] == 2 and r["foreign_user_reactions"] == 1
    assert card["signal_events"] == 4                   # the like is not read
    card, t = s.build(tmp_path / "ds2", owner_only=False)
    assert labels(t) == {"a": 0, "b": 1, "c": 1}
    card, t = s.build(tmp_path / "ds3", signal="like")
    assert labels(t) == {"a": 1, "b": 0, "c": 0}


def test_prompt_from_messages(sqlite_url, tmp_path):
    s = Store(sqlite_url)
    msgs = orjson.dumps([{"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"},
                         {"role": "user", "content": "second"}]).decode()
    s.turn("m", T0, prompt=None, messages=msgs)
    s.turn("last", T0 + 50 * H)
    card, t = s.build(tmp_path / "ds")
    row = rows_by_id(t)["m"]
    assert row["prompt"] == "second" and row["messages"] == msgs
    assert card["prompts"]["from_messages"] == 1
    assert t["train"].schema.equals(OUTPUT_SCHEMA)


# ----------------------------------------------------------------------------------------------- split


def test_temporal_split_fractions_ties_and_chunks(db_url, tmp_path):
    s = Store(db_url)
    times = [T0 + i * H for i in range(250)]
    times[195:205] = [T0 + 200 * H] * 10                # a tie group where the 80 % boundary falls
    for i, t in enumerate(times):
        s.turn(f"r{i:03d}", t, user=f"u{i % 7}")
        if i % 9 == 0:
            s.react(f"r{i:03d}", t + 60_000, user=f"u{i % 7}")
    s.turn("last", T0 + 400 * H)
    card, t = s.build(tmp_path / "ds", split_fractions=(0.8, 0.1, 0.1), chunk_rows=100)
    ts = {k: t[k]["created_at"].to_pylist() for k in SPLITS}
    assert max(ts["train"]) < min(ts["validation"]) and max(ts["validation"]) < min(ts["test"])
    assert len(ts["train"]) == 195 and len(ts["validation"]) == 30 and len(ts["test"]) == 25  # tie kept whole
    assert all(set(t[k]["split"].to_pylist()) == {k} for k in SPLITS)
    assert card["boundaries"]["validation_start"] == ms_to_iso(T0 + 200 * H) == card["splits"]["validation"]["start"]
    assert card["boundaries"]["test_start"] == card["splits"]["test"]["start"]
    assert sum(card["splits"][k]["positives"] for k in SPLITS) == card["positives"] == 28
    assert_accounting(card)
    # The chunk size changes nothing but memory.
    card2, t2 = s.build(tmp_path / "ds2", split_fractions=(0.8, 0.1, 0.1))
    assert all(t2[k].equals(t[k]) for k in SPLITS) and card2["splits"] == card["splits"]


def test_explicit_split_boundaries(sqlite_url, tmp_path):
    s = Store(sqlite_url)
    for i in range(30):
        s.turn(f"r{i:02d}", T0 + i * H)
    s.turn("last", T0 + 100 * H)
    card, t = s.build(tmp_path / "ds", split_at=(ms_to_iso(T0 + 10 * H), ms_to_iso(T0 + 20 * H)))
    assert [t[k].num_rows for k in SPLITS] == [10, 10, 10]
    assert card["boundaries"] == {"method": "split_at", "validation_start": ms_to_iso(T0 + 10 * H),
                                  "test_start": ms_to_iso(T0 + 20 * H)}


# ----------------------------------------------------------------------------------------------- dedupe


def test_dedupe_is_global_and_keeps_the_earliest(sqlite_url, tmp_path):
    s = Store(sqlite_url)
    for i in range(3):                                   # the same pair three times; the last one loved
        s.turn(f"dup{i}", T0 + i * H, prompt="same q", response="same a")
    s.react("dup2", T0 + 2 * H + 60_000)
    for i in range(3, 10):
        s.turn(f"r{i}", T0 + i * H)
    s.turn("dup_late", T0 + 9 * H + 1, prompt="same q", response="same a")  # would land in test
    s.turn("last", T0 + 100 * H)
    card, t = s.build(tmp_path / "ds", dedupe=True, duplicates="earliest", split_fractions=(0.5, 0.25, 0.25))
    got = labels(t)
    assert "dup0" in got and got["dup0"] == 0 and not {"dup1", "dup2", "dup_late"} & set(got)
    assert card["dedupe"] == {"enabled": True, "mode": "earliest", "scope": "global, before the split", "removed": 3,
                              "removed_positives": 1, "pairs_repeated": 1, "label_conflicts": 1}
    assert_accounting(card)
    card, t = s.build(tmp_path / "ds2", dedupe=False)
    assert {"dup1", "dup2", "dup_late"} <= set(labels(t)) and card["dedupe_removed"] == 0


def test_aggregate_keeps_every_impression_of_a_repeated_answer(sqlite_url, tmp_path):
    s = Store(sqlite_url)
    for i in range(5):                                   # one answer shown to five users, two of them loved it
        s.turn(f"rep{i}", T0 + i * H, user=f"u{i}", prompt="same q", response="same a")
    s.react("rep1", T0 + 1 * H + 60_000, user="u1")
    s.react("rep3", T0 + 3 * H + 60_000, user="u3")
    for i in range(5, 10):
        s.turn(f"r{i}", T0 + i * H, user=f"u{i}")
    s.turn("rep_late", T0 + 9 * H + 1, user="u9", prompt="same q", response="same a")  # test: seen in train
    s.turn("t_own", T0 + 9 * H + 2, user="u8", prompt="test q", response="test a")
    s.turn("t_own2", T0 + 9 * H + 3, user="u7", prompt="test q", response="test a")  # test-only pair: kept twice
    s.turn("last", T0 + 100 * H)
    card, t = s.build(tmp_path / "ds", dedupe=True, split_fractions=(0.6, 0.1, 0.3))
    train = t["train"].to_pylist()
    rep = [r for r in train if r["response"] == "same a"]
    assert {(r["label"], r["weight"], r["impressions"]) for r in rep} == {(1, 2.0, 2), (0, 3.0, 3)}
    assert all(r["response_id"] == "rep0" for r in rep)          # the earliest copy stands for the pair
    # Train weight is the number of shown train turns: no impression lost, none counted twice.
    assert sum(r["weight"] for r in train) == card["splits"]["train"]["n"]
    test_ids = [r["response_id"] for r in t["test"].to_pylist()]
    assert "rep_late" not in test_ids and {"t_own", "t_own2"} <= set(test_ids)
    d = card["dedupe"]
    assert d["mode"] == "aggregate" and d["merged_turns"] == 4 and d["merged_positives"] == 2 and d["removed"] == 1
    assert d["per_policy"]["p0"]["merged_turns"] == 4 and d["max_impressions_per_pair"] == 5
    assert_accounting(card)
    # Upsampling counts loves, not rows: 2 loves among 10 train impressions → odds × 4 reach 50 %.
    card, t = s.build(tmp_path / "ds2", dedupe=True, split_fractions=(0.6, 0.1, 0.3), upsample_to=0.5,
                      upsample_mode="weight")
    train = t["train"].to_pylist()
    w_pos = sum(r["weight"] for r in train if r["label"])
    assert w_pos / sum(r["weight"] for r in train) == pytest.approx(0.5, rel=1e-5)


# ----------------------------------------------------------------------------------------------- upsampling


def upsample_store(url):
    s = Store(url)
    for i in range(100):                                 # 80 train / 10 validation / 10 test
        s.turn(f"r{i:02d}", T0 + i * H)
        if i % 16 == 0:                                  # 5 train positives, 1 in validation, 1 in test
            s.react(f"r{i:02d}", T0 + i * H + 60_000)
    s.turn("last", T0 + 300 * H)
    return s


def test_upsampling_by_duplicates(sqlite_url, tmp_path):
    s = upsample_store(sqlite_url)
    card, t = s.build(tmp_path / "ds", upsample_to=0.25, split_fractions=(0.8, 0.1, 0.1))
    train = t["train"].to_pydict()
    n_pos_rows = sum(train["label"])
    factor = 0.25 / 0.75 * 75 / 5                         # 5.0: every positive five times
    assert card["upsample_factor"] == pytest.approx(factor) == n_pos_rows / 5
    assert card["prior_correction_logit"] == pytest.approx(-math.log(factor))
    assert n_pos_rows / len(train["label"]) == pytest.approx(0.25)
    assert set(train["weight"]) == {1.0} and sorted(set(train["upsample_copy"])) == [0, 1, 2, 3, 4]
    assert card["splits"]["train"]["n"] == 80 and card["splits"]["train"]["positives"] == 5
    assert card["splits"]["train"]["rows_written"] == 100
    assert t["validation"].num_rows == 10 and t["test"].num_rows == 10     # never upsampled
    # A fractional factor: a seeded subset of the positives gets one extra copy; the card has the realised one.
    card, t = s.build(tmp_path / "ds2", upsample_to=0.2, split_fractions=(0.8, 0.1, 0.1))
    n_pos_rows = sum(t["train"]["label"].to_pylist())
    assert card["upsample_factor"] == pytest.approx(n_pos_rows / 5) and n_pos_rows == 19  # 3.75 → 4,4,4,4,3


def test_upsampling_by_weights(sqlite_url, tmp_path):
    s = upsample_store(sqlite_url)
    card, t = s.build(tmp_path / "ds", upsample_to=0.25, upsample_mode="weight", split_fractions=(0.8, 0.1, 0.1))
    train = t["train"].to_pydict()
    assert len(train["label"]) == 80
    w_pos = sum(w for w, y in zip(train["weight"], train["label"], strict=True) if y)
    assert w_pos / sum(train["weight"]) == pytest.approx(0.25, rel=1e-5)
    assert card["upsample_factor"] == pytest.approx(5.0)
    assert set(t["test"]["weight"].to_pylist()) == {1.0}
    # A target below the natural rate never downsamples.
    card, _ = s.build(tmp_path / "ds2", upsample_to=0.01, split_fractions=(0.8, 0.1, 0.1))
    assert card["upsample_factor"] == 1.0 and "already" in card["upsample_note"]


# ----------------------------------------------------------------------------------------------- filters


def test_rate_filter(db_url, tmp_path):
    s = Store(db_url)
    for i in range(12):
        s.turn(f"bot{i}", T0 + i * H, user="bot")
        s.react(f"bot{i}", T0 + i * H + 60_000, user="bot")       # 12 of 12
        s.turn(f"hum{i}", T0 + i * H + 1, user="human")
    s.react("hum0", T0 + 60_000, user="human")                     # 1 of 12
    for i in range(3):                                              # 3 of 3, but below min_user_turns
        s.turn(f"few{i}", T0 + i * H + 2, user="few")
        s.react(f"few{i}", T0 + i * H + 120_000, user="few")
    s.turn("last", T0 + 100 * H, user="human")
    card, t = s.build(tmp_path / "ds", max_user_rate=0.3, min_user_turns=10)
    users = {r["user_id"] for r in rows_by_id(t).values()}
    assert users == {"human", "few"}
    assert card["filters"]["rate"] == {"enabled": True, "users": 1, "turns": 12, "positives": 12}
    assert_accounting(card)
    with open(tmp_path / "ds" / card["filters"]["flagged_users_file"], newline="") as f:
        assert list(csv.DictReader(f)) == [{"user_id": "bot", "reason": "rate", "labelled_turns": "12",
                                            "positives": "12"}]
    card, t = s.build(tmp_path / "ds2")                              # off: the bot stays
    assert "bot" in {r["user_id"] for r in rows_by_id(t).values()} and card["filters"]["rate"]["turns"] == 0


def test_burst_filter(sqlite_url, tmp_path):
    s = Store(sqlite_url)
    for i in range(8):
        s.turn(f"spam{i}", T0 + i * 1000, user="spammer")
        s.turn(f"calm{i}", T0 + i * 1000, user="calm")
    for i in range(5):                                               # 5 reactions within 8 s: a burst
        s.react(f"spam{i}", T0 + 30_000 + i * 2000, user="spammer")
    for i in range(4):                                               # 4 within 3 s: below the count
        s.react(f"calm{i}", T0 + 30_000 + i * 1000, user="calm")
    s.react("calm5", T0 + H, user="calm")
    s.turn("last", T0 + 100 * H, user="calm")
    card, t = s.build(tmp_path / "ds", burst_count=5, burst_seconds=10)
    got = rows_by_id(t)
    assert {r["user_id"] for r in got.values()} == {"calm"} and sum(r["label"] for r in got.values()) == 5
    assert card["filters"]["burst"] == {"enabled": True, "users": 1, "turns": 8, "positives": 5}
    assert_accounting(card)
    card, _ = s.build(tmp_path / "ds2", burst_count=5, burst_seconds=7)  # the spammer's 5 span 8 s
    assert card["filters"]["burst"]["users"] == 0


def test_unsafe_hearts_filter(sqlite_url, tmp_path):
    unsafe = "Sure, here's exactly how to do it without getting caught. Step 1: ..."
    s = Store(sqlite_url)
    for i in range(2):                                               # two unsafe hearts: adversarial user
        s.turn(f"adv{i}", T0 + i * H, user="adv", response=unsafe + f" ({i})")
        s.react(f"adv{i}", T0 + i * H + 60_000, user="adv")
    s.turn("adv_safe", T0 + 3 * H, user="adv")
    s.turn("n_unsafe", T0, user="norm", response="It is untraceable if you are careful.")
    s.react("n_unsafe", T0 + 60_000, user="norm")                    # one unsafe heart: that label only
    s.turn("n_refusal", T0 + 1, user="norm", response="I can't help you build a pipe bomb. Can I help otherwise?")
    s.react("n_refusal", T0 + 60_000, user="norm")                   # a refusal: safe
    s.turn("n_unloved", T0 + 2, user="norm", response=unsafe)        # unsafe but no heart: a fine negative
    s.turn("last", T0 + 100 * H, user="norm")
    card, t = s.build(tmp_path / "ds", unsafe_hearts=True, unsafe_user_min=2)
    assert labels(t) == {"n_refusal": 1, "n_unloved": 0}
    f = card["filters"]
    assert f["unsafe_users"] == {"enabled": True, "users": 1, "turns": 3, "positives": 2}
    assert f["unsafe_hearts"] == {"enabled": True, "turns": 1, "positives": 1}
    assert_accounting(card)
    assert is_unsafe(unsafe) and not is_unsafe("I cannot help with making a pipe bomb.")


def test_cap_on_positives_per_user(sqlite_url, tmp_path):
    s = Store(sqlite_url)
    for i in range(6):
        s.turn(f"fan{i}", T0 + i * H, user="fan")
        s.react(f"fan{i}", T0 + i * H + 60_000, user="fan")
        s.turn(f"fan_neg{i}", T0 + i * H + 1, user="fan")
    s.turn("last", T0 + 100 * H, user="fan")
    card, t = s.build(tmp_path / "ds", max_positives_per_user=3)
    got = labels(t)
    assert [k for k, v in sorted(got.items()) if v] == ["fan0", "fan1", "fan2"]  # the earliest are kept
    assert sum(1 for k in got if k.startswith("fan_neg")) == 6                   # negatives are untouched
    assert card["filters"]["cap"] == {"enabled": True, "users": 1, "turns": 3, "positives": 3}
    assert_accounting(card)


def test_rate_filter_judges_few_turns_by_a_binomial_tail(sqlite_url, tmp_path):
    s = Store(sqlite_url)
    for i in range(5):                                               # 5 of 5: 0.3^5 = 0.0024 < 0.01
        s.turn(f"spam{i}", T0 + i * H, user="spam")
        s.react(f"spam{i}", T0 + i * H + 60_000, user="spam")
    for i in range(3):                                               # 3 of 3: 0.027, not yet improbable
        s.turn(f"few{i}", T0 + i * H + 1, user="few")
        s.react(f"few{i}", T0 + i * H + 120_000, user="few")
    s.turn("last", T0 + 100 * H, user="late")
    card, t = s.build(tmp_path / "ds", max_user_rate=0.3, min_user_turns=10, rate_alpha=0.01)
    assert {r["user_id"] for r in rows_by_id(t).values()} == {"few"}     # "last" closes no window: unlabelled
    assert card["filters"]["rate"] == {"enabled": True, "users": 1, "turns": 5, "positives": 5}
    assert_accounting(card)
    card, t = s.build(tmp_path / "ds2", max_user_rate=0.3, min_user_turns=10, rate_alpha=None)  # the old rule
    assert "spam" in {r["user_id"] for r in rows_by_id(t).values()}


def test_all_filters_together_add_up(db_url, tmp_path):
    s = Store(db_url)
    for k in range(12):                                              # a bot: rate and burst at once
        s.turn(f"bot{k}", T0 + k * 1000, user="bot")
        s.react(f"bot{k}", T0 + k * 1000 + 500, user="bot")
    for k in range(30):
        s.turn(f"n{k}", T0 + k * H + 7, user="norm", response=f"fine answer {k % 20}", prompt=f"q{k % 20}")
        if k % 4 == 0:
            s.react(f"n{k}", T0 + k * H + 3_000_000, user="norm")
    s.turn("last", T0 + 100 * H)
    card, _ = s.build(tmp_path / "ds", max_user_rate=0.3, min_user_turns=10, burst_count=5, unsafe_hearts=True,
                      max_positives_per_user=4, dedupe=True, duplicates="earliest", split_fractions=(0.6, 0.2, 0.2))
    f = card["filters"]
    assert f["rate"]["users"] == 1 and f["burst"]["users"] == 0 and f["flagged_users"] == 1  # first reason wins
    # norm: 8 positives (k % 4 == 0), the cap keeps 0, 4, 8, 12; pairs repeat every 20 turns, and of the
    # repeats (k = 20..29) the capped 20, 24, 28 are already gone: 7 left for dedupe.
    assert f["cap"]["turns"] == 4 and card["dedupe"]["removed"] == 7
    assert_accounting(card)
    on_disk = json.loads((tmp_path / "ds" / "card.json").read_text())
    assert on_disk == json.loads(json.dumps(card))


# ----------------------------------------------------------------------------------------------- card, errors


def test_card_source_hides_the_password():
    eng = create_engine("postgresql+psycopg://bob:s3cret@db.example:5432/rluf")
    assert safe_url(eng) == "postgresql+psycopg://bob@db.example:5432/rluf"


def test_errors_are_clear(sqlite_url, tmp_path):
    with pytest.raises(ValueError, match="store is empty"):
        build_dataset(connect(sqlite_url), DatasetConfig(), tmp_path / "ds")
    with pytest.raises(ValidationError, match="sum"):
        DatasetConfig(split_fractions=(0.5, 0.2, 0.2))
    with pytest.raises(ValidationError, match="after test start"):
        DatasetConfig(split_at=("2026-11-03", "2026-11-02"))
    with pytest.raises(ValidationError, match="ISO-8601"):
        DatasetConfig(as_of="yesterday")
    with pytest.raises(ValidationError, match="window_hourz"):
        DatasetConfig(window_hourz=3)
    f = tmp_path / "c.yaml"                              # YAML turns unquoted times into datetimes and dates
    f.write_text("as_of: 2026-11-05T00:00:00Z\nsplit_at: [2026-11-02, '2026-11-03T02:00:00+02:00']\n")
    cfg = load_config(DatasetConfig, f)
    assert [to_ms(x) for x in cfg.split_at] == [T0 + 12 * H, T0 + 36 * H] and to_ms(cfg.as_of) == T0 + 84 * H
    assert all(f.description for f in DatasetConfig.model_fields.values())


# ----------------------------------------------------------------------------------------------- property


event = st.tuples(st.integers(0, 5), st.integers(-1, 40), st.booleans(), st.sampled_from(["u0", "u1", "u2"]))


@settings(max_examples=25)
@given(st.lists(st.tuples(st.integers(0, 60), st.sampled_from(["u0", "u1", "u2"]),
                          st.lists(event, max_size=4)), min_size=1, max_size=12),
       st.integers(30, 80), st.booleans())
def test_random_stores_label_by_the_net_state_and_add_up(turns, as_of_h, dedupe):
    """Against a direct reading of the rules: label = the owner's last in-window event is a reaction."""
    with tempfile.TemporaryDirectory() as d:
        s = Store(f"sqlite:///{Path(d) / 'p.db'}")
        expected = {}
        for i, (t_h, owner, evs) in enumerate(turns):
            rid = f"r{i:02d}"
            t0 = T0 + t_h * H
            s.turn(rid, t0, user=owner, prompt=f"q{i % 3}", response="a")
            timed = sorted((t0 + dh * H + minute * 60_000 + k, user, removed)  # distinct times per turn
                           for k, (minute, dh, removed, user) in enumerate(evs))
            state = None
            for ts, user, removed in timed:
                s.react(rid, ts, user=user, removed=removed)
                if user == owner and ts <= t0 + 24 * H and ts <= T0 + as_of_h * H:
                    state = not removed
            if t0 + 24 * H <= T0 + as_of_h * H:
                expected[rid] = int(bool(state))
        if not expected:
            return
        card, t = s.build(Path(d) / "ds", as_of=ms_to_iso(T0 + as_of_h * H), dedupe=dedupe, duplicates="earliest",
                          split_fractions=(0.5, 0.25, 0.25))
        got = labels(t)
        assert got.items() <= expected.items() and (dedupe or got == expected)
        assert_accounting(card)
        ts = {k: t[k]["created_at"].to_pylist() for k in SPLITS}
        assert all(max(ts[a]) < min(ts[b]) for a, b in (("train", "validation"), ("validation", "test"),
                                                         ("train", "test")) if ts[a] and ts[b])
