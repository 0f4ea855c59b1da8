"""What is in a store: counts a person checks before building a labelled set."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.engine import make_url

from rluf.store.ingest import orphan_reactions
from rluf.store.schema import SCHEMA_VERSION, ingest_runs, quarantine, reactions, responses, schema_version
from rluf.store.validate import ms_to_iso


def safe_url(url: str) -> str:
    """The URL without its password, for logs and cards."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def store_stats(engine: Engine, url: str) -> dict[str, Any]:
    with engine.connect() as conn:
        n_turns = conn.execute(select(func.count()).select_from(responses)).scalar_one()
        first, last = conn.execute(
            select(func.min(responses.c.created_at_ms), func.max(responses.c.created_at_ms))
        ).one()
        by_reaction = {
            f"{r}{' (withdrawn)' if removed else ''}": n
            for r, removed, n in conn.execute(
                select(reactions.c.reaction, reactions.c.removed, func.count())
                .group_by(reactions.c.reaction, reactions.c.removed)
                .order_by(reactions.c.reaction, reactions.c.removed)
            )
        }
        n_quarantine = conn.execute(select(func.count()).select_from(quarantine)).scalar_one()
        n_runs = conn.execute(select(func.count()).select_from(ingest_runs)).scalar_one()
        version = conn.execute(select(func.max(schema_version.c.version))).scalar_one()
        users = conn.execute(select(func.count(func.distinct(responses.c.user_id)))).scalar_one()
    return {
        "db": safe_url(url),
        "schema_version": version,
        "code_schema_version": SCHEMA_VERSION,
        "turns": n_turns,
        "users": users,
        "first_turn": ms_to_iso(first) if first is not None else None,
        "last_turn": ms_to_iso(last) if last is not None else None,
        "reactions": by_reaction,
        "orphan_reactions": orphan_reactions(engine),
        "quarantined": n_quarantine,
        "ingest_runs": n_runs,
    }
