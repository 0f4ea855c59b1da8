"""Shared fixtures: a store per test, on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import os
import uuid

import pytest
from sqlalchemy import create_engine, text

from rluf.paths import DEFAULT_DATA_DIR, data_dir_available

PG_URL = os.environ.get("RLUF_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

_pg_error: str | None = None
_pg_checked = False


def postgres_unavailable() -> str | None:
    """None when the PostgreSQL test server answers, else the reason (cached)."""
    global _pg_error, _pg_checked
    if not _pg_checked:
        _pg_checked = True
        try:
            eng = create_engine(PG_URL, connect_args={"connect_timeout": 3})
            with eng.connect() as c:
                c.execute(text("select 1"))
            eng.dispose()
        except Exception as e:  # any driver or network error means: no server here
            _pg_error = f"PostgreSQL not reachable at {PG_URL}: {type(e).__name__}: {str(e)[:200]}"
    return _pg_error


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path):
    """A fresh, empty store URL: a SQLite file, or a private schema on the PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    reason = postgres_unavailable()
    if reason:
        pytest.skip(reason)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as c:
        c.execute(text(f'CREATE SCHEMA "{schema}"'))
    # search_path puts the test's tables in its own schema, so tests never see each other's rows.
    yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    with admin.begin() as c:
        c.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture
def real_data_dir():
    if not data_dir_available(DEFAULT_DATA_DIR):
        pytest.skip(f"real data not found at {DEFAULT_DATA_DIR} (set RLUF_DATA_DIR)")
    return DEFAULT_DATA_DIR


# Two shared cores: timing-based health checks and deadlines would make property tests flaky, not stricter.
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("rluf", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=150)
settings.load_profile("rluf")
