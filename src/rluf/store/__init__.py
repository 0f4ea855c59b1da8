"""The feedback store: turns, reactions, quarantine and ingest runs in one SQL database.

SQLite by default (`sqlite:///rluf.db`, WAL); PostgreSQL through a URL, with the same code.
"""

from rluf.store.db import connect, create_schema
from rluf.store.schema import (
    SCHEMA_VERSION,
    ingest_runs,
    metadata,
    quarantine,
    reactions,
    responses,
    schema_version,
)

__all__ = [
    "SCHEMA_VERSION",
    "connect",
    "create_schema",
    "ingest_runs",
    "metadata",
    "quarantine",
    "reactions",
    "responses",
    "schema_version",
]
