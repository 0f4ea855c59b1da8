"""Engine creation and schema setup for SQLite and PostgreSQL."""

from __future__ import annotations

import time

from sqlalchemy import Engine, create_engine, event, insert, select

from rluf.store.schema import SCHEMA_VERSION, metadata, schema_version


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    # WAL: readers never block the writer; busy_timeout: concurrent writers wait instead of failing.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    # 64 MB page cache: index pages of a large store stay hot during bulk ingest (default is 2 MB).
    cur.execute("PRAGMA cache_size=-65536")
    cur.close()


def connect(url: str, create: bool = True) -> Engine:
    """An engine for `url` (e.g. `sqlite:///rluf.db`, `postgresql+psycopg://user@host/db`).

    A bare `postgresql://` URL is routed to psycopg 3, the driver rluf installs.
    """
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    engine = create_engine(url, future=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    if create:
        create_schema(engine)
    return engine


def create_schema(engine: Engine) -> None:
    """Create every table and record the schema version; running it twice is harmless."""
    metadata.create_all(engine, checkfirst=True)
    with engine.begin() as conn:
        have = conn.execute(select(schema_version.c.version)).scalars().all()
        if SCHEMA_VERSION not in have:
            if have and max(have) > SCHEMA_VERSION:
                raise RuntimeError(
                    f"the store has schema version {max(have)}, newer than this rluf ({SCHEMA_VERSION})"
                )
            conn.execute(
                insert(schema_version).values(version=SCHEMA_VERSION, applied_at_ms=int(time.time() * 1000))
            )
