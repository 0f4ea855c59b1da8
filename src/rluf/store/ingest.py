"""`rluf ingest`: stream JSONL / CSV / Parquet logs (gzip too) into the feedback store.

One pass per file, in chunks of `chunk_rows` rows, one transaction per chunk, so memory is bounded by the
chunk and a crash loses at most the chunk in flight (re-running finishes the job: everything is an
idempotent upsert). For every file: read = accepted + duplicates + quarantined.

- Turns are keyed by `response_id`. The same id with the same content is a duplicate; with different
  content it is quarantined as a conflict (the stored row is never silently overwritten).
- Reactions are keyed by (response, user, reaction, time, removed). A reaction whose turn is not stored
  yet is kept; it joins its turn when the turn arrives (no foreign key, joined at read time).
- A bad row goes to `quarantine` with its reason, source file and line; (file hash, line) is unique, so
  re-ingesting a file changes nothing in responses, reactions or quarantine (it only logs the run).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import itertools
import operator
import time
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, Table, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from rluf.config import IngestConfig
from rluf.store.schema import ingest_runs, quarantine, reactions, responses
from rluf.store.validate import (
    REACTION,
    TURN,
    RowError,
    infer_kind,
    reaction_key,
    validate_reaction,
    validate_turn,
)

FORMATS = ("jsonl", "csv", "parquet")
KINDS = ("auto", TURN, REACTION)
# SQLite accepts up to 32766 bound parameters per statement; stay well below for the IN (...) lookups.
LOOKUP_BATCH = 5_000


@dataclass
class Counts:
    read: int = 0
    accepted: int = 0
    duplicates: int = 0
    quarantined: int = 0

    def add(self, other: Counts) -> None:
        self.read += other.read
        self.accepted += other.accepted
        self.duplicates += other.duplicates
        self.quarantined += other.quarantined

    def as_dict(self) -> dict[str, int]:
        return {"read": self.read, "accepted": self.accepted, "duplicates": self.duplicates,
                "quarantined": self.quarantined}


@dataclass
class FileReport:
    file: str
    format: str
    sha256: str
    counts: Counts = field(default_factory=Counts)
    by_kind: dict[str, Counts] = field(default_factory=lambda: {TURN: Counts(), REACTION: Counts()})
    reasons: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file, "format": self.format, "sha256": self.sha256, **self.counts.as_dict(),
            "by_kind": {k: c.as_dict() for k, c in self.by_kind.items()},
            "quarantine_reasons": dict(self.reasons.most_common()),
            "seconds": round(self.seconds, 3),
        }


# ---------------------------------------------------------------------------------------------- readers
# Each reader yields (line, row) where row is a dict, or (line, RowError) for a row that cannot be decoded,
# plus the raw text of that row for the quarantine.


def detect_format(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz").removesuffix(".gzip")
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if name.endswith((".csv", ".tsv")):
        return "csv"
    if name.endswith((".parquet", ".pq")):
        if path.name.lower().endswith((".gz", ".gzip")):
            raise ValueError(f"{path}: gzip-compressed Parquet is not supported (Parquet compresses itself)")
        return "parquet"
    raise ValueError(f"{path}: unknown format; expected .jsonl, .ndjson, .json, .csv or .parquet (+ .gz)")


def _open_binary(path: Path):
    with open(path, "rb") as f:
        magic = f.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def decode_json_line(line: bytes) -> dict | RowError:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        return _json_error(line, e)
    if type(obj) is not dict:
        return RowError("not_object", f"expected a JSON object, got {type(obj).__name__}")
    return obj


# A compressed file that breaks off part-way (a truncated upload) cannot be read further; what came before
# is kept and the break itself is quarantined as one row, so the counts still add up.
_STREAM_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)


def _unreadable(line_no: int, e: Exception) -> RowError:
    return RowError("unreadable_file", f"the file cannot be read past line {line_no - 1}: {e}")


def jsonl_lines(path: Path) -> Iterator[tuple[int, bytes | RowError]]:
    """(line number, raw line) of every non-blank line; blank lines are not rows."""
    with _open_binary(path) as f:
        line_no = 0
        try:
            for line in f:
                line_no += 1
                if line.strip():
                    yield line_no, line
        except _STREAM_ERRORS as e:
            yield line_no + 1, _unreadable(line_no + 1, e)


def read_jsonl(path: Path) -> Iterator[tuple[int, dict | RowError, str | bytes]]:
    for line_no, line in jsonl_lines(path):
        if type(line) is RowError:
            yield line_no, line, b""
        else:
            yield line_no, decode_json_line(line), line


def _json_error(line: bytes, e: Exception) -> RowError:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as u:
        return RowError("invalid_utf8", f"the line is not valid UTF-8 (byte {u.start})")
    return RowError("invalid_json", f"not valid JSON: {e}")


def read_csv(path: Path) -> Iterator[tuple[int, dict | RowError, str | bytes]]:
    delimiter = "\t" if path.name.lower().removesuffix(".gz").endswith(".tsv") else ","
    with _open_binary(path) as fb:
        # surrogateescape keeps invalid bytes as lone surrogates, which validation reports as invalid UTF-8.
        text = io.TextIOWrapper(fb, encoding="utf-8", errors="surrogateescape", newline="")
        # Long answers are normal; the text limit is enforced by validation with a clear reason instead.
        csv.field_size_limit(2**31 - 1)
        reader = csv.reader(text, delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            return
        except _STREAM_ERRORS as e:
            yield 1, _unreadable(1, e), b""
            return
        header = [h.strip().lstrip("\ufeff") for h in header]
        start = reader.line_num + 1
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except _STREAM_ERRORS as e:
                yield start, _unreadable(start, e), b""
                return
            except csv.Error as e:  # e.g. an unterminated quote at end of file; the reader can go on
                line_no, start = start, reader.line_num + 1
                yield line_no, RowError("bad_csv", f"not valid CSV: {e}"), f"<line {line_no}: {e}>"
                continue
            line_no, start = start, reader.line_num + 1
            if not any(v.strip() for v in values):
                continue
            raw = orjson.dumps(values) if _encodable(values) else repr(values)
            if len(values) != len(header):
                yield line_no, RowError(
                    "bad_columns", f"expected {len(header)} columns as in the header, got {len(values)}"
                ), raw
                continue
            # CSV cannot tell "missing" from "empty": an empty cell is a missing value.
            yield line_no, {h: v for h, v in zip(header, values, strict=True) if v != ""}, raw


def _encodable(values: list[str]) -> bool:
    try:
        for v in values:
            v.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_parquet(path: Path, batch_rows: int) -> Iterator[tuple[int, dict | RowError, str | bytes]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a file that is not Parquet
        raise ValueError(f"{path}: not a readable Parquet file ({e})") from None
    line_no = 0
    for batch in pf.iter_batches(batch_size=batch_rows):
        for row in batch.to_pylist():
            line_no += 1
            yield line_no, {k: v for k, v in row.items() if v is not None}, row


def iter_rows(path: Path, fmt: str, batch_rows: int):
    if fmt == "jsonl":
        return read_jsonl(path)
    if fmt == "csv":
        return read_csv(path)
    return read_parquet(path, batch_rows)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _raw_text(raw: Any) -> str:
    if isinstance(raw, bytes):
        return raw.decode("utf-8", errors="backslashreplace").rstrip("\r\n")
    if isinstance(raw, str):
        return raw
    return orjson.dumps(raw, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


# ----------------------------------------------------------------------------------------------- writes


class _InsertIgnore:
    """INSERT ... ON CONFLICT DO NOTHING for the dialect at hand (a race-safe second line of dedupe).

    The statement is compiled once by SQLAlchemy and the rows go to the driver's executemany as plain
    tuples / dicts: SQLAlchemy's per-row bind processing was a quarter of the ingest time, and these columns
    (str, int, bool) need no processing on either SQLite or PostgreSQL.
    """

    def __init__(self, engine: Engine, table: Table, columns: list[str]):
        if engine.dialect.name == "postgresql":
            stmt = postgresql.insert(table).on_conflict_do_nothing()
        elif engine.dialect.name == "sqlite":
            stmt = sqlite.insert(table).on_conflict_do_nothing()
        else:
            stmt = insert(table)
        compiled = stmt.compile(dialect=engine.dialect, column_keys=columns)
        self.sql = str(compiled)
        self.order = list(compiled.positiontup) if compiled.positional else None

    def __call__(self, conn, rows: list[dict]) -> int:
        """Insert `rows`; returns how many the database inserted (the rest hit a unique key)."""
        if self.order is not None:
            get = operator.itemgetter(*self.order)
            result = conn.exec_driver_sql(self.sql, [get(r) for r in rows])
        else:
            result = conn.exec_driver_sql(self.sql, rows)
        if result.rowcount < 0:
            raise RuntimeError(f"the {conn.dialect.name} driver did not report inserted rows")
        return result.rowcount


TURN_COLUMNS = [c.name for c in responses.columns]
REACTION_COLUMNS = [c.name for c in reactions.columns if c.name != "id"]
QUARANTINE_COLUMNS = [c.name for c in quarantine.columns if c.name != "id"]


def _existing(conn, column, keys: list[str], *extra) -> dict[str, Any]:
    """Which of `keys` are already stored (with the `extra` column value, if asked)."""
    found: dict[str, Any] = {}
    cols = [column, *extra]
    for i in range(0, len(keys), LOOKUP_BATCH):
        batch = keys[i : i + LOOKUP_BATCH]
        for row in conn.execute(select(*cols).where(column.in_(batch))):
            found[row[0]] = row[1] if extra else True
    return found


@dataclass
class _Tally:
    """Counters owned by one thread (the reader or the writer); merged into the report at the end."""

    counts: Counts = field(default_factory=Counts)
    by_kind: dict[str, Counts] = field(default_factory=lambda: {TURN: Counts(), REACTION: Counts()})
    reasons: Counter = field(default_factory=Counter)

    def dup(self, kind: str, n: int = 1) -> None:
        self.counts.duplicates += n
        self.by_kind[kind].duplicates += n

    def accept(self, kind: str, n: int) -> None:
        self.counts.accepted += n
        self.by_kind[kind].accepted += n

    def quarantine(self, kind: str | None, code: str) -> None:
        self.counts.quarantined += 1
        if kind in self.by_kind:
            self.by_kind[kind].quarantined += 1
        self.reasons[code] += 1

    def merge_into(self, report: FileReport) -> None:
        report.counts.add(self.counts)
        for k, c in self.by_kind.items():
            report.by_kind[k].add(c)
        report.reasons.update(self.reasons)


@dataclass
class _Chunk:
    """Validated rows of one chunk, deduplicated within the chunk; written in one transaction."""

    turns: dict[str, dict] = field(default_factory=dict)
    turn_src: dict[str, tuple[int, Any]] = field(default_factory=dict)  # response_id -> (line, raw)
    reactions: dict[tuple, dict] = field(default_factory=dict)
    bad: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class _Context:
    """What validating a block needs; small and picklable, so a parse worker can get it."""

    file: str
    sha256: str
    run_id: int
    kind: str | None  # None: infer per row
    max_text: int
    max_id: int


def _quarantine_row(ctx: _Context, line: int, kind: str | None, err: RowError, raw: Any) -> dict:
    return {
        "ingest_run_id": ctx.run_id, "source_file": ctx.file, "source_sha256": ctx.sha256, "line": line,
        "kind": kind, "reason": str(err), "raw": _raw_text(raw), "created_at_ms": int(time.time() * 1000),
    }


class _Writer:
    """Writes one chunk in one transaction: lookups of what is already stored, then INSERT ... DO NOTHING.

    (A writer thread overlapping parsing was measured and gave nothing: the sqlite3 driver holds the GIL
    while binding parameters, which is most of its time.)
    """

    def __init__(self, engine: Engine, ctx: _Context):
        self.engine, self.ctx, self.run_id = engine, ctx, ctx.run_id
        self.tally = _Tally()
        self.ins_turn = _InsertIgnore(engine, responses, TURN_COLUMNS)
        self.ins_reaction = _InsertIgnore(engine, reactions, REACTION_COLUMNS)
        self.ins_quarantine = _InsertIgnore(engine, quarantine, QUARANTINE_COLUMNS)

    def write(self, chunk: _Chunk) -> None:
        tally, run_id = self.tally, self.run_id
        with self.engine.begin() as conn:
            if chunk.turns:
                stored = _existing(conn, responses.c.response_id, list(chunk.turns), responses.c.row_hash)
                new = []
                for rid, row in chunk.turns.items():
                    if rid not in stored:
                        row["ingest_run_id"] = run_id
                        new.append(row)
                    elif stored[rid] == row["row_hash"]:
                        tally.dup(TURN)
                    else:
                        err = _conflict(rid, "the store")
                        line, raw = chunk.turn_src[rid]
                        tally.quarantine(TURN, err.code)
                        chunk.bad.append(_quarantine_row(self.ctx, line, TURN, err, raw))
                if new:
                    self.ins_turn(conn, new)
                tally.accept(TURN, len(new))
            if chunk.reactions:
                # No lookup: a reaction has no content that could conflict, so whatever the unique key made
                # the database skip is a duplicate (rowcount = rows actually inserted, on both drivers).
                rows = list(chunk.reactions.values())
                for row in rows:
                    row["ingest_run_id"] = run_id
                inserted = self.ins_reaction(conn, rows)
                tally.accept(REACTION, inserted)
                tally.dup(REACTION, len(rows) - inserted)
            if chunk.bad:
                self.ins_quarantine(conn, chunk.bad)


def _conflict(response_id: str, where: str) -> RowError:
    return RowError(
        "conflict", f"response_id {response_id!r} is already in {where} with different content; "
        "a turn is immutable once logged"
    )


# ------------------------------------------------------------------------------------------------- main


def validate_block(rows: Iterable[tuple[int, dict | RowError, Any]], ctx: _Context) -> tuple[_Chunk, _Tally]:
    """Validate a block of decoded rows and dedupe it within itself; bad rows become quarantine rows."""
    chunk, tally = _Chunk(), _Tally()
    read = {TURN: 0, REACTION: 0}
    max_text, max_id = ctx.max_text, ctx.max_id
    n = 0
    for line, row, raw in rows:
        n += 1
        row_kind = ctx.kind
        try:
            if type(row) is RowError:
                raise row
            if row_kind is None:
                row_kind = infer_kind(row)
            read[row_kind] += 1
            if row_kind == TURN:
                t = validate_turn(row, max_text, max_id)
                rid = t["response_id"]
                prev = chunk.turns.get(rid)
                if prev is None:
                    chunk.turns[rid] = t
                    chunk.turn_src[rid] = (line, raw)
                elif prev["row_hash"] == t["row_hash"]:
                    tally.dup(TURN)
                else:
                    raise _conflict(rid, f"line {chunk.turn_src[rid][0]} of this file")
            else:
                r = validate_reaction(row, max_id)
                key = reaction_key(r)
                if key in chunk.reactions:
                    tally.dup(REACTION)
                else:
                    chunk.reactions[key] = r
        except RowError as err:
            tally.quarantine(row_kind, err.code)
            chunk.bad.append(_quarantine_row(ctx, line, row_kind, err, raw))
    tally.counts.read = n
    for k, v in read.items():
        tally.by_kind[k].read = v
    return chunk, tally


def _blocks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(items)
    while block := list(itertools.islice(it, size)):
        yield block


def _validated_chunks(path: Path, fmt: str, ctx: _Context, cfg: IngestConfig) -> Iterator[tuple[_Chunk, _Tally]]:
    """Validated chunks of the file, in order, `chunk_rows` rows each.

    (Decoding in a worker process while this one writes was measured on 1M rows: 3 % faster for 40 % more
    CPU, because pickling the validated rows back costs about what it saves; not worth a second path.)
    """
    for block in _blocks(iter_rows(path, fmt, cfg.chunk_rows), cfg.chunk_rows):
        yield validate_block(block, ctx)


def ingest_file(engine: Engine, path: Path, cfg: IngestConfig, kind: str = "auto",
                on_rows=None) -> FileReport:
    """Ingest one file; `on_rows(n)` is called as rows are read (for a progress bar)."""
    if kind not in KINDS:
        raise ValueError(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    fmt = detect_format(path)
    report = FileReport(file=str(path), format=fmt, sha256=file_sha256(path))
    t0 = time.perf_counter()
    with engine.begin() as conn:
        run_id = conn.execute(
            insert(ingest_runs).values(
                source_file=report.file, source_sha256=report.sha256, format=fmt,
                started_at_ms=int(time.time() * 1000), status="running",
            )
        ).inserted_primary_key[0]
    ctx = _Context(report.file, report.sha256, run_id, kind if kind != "auto" else None,
                   cfg.max_text_chars, cfg.max_id_chars)
    writer = _Writer(engine, ctx)
    status = "failed"
    try:
        for chunk, tally in _validated_chunks(path, fmt, ctx, cfg):
            writer.write(chunk)
            tally.merge_into(report)
            if on_rows:
                on_rows(tally.counts.read)
        status = "done"
    finally:
        writer.tally.merge_into(report)
        report.seconds = time.perf_counter() - t0
        with engine.begin() as conn:
            conn.execute(
                update(ingest_runs).where(ingest_runs.c.id == run_id).values(
                    finished_at_ms=int(time.time() * 1000), status=status, **report.counts.as_dict()
                )
            )
    return report


def count_rows_fast(path: Path, fmt: str) -> int | None:
    """Row count for the progress bar when it is cheap (Parquet metadata); None otherwise."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    return None


def orphan_reactions(engine: Engine) -> int:
    """Reactions whose turn is not in the store (yet)."""
    with engine.connect() as conn:
        q = select(func.count()).select_from(
            reactions.outerjoin(responses, reactions.c.response_id == responses.c.response_id)
        ).where(responses.c.response_id.is_(None))
        return int(conn.execute(q).scalar_one())


def ingest(engine: Engine, paths: list[Path], cfg: IngestConfig | None = None, kind: str = "auto",
           progress: bool = True) -> dict[str, Any]:
    """Ingest several files; the summary's top-level counts are summed over the files."""
    from rluf.progress import make_progress

    cfg = cfg or IngestConfig()
    total = Counts()
    files = []
    t0 = time.perf_counter()
    with make_progress() as bar:
        for p in paths:
            p = Path(p)
            fmt = detect_format(p)
            task = bar.add_task(f"ingest {p.name}", total=count_rows_fast(p, fmt)) if progress else None
            rep = ingest_file(engine, p, cfg, kind,
                              on_rows=(lambda n, t=task: bar.advance(t, n)) if progress else None)
            total.add(rep.counts)
            files.append(rep.as_dict())
    seconds = time.perf_counter() - t0
    reasons: Counter = Counter()
    for f in files:
        reasons.update(f["quarantine_reasons"])
    return {
        **total.as_dict(),
        "files": files,
        "quarantine_reasons": dict(reasons.most_common()),
        "orphan_reactions": orphan_reactions(engine),
        "seconds": round(seconds, 3),
        "rows_per_second": round(total.read / seconds, 1) if seconds > 0 else None,
    }
