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
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, Table, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from rluf.config import IngestConfig
from rluf.store.schema import ingest_runs, quarantine, reactions, responses
from rluf.store.validate import REACTION, TURN, RowError, infer_kind, validate_reaction, validate_turn

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


def read_jsonl(path: Path) -> Iterator[tuple[int, dict | RowError, str | bytes]]:
    with _open_binary(path) as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue  # blank lines are not rows
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as e:
                yield line_no, _json_error(line, e), line
                continue
            if not isinstance(obj, dict):
                yield line_no, RowError("not_object", f"expected a JSON object, got {type(obj).__name__}"), line
                continue
            yield line_no, obj, line


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
        reader = csv.reader(text, delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            return
        header = [h.strip().lstrip("\ufeff") for h in header]
        start = reader.line_num + 1
        for values in reader:
            line_no, start = start, reader.line_num + 1
            if not any(v.strip() for v in values):
                continue
            raw = orjson.dumps(values, option=orjson.OPT_NON_STR_KEYS, default=str) if _encodable(values) \
                else repr(values)
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

    pf = pq.ParquetFile(path)
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


def _insert_ignore(engine: Engine, table: Table):
    """INSERT ... ON CONFLICT DO NOTHING for the dialect at hand (a race-safe second line of dedupe)."""
    if engine.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if engine.dialect.name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    return insert(table)


def _existing(conn, column, keys: list[str], *extra) -> dict[str, Any]:
    """Which of `keys` are already stored (with the `extra` column value, if asked)."""
    found: dict[str, Any] = {}
    cols = [column, *extra]
    for i in range(0, len(keys), LOOKUP_BATCH):
        batch = keys[i : i + LOOKUP_BATCH]
        for row in conn.execute(select(*cols).where(column.in_(batch))):
            found[row[0]] = row[1] if extra else True
    return found


class _ChunkWriter:
    """Collects one chunk of validated rows and writes it in one transaction."""

    def __init__(self, engine: Engine, report: FileReport, run_id: int):
        self.engine, self.report, self.run_id = engine, report, run_id
        self.turns: dict[str, dict] = {}
        self.reactions: dict[str, dict] = {}
        self.bad: list[dict] = []
        self.ins_turn = _insert_ignore(engine, responses)
        self.ins_reaction = _insert_ignore(engine, reactions)
        self.ins_quarantine = _insert_ignore(engine, quarantine)

    def __len__(self) -> int:
        return len(self.turns) + len(self.reactions) + len(self.bad)

    def quarantine(self, line: int, kind: str | None, err: RowError, raw: Any) -> None:
        self.report.counts.quarantined += 1
        if kind in self.report.by_kind:
            self.report.by_kind[kind].quarantined += 1
        self.report.reasons[err.code] += 1
        self.bad.append({
            "ingest_run_id": self.run_id, "source_file": self.report.file, "source_sha256": self.report.sha256,
            "line": line, "kind": kind, "reason": str(err), "raw": _raw_text(raw),
            "created_at_ms": int(time.time() * 1000),
        })

    def add_turn(self, line: int, row: dict, raw: Any) -> None:
        prev = self.turns.get(row["response_id"])
        if prev is None:
            row["_line"], row["_raw"] = line, raw
            self.turns[row["response_id"]] = row
        elif prev["row_hash"] == row["row_hash"]:
            self._dup(TURN)
        else:
            self.quarantine(line, TURN, _conflict(row["response_id"], f"line {prev['_line']} of this file"), raw)

    def add_reaction(self, row: dict) -> None:
        if row["event_key"] in self.reactions:
            self._dup(REACTION)
        else:
            self.reactions[row["event_key"]] = row

    def _dup(self, kind: str) -> None:
        self.report.counts.duplicates += 1
        self.report.by_kind[kind].duplicates += 1

    def _accept(self, kind: str, n: int) -> None:
        self.report.counts.accepted += n
        self.report.by_kind[kind].accepted += n

    def flush(self) -> None:
        if not len(self):
            return
        with self.engine.begin() as conn:
            if self.turns:
                stored = _existing(conn, responses.c.response_id, list(self.turns), responses.c.row_hash)
                new = []
                for rid, row in self.turns.items():
                    line, raw = row.pop("_line"), row.pop("_raw")
                    if rid not in stored:
                        row["ingest_run_id"] = self.run_id
                        new.append(row)
                    elif stored[rid] == row["row_hash"]:
                        self._dup(TURN)
                    else:
                        self.quarantine(line, TURN, _conflict(rid, "the store"), raw)
                if new:
                    conn.execute(self.ins_turn, new)
                self._accept(TURN, len(new))
            if self.reactions:
                stored = _existing(conn, reactions.c.event_key, list(self.reactions))
                new = []
                for key, row in self.reactions.items():
                    if key in stored:
                        self._dup(REACTION)
                    else:
                        row["ingest_run_id"] = self.run_id
                        new.append(row)
                if new:
                    conn.execute(self.ins_reaction, new)
                self._accept(REACTION, len(new))
            if self.bad:
                conn.execute(self.ins_quarantine, self.bad)
        self.turns, self.reactions, self.bad = {}, {}, []


def _conflict(response_id: str, where: str) -> RowError:
    return RowError(
        "conflict", f"response_id {response_id!r} is already in {where} with different content; "
        "a turn is immutable once logged"
    )


# ------------------------------------------------------------------------------------------------- main


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
    writer = _ChunkWriter(engine, report, run_id)
    max_text, max_id = cfg.max_text_chars, cfg.max_id_chars
    pending = 0
    try:
        for line, row, raw in iter_rows(path, fmt, cfg.chunk_rows):
            report.counts.read += 1
            row_kind = kind if kind != "auto" else None
            try:
                if isinstance(row, RowError):
                    raise row
                if row_kind is None:
                    row_kind = infer_kind(row)
                report.by_kind[row_kind].read += 1
                if row_kind == TURN:
                    writer.add_turn(line, validate_turn(row, max_text, max_id), raw)
                else:
                    writer.add_reaction(validate_reaction(row, max_id))
            except RowError as err:
                writer.quarantine(line, row_kind, err, raw)
            pending += 1
            if pending >= cfg.chunk_rows:
                writer.flush()
                if on_rows:
                    on_rows(pending)
                pending = 0
        writer.flush()
        if on_rows and pending:
            on_rows(pending)
        status = "done"
    except BaseException:
        status = "failed"
        raise
    finally:
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
