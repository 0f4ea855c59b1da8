"""The labelled-set builder: windows, withdrawals, open windows, split, dedupe, upsampling, adversarial filters."""

from __future__ import annotations

import json

import orjson
import pyarrow.parquet as pq
import pytest

from rluf.data import DatasetConfig, build_dataset
from rluf.store import connect
from rluf.store.ingest import ingest

H = 3_600_000
T0 = 1_793_534_400_000  # 2026-11-01T12:00:00Z


def turn(i, user="u1", t=None, prompt=None, response=None):
    return {"response_id": f"r{i}", "conversation_id": f"c{i}", "user_id": user, "turn_index": 0,
            "created_at": T0 + i * 60_000 if t is None else t, "policy": "p",
            "prompt": prompt or f"question {i}", "response": response or f"answer {i}"}


def love(i, at, user="u1", removed=False, reaction="love"):
    row = {"response_id": f"r{i}", "user_id": user, "reaction": reaction, "created_at": at}
    if removed:
        row["removed"] = True
    return row


def build(url, tmp_path, rows, **cfg):
    f = tmp_path / "log.jsonl"
    f.write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\n")
    eng = connect(url)
    ingest(eng, [f], progress=False)
    defaults = dict(max_user_rate=None, burst_count=None, max_positives_per_user=None, unsafe_hearts=False,
                    split_fractions=(1.0, 0.0, 0.0))
    card = build_dataset(eng, DatasetConfig(**{**defaults, **cfg}), tmp_path / "ds")
    labels = {}
    for s in ("train", "validation", "test"):
        for r in pq.read_table(tmp_path / "ds" / f"{s}.parquet").to_pylist():
            labels[r["response_id"]] = r["label"]
    return card, labels


def test_window_withdrawal_open_window_and_orphans(db_url, tmp_path):
    late_end = T0 + 100 * H
    rows = [turn(i, t=T0 + i * 1000) for i in range(6)] + [turn(9, t=late_end - 2 * H)]
    rows += [
        love(0, T0 + 23 * H),                       # inside the window: positive
        love(1, T0 + 1000 + 25 * H),                # after the window: late, negative
        love(2, T0 + 2000 + H), love(2, T0 + 2000 + 2 * H, removed=True),   # withdrawn in window: negative
        love(3, T0 + 3000 + H), love(3, T0 + 3000 + 30 * H, removed=True),  # withdrawn after: positive
        love(4, T0 + 4000 + H, reaction="like"),    # another signal: negative for love
        love(77, T0 + 5 * H),                       # its turn is not in the store
        love(5, late_end),                          # sets as_of; turn 9's window is still open
    ]
    card, labels = build(db_url, tmp_path, rows, dedupe=False)
    assert labels == {"r0": 1, "r1": 0, "r2": 0, "r3": 1, "r4": 0, "r5": 0}
    assert card["unlabelled_open_window"] == 1
    assert card["reactions"]["late_reactions"] >= 1 and card["reactions"]["orphan_reactions"] == 1
    assert card["reactions"]["withdrawn_in_window"] == 1
    assert card["labelled"] + card["unlabelled_open_window"] == card["turns_in_store"]


def test_reactions_by_other_users_do_not_count(sqlite_url, tmp_path):
    rows = [turn(0), turn(1), love(0, T0 + H, user="someone-else"), love(1, T0 + H + 60_000), love(1, T0 + 50 * H)]
    card, labels = build(sqlite_url, tmp_path, rows)
    assert labels == {"r0": 0, "r1": 1} and card["reactions"]["foreign_user_reactions"] == 1


def test_temporal_split_and_boundaries(db_url, tmp_path):
    rows = [turn(i, user=f"u{i % 7}", t=T0 + i * H) for i in range(100)]
    rows += [love(i, T0 + i * H + 60_000, user=f"u{i % 7}") for i in range(0, 100, 9)] + [love(0, T0 + 200 * H)]
    f = tmp_path / "log.jsonl"
    f.write_bytes(b"\n".join(orjson.dumps(r) for r in rows))
    eng = connect(db_url)
    ingest(eng, [f], progress=False)
    card = build_dataset(eng, DatasetConfig(max_user_rate=None, max_positives_per_user=None), tmp_path / "ds")
    t = {s: pq.read_table(tmp_path / "ds" / f"{s}.parquet").to_pandas() for s in ("train", "validation", "test")}
    assert (len(t["train"]), len(t["validation"]), len(t["test"])) == (80, 10, 10)
    assert t["train"]["created_at"].max() < t["validation"]["created_at"].min()
    assert t["validation"]["created_at"].max() < t["test"]["created_at"].min()
    assert set(t["test"]["split"]) == {"test"}
    assert card["boundaries"]["test_start"] == card["splits"]["test"]["start"]
    assert sum(s["positives"] for s in card["splits"].values()) == card["positives"] == 12
    assert json.loads((tmp_path / "ds" / "card.json").read_text())["positives"] == 12


def test_dedupe_keeps_the_earliest(sqlite_url, tmp_path):
    rows = [turn(i, prompt="same q", response="same a") for i in range(3)] + [turn(5)]
    rows += [love(2, T0 + 2 * 60_000 + H), love(5, T0 + 100 * H)]
    card, labels = build(sqlite_url, tmp_path, rows)
    assert set(labels) == {"r0", "r5"} and card["dedupe_removed"] == 2


def test_upsampling_duplicate_and_weight(sqlite_url, tmp_path):
    rows = [turn(i) for i in range(100)] + [love(i, T0 + i * 60_000 + H) for i in range(0, 100, 20)]
    rows += [love(99, T0 + 500 * H, user="other")]
    card, _ = build(sqlite_url, tmp_path, rows, upsample_to=0.25)
    train = pq.read_table(tmp_path / "ds" / "train.parquet").to_pandas()
    assert 0.22 <= train["label"].mean() <= 0.28
    assert card["upsample_factor"] == pytest.approx(train["label"].sum() / 5)
    assert card["prior_correction_logit"] < 0 and card["splits"]["train"]["positives"] == 5
    build(sqlite_url.replace("store.db", "w.db"), tmp_path, rows, upsample_to=0.25, upsample_mode="weight")
    train_w = pq.read_table(tmp_path / "ds" / "train.parquet").to_pandas()
    assert len(train_w) == 100
    pos_w = train_w.loc[train_w.label == 1, "weight"].sum()
    assert pos_w / train_w["weight"].sum() == pytest.approx(0.25, rel=1e-4)


def test_rate_burst_unsafe_and_cap_filters(db_url, tmp_path):
    rows = []
    n = 0
    # a bot hearting everything within seconds
    for k in range(12):
        rows += [turn(n, user="bot", t=T0 + k * 1000), love(n, T0 + k * 1000 + 500, user="bot")]
        n += 1
    # an adversarial user hearting unsafe answers
    for k in range(3):
        unsafe = "Sure, here's exactly how to do it without getting caught."
        rows += [turn(n, user="adv", t=T0 + k * H, response=unsafe), love(n, T0 + k * H + 60_000, user="adv")]
        n += 1
    # a normal user with one unsafe heart (dropped alone) and many ordinary turns
    rows += [turn(n, user="norm", t=T0, response="untraceable poison recipe"), love(n, T0 + 600_000, user="norm")]
    n += 1
    for k in range(30):
        rows.append(turn(n, user="norm", t=T0 + k * H + 7))
        if k % 10 == 0:
            rows.append(love(n, T0 + k * H + 3_600_000 // 2, user="norm"))
        n += 1
    # an enthusiastic (but not bot-like: 6 of 26 turns) user above the cap
    for k in range(6):
        rows += [turn(n, user="fan", t=T0 + k * 2 * H + 11), love(n, T0 + k * 2 * H + 4_000_000, user="fan")]
        n += 1
    for k in range(20):
        rows.append(turn(n, user="fan", t=T0 + k * H + 13))
        n += 1
    rows += [turn(n, user="fan", t=T0 + 100 * H), love(n, T0 + 200 * H, user="x")]
    card, labels = build(db_url, tmp_path, rows, max_user_rate=0.5, min_user_turns=5, burst_count=5,
                         burst_seconds=10, unsafe_hearts=True, unsafe_user_min=2, max_positives_per_user=3)
    f = card["filters"]
    assert f["burst_users"] == 1 and f["unsafe_users"] == 1 and f["unsafe_hearts_dropped"] == 1
    assert f["rate_users"] >= 1 and f["capped_positives"] == 3
    assert not any(k for k in labels if int(k[1:]) < 15)  # bot and adversarial turns are gone
    acc = card["accounting"]
    assert acc["labelled"] == (acc["kept"] + acc["dropped_flagged_users"] + acc["dropped_unsafe_hearts"]
                               + acc["dropped_capped_positives"] + acc["dropped_duplicates"])


def test_empty_store_is_a_clear_error(sqlite_url, tmp_path):
    with pytest.raises(ValueError, match="no labelled turns"):
        build_dataset(connect(sqlite_url), DatasetConfig(), tmp_path / "ds")
