"""Ingest, idempotency, quarantine, orphan reactions and the export round trip, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from rluf.config import IngestConfig
from rluf.store import connect, create_schema, quarantine, reactions, responses, schema_version
from rluf.store.export import export_store
from rluf.store.ingest import ingest, orphan_reactions

TEXTS = [
    'She said "hi" and \'bye\'',
    "Robert'); DROP TABLE responses;--",
    "1 OR 1=1; SELECT * FROM reactions",
    "emoji ❤️🔥👍🏽 and ZWJ 👩‍👩‍👧",
    "עברית מימין לשמאל, العربية من اليمين",
    "multi\nline\r\ntext\twith tabs",
    "back\\slash and %s %(x)s ? :param",
]


def turn(i, **kw):
    row = {"response_id": f"r{i}", "conversation_id": f"c{i // 3}", "user_id": f"u{i % 5}", "turn_index": i % 3,
           "created_at": 1_793_534_400 + 60 * i, "policy": "ref", "prompt": f"question {i}",
           "response": TEXTS[i % len(TEXTS)]}
    row.update(kw)
    return row


def reaction(i, **kw):
    row = {"response_id": f"r{i}", "user_id": f"u{i % 5}", "reaction": "love",
           "created_at": "2026-11-01T13:00:00Z"}
    row.update(kw)
    return row


def write_jsonl(path: Path, rows, gz=False) -> Path:
    data = b"".join((r if isinstance(r, bytes) else orjson.dumps(r)) + b"\n" for r in rows)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def counts(url):
    eng = connect(url)
    with eng.connect() as c:
        return tuple(c.execute(select(func.count()).select_from(t)).scalar_one()
                     for t in (responses, reactions, quarantine))


def table_dump(url):
    eng = connect(url)
    with eng.connect() as c:
        turns = [tuple(r) for r in c.execute(select(responses).order_by(responses.c.response_id))]
        reacts = [tuple(r)[1:] for r in c.execute(select(reactions).order_by(
            reactions.c.created_at_ms, reactions.c.response_id, reactions.c.user_id, reactions.c.removed))]
        quar = [tuple(r)[2:] for r in c.execute(
            select(quarantine.c.id, quarantine.c.created_at_ms, quarantine.c.source_sha256, quarantine.c.line,
                   quarantine.c.reason, quarantine.c.raw).order_by(quarantine.c.line))]
    return turns, reacts, quar


def assert_adds_up(res):
    assert res["read"] == res["accepted"] + res["duplicates"] + res["quarantined"]
    for f in res["files"]:
        assert f["read"] == f["accepted"] + f["duplicates"] + f["quarantined"]


def test_schema_twice_is_harmless(db_url):
    eng = connect(db_url)
    create_schema(eng)
    create_schema(eng)
    with eng.connect() as c:
        assert c.execute(select(func.count()).select_from(schema_version)).scalar_one() == 1


def test_ingest_counts_and_idempotent_reingest(db_url, tmp_path):
    rows = [turn(i) for i in range(20)] + [turn(3)] + [reaction(i) for i in range(0, 20, 2)] + [reaction(0)]
    rows += [b"not json", b"[1, 2]", orjson.dumps(turn(99, user_id="")), orjson.dumps(reaction(1, created_at="x"))]
    f = write_jsonl(tmp_path / "log.jsonl", rows)
    eng = connect(db_url)
    res = ingest(eng, [f], progress=False)
    assert_adds_up(res)
    assert (res["read"], res["accepted"], res["duplicates"], res["quarantined"]) == (36, 30, 2, 4)
    assert counts(db_url) == (20, 10, 4)
    before = table_dump(db_url)
    again = ingest(eng, [f], progress=False)
    assert_adds_up(again)
    assert (again["accepted"], again["duplicates"], again["quarantined"]) == (0, 32, 4)
    assert table_dump(db_url) == before  # nothing changed, quarantine included


def test_quarantine_keeps_reason_line_and_raw(db_url, tmp_path):
    bad = b'{"response_id": "r1", "user_id": "u1", "reaction": "love", "created_at": "tomorrow"}'
    f = write_jsonl(tmp_path / "q.jsonl", [turn(1), bad, b"\xff\xfe broken"])
    ingest(connect(db_url), [f], progress=False)
    _, _, quar = table_dump(db_url)
    assert [q[1] for q in quar] == [2, 3]  # lines
    assert quar[0][2].startswith("bad_timestamp: field 'created_at'") and quar[0][3] == bad.decode()
    assert quar[1][2].startswith("invalid_utf8") and "\\xff" in quar[1][3]


def test_conflicting_turn_is_quarantined_not_overwritten(db_url, tmp_path):
    eng = connect(db_url)
    ingest(eng, [write_jsonl(tmp_path / "a.jsonl", [turn(1)])], progress=False)
    res = ingest(eng, [write_jsonl(tmp_path / "b.jsonl", [turn(1, response="edited")])], progress=False)
    assert res["quarantined"] == 1 and res["quarantine_reasons"] == {"conflict": 1}
    with eng.connect() as c:
        assert c.execute(select(responses.c.response)).scalar_one() == TEXTS[1]


def test_reaction_before_its_turn_joins_later(db_url, tmp_path):
    eng = connect(db_url)
    r = ingest(eng, [write_jsonl(tmp_path / "r.jsonl", [reaction(7)])], progress=False)
    assert r["accepted"] == 1 and r["orphan_reactions"] == 1
    ingest(eng, [write_jsonl(tmp_path / "t.jsonl", [turn(7)])], progress=False)
    assert orphan_reactions(eng) == 0


def test_chunks_do_not_change_the_result(db_url, tmp_path):
    rows = [turn(i % 10) for i in range(25)] + [reaction(i % 4) for i in range(9)]
    f = write_jsonl(tmp_path / "c.jsonl", rows)
    res = ingest(connect(db_url), [f], IngestConfig(chunk_rows=3), progress=False)
    assert (res["accepted"], res["duplicates"]) == (14, 20)


def test_csv_parquet_and_gzip(db_url, tmp_path):
    turns = [turn(i, messages=[{"role": "user", "content": f"question {i}"}], metadata={"k": i})
             for i in range(6)]
    gz = write_jsonl(tmp_path / "t.jsonl.gz", turns[:2], gz=True)
    csv_path = tmp_path / "t.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(turns[0]))
        w.writeheader()
        for t in turns[2:4]:
            w.writerow({**t, "messages": json.dumps(t["messages"]), "metadata": json.dumps(t["metadata"])})
    pq_path = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pylist([{**t, "messages": json.dumps(t["messages"]),
                                          "metadata": json.dumps(t["metadata"])} for t in turns[4:]]), pq_path)
    react_csv = tmp_path / "r.csv.gz"
    react_csv.write_bytes(gzip.compress(
        b"response_id,user_id,reaction,created_at,removed\nr1,u1,love,1793538000,\nr1,u1,love,1793538100,true\n"
        b"r2,u2,love,oops,\n"))
    res = ingest(connect(db_url), [gz, csv_path, pq_path, react_csv], progress=False)
    assert_adds_up(res)
    assert (res["accepted"], res["quarantined"]) == (8, 1)
    assert [f["format"] for f in res["files"]] == ["jsonl", "csv", "parquet", "csv"]
    out = export_store(connect(db_url), tmp_path / "ex")
    exported = [orjson.loads(line) for line in (tmp_path / "ex" / "interactions.jsonl").read_bytes().splitlines()]
    assert [e["response"] for e in exported] == [t["response"] for t in turns]  # verbatim, in time order
    assert exported[3]["metadata"] == {"k": 3} and exported[3]["messages"][0]["content"] == "question 3"
    assert out["reactions"] == 2


def test_csv_invalid_utf8_and_ragged_rows(sqlite_url, tmp_path):
    f = tmp_path / "bad.csv"
    f.write_bytes(b"response_id,user_id,reaction,created_at\nr1,u1,lo\xffve,1793538000\nr2,u2\n"
                  b"r3,u3,love,1793538000\n")
    res = ingest(connect(sqlite_url), [f], progress=False)
    assert res["quarantine_reasons"] == {"invalid_utf8": 1, "bad_columns": 1} and res["accepted"] == 1


def test_export_ingest_round_trip(db_url, tmp_path):
    rows = [turn(i, surface="web", locale="he-IL") for i in range(12)] + [reaction(i) for i in range(5)]
    rows += [reaction(2, removed=True, created_at="2026-11-01T14:00:00Z")]
    eng = connect(db_url)
    ingest(eng, [write_jsonl(tmp_path / "log.jsonl", rows)], progress=False)
    export_store(eng, tmp_path / "e1")
    second = f"sqlite:///{tmp_path / 'second.db'}"
    res = ingest(connect(second), [tmp_path / "e1" / "interactions.jsonl", tmp_path / "e1" / "reactions.jsonl"],
                 progress=False)
    assert (res["accepted"], res["quarantined"]) == (18, 0)
    export_store(connect(second), tmp_path / "e2")
    for name in ("interactions.jsonl", "reactions.jsonl"):
        assert (tmp_path / "e1" / name).read_bytes() == (tmp_path / "e2" / name).read_bytes()
    t1, r1, _ = table_dump(db_url)
    t2, r2, _ = table_dump(second)
    assert [t[:-1] for t in t1] == [t[:-1] for t in t2]  # identical but for ingest_run_id
    assert [r[:-1] for r in r1] == [r[:-1] for r in r2]


# ------------------------------------------------------------------------------------ property-based fuzz

_valid_row = st.one_of(
    st.integers(0, 30).map(turn),
    st.integers(0, 30).map(reaction),
    st.integers(0, 30).map(lambda i: turn(i, response=f"edited {i}")),
)
_field_values = st.one_of(st.none(), st.booleans(), st.integers(-10**15, 10**15), st.text(max_size=20),
                          st.floats(allow_nan=False, allow_infinity=False),
                          st.lists(st.integers(-9, 9), max_size=2))


@st.composite
def _line(draw) -> bytes:
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return orjson.dumps(draw(_valid_row))
    if kind == 1:  # a valid row with one field replaced or removed
        row = dict(draw(_valid_row))
        key = draw(st.sampled_from(sorted(row)))
        if draw(st.booleans()):
            del row[key]
        else:
            row[key] = draw(_field_values)
        return orjson.dumps(row)
    if kind == 2:
        return draw(st.binary(min_size=1, max_size=40)).replace(b"\n", b" ")
    if kind == 3:
        return orjson.dumps(draw(st.one_of(st.lists(st.integers(-9, 9), max_size=3), st.text(max_size=10),
                                           st.integers(-10**18, 10**18))))
    return orjson.dumps(draw(st.dictionaries(st.text(max_size=8), _field_values, max_size=5)))


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
          deadline=None)
@given(lines=st.lists(_line(), min_size=1, max_size=40), chunk=st.integers(1, 50))
def test_fuzzed_ingest_never_crashes_and_adds_up(tmp_path_factory, lines, chunk):
    d = tmp_path_factory.mktemp("fuzz")
    f = d / "fuzz.jsonl"
    f.write_bytes(b"\n".join(lines) + b"\n")
    url = f"sqlite:///{d / 'fuzz.db'}"
    eng = connect(url)
    res = ingest(eng, [f], IngestConfig(chunk_rows=chunk), progress=False)
    assert_adds_up(res)
    n_turns, n_reactions, n_quar = counts(url)
    assert n_turns + n_reactions == res["accepted"]
    assert n_quar == res["quarantined"]
    again = ingest(eng, [f], IngestConfig(chunk_rows=chunk), progress=False)
    assert again["accepted"] == 0 and counts(url) == (n_turns, n_reactions, n_quar)
    eng.dispose()



_cell = st.one_of(st.sampled_from(["", "r1", "u1", "love", "true", "0", "1793534400", "2026-11-01T12:00:00Z",
                                   '[{"role": "user", "content": "x"}]', "{}", "x,y", 'a "quoted" cell']),
                  st.text(max_size=8))


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
          deadline=None)
@given(header=st.lists(st.sampled_from(["response_id", "conversation_id", "user_id", "turn_index", "created_at",
                                        "policy", "prompt", "response", "reaction", "removed", "messages", "x"]),
                       min_size=1, max_size=8, unique=True),
       cells=st.lists(st.lists(_cell, min_size=0, max_size=9), min_size=1, max_size=25),
       junk=st.binary(max_size=20))
def test_fuzzed_csv_never_crashes_and_adds_up(tmp_path_factory, header, cells, junk):
    d = tmp_path_factory.mktemp("csvfuzz")
    f = d / "fuzz.csv"
    with open(f, "w", newline="", encoding="utf-8", errors="surrogatepass") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(cells)
    with open(f, "ab") as fh:
        fh.write(junk.replace(b"\r", b"") + b"\n")  # raw bytes: invalid UTF-8, stray quotes, NULs
    url = f"sqlite:///{d / 'fuzz.db'}"
    eng = connect(url)
    res = ingest(eng, [f], progress=False)
    assert_adds_up(res)
    n_turns, n_reactions, n_quar = counts(url)
    assert n_turns + n_reactions == res["accepted"] and n_quar == res["quarantined"]
    eng.dispose()


def test_truncated_gzip_keeps_what_came_before(sqlite_url, tmp_path):
    data = gzip.compress(b"\n".join(orjson.dumps(turn(i)) for i in range(200)) + b"\n")
    f = tmp_path / "cut.jsonl.gz"
    f.write_bytes(data[: len(data) * 2 // 3])
    res = ingest(connect(sqlite_url), [f], progress=False)
    assert_adds_up(res)
    assert res["quarantine_reasons"] == {"unreadable_file": 1} and res["accepted"] > 50


def test_corrupt_parquet_is_a_clear_error(sqlite_url, tmp_path):
    f = tmp_path / "x.parquet"
    f.write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match="not a readable Parquet file"):
        ingest(connect(sqlite_url), [f], progress=False)
