"""rluf serve under load and through a crash, on loopback with a tiny model.

- load: 50 concurrent users each chat twice and heart, re-heart and withdraw; no 5xx, every recorded
  reaction is in the store exactly once, nothing else is (SQLite and PostgreSQL).
- fault: a real `rluf serve` process is SIGKILLed mid-load and restarted on the same store; every reaction
  it acknowledged before the kill is in the store, users and tokens survive, and no token reaches the log.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from sqlalchemy import func, select

from rluf.serve import Arm, ServeConfig, create_app
from rluf.serve.loadtest import (
    LoadResult,
    ServerProcess,
    ThreadServer,
    acked_keys,
    create_users,
    free_port,
    run_load,
    stored_events,
)
from rluf.store import connect, reactions, responses
from tiny_models import make_tiny_policy

ADMIN = "load-admin-token-abcdef0123456789"


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory):
    return make_tiny_policy(tmp_path_factory.mktemp("serve_load") / "tiny")


def test_load_50_concurrent_users(db_url, tiny_policy, capsys):
    arms = [Arm("control", str(tiny_policy)), Arm("treatment", str(tiny_policy))]
    app = create_app(db_url, arms, ADMIN, ServeConfig(rate_per_minute=0, batch_size=16, threads=1))
    with ThreadServer(app) as srv:
        users = asyncio.run(create_users(srv.base_url, ADMIN, 50))
        res = asyncio.run(run_load(srv.base_url, users, turns=2, max_tokens=12, timeout=60))
    s = res.summary()
    with capsys.disabled():
        print(f"\nserve load ({db_url.split(':')[0]}): {s['requests']} requests in {s['wall_s']} s, chat p50/p95 "
              f"{s['chat_p50_ms']}/{s['chat_p95_ms']} ms, reaction p50/p95 {s['reaction_p50_ms']}/"
              f"{s['reaction_p95_ms']} ms")
    assert res.server_errors == 0 and not res.transport_errors, s
    assert not res.unexpected, res.unexpected[:5]
    assert len(res.turns) == 100 and len({t["id"] for t in res.turns}) == 100
    # per turn: love (201), love again (200, no row), and on every second turn a withdrawal (201)
    assert len(res.acked) == 150 and res.statuses[201] == 150 and res.statuses[200] == 100 + 100

    eng = connect(db_url)
    stored = stored_events(eng)
    acked = acked_keys(res)
    assert set(acked) <= stored, "a recorded reaction is missing from the store"
    assert len(stored) == len(acked)  # and nothing was written twice
    with eng.connect() as conn:
        assert conn.execute(select(func.count()).select_from(responses)).scalar_one() == 100
        assert conn.execute(select(func.count()).select_from(reactions)).scalar_one() == 150
        batches = [json.loads(m)["batch"] for m in conn.execute(select(responses.c.metadata)).scalars()]
    assert max(batches) > 1, "concurrent requests were not batched"
    assert {t["arm"] for t in res.turns} == {"control", "treatment"}


def test_kill_mid_load_and_restart_loses_no_acknowledged_reaction(sqlite_url, tiny_policy, tmp_path):
    port = free_port()
    log = tmp_path / "serve.log"
    srv = ServerProcess(sqlite_url, [f"tiny={tiny_policy}"], port, ADMIN, log,
                        extra=["--batch-size", "16", "--threads", "1"])
    srv.start(timeout=120)
    try:
        users = asyncio.run(create_users(srv.base_url, ADMIN, 20))

        res = LoadResult()
        at_kill: dict = {}

        async def scenario():
            stop = asyncio.Event()
            load = asyncio.create_task(run_load(srv.base_url, users, turns=None, max_tokens=12, duration_s=60,
                                                resilient=True, timeout=30, stop=stop, result=res))
            deadline = time.monotonic() + 30
            while len(res.acked) < 30 and time.monotonic() < deadline:  # let acknowledgements pile up ...
                await asyncio.sleep(0.05)
            srv.kill()  # ... then crash the server with requests in flight
            at_kill.update(acked=len(res.acked), turns=len(res.turns), killed=time.monotonic())
            await asyncio.to_thread(srv.start, 120)
            at_kill["restarted_after"] = time.monotonic() - at_kill["killed"]
            deadline = time.monotonic() + 20
            while len(res.turns) < at_kill["turns"] + 10 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)  # the same users keep going on the restarted server
            stop.set()
            await load

        asyncio.run(scenario())
    finally:
        srv.kill()

    assert res.transport_errors, "the kill did not interrupt any request"
    acked = acked_keys(res)
    assert at_kill["acked"] >= 30, res.summary()
    stored = stored_events(connect(sqlite_url))
    missing = [a for a in acked if a not in stored]
    assert not missing, f"{len(missing)} acknowledged reactions lost, e.g. {missing[:3]}"
    with connect(sqlite_url).connect() as conn:
        ids = set(conn.execute(select(responses.c.response_id)).scalars())
    assert {t["id"] for t in res.turns} <= ids
    assert not res.unexpected, res.unexpected[:5]
    # Answers after the restart prove the users and their tokens survived it.
    assert len(res.turns) >= at_kill["turns"] + 10 and len(res.acked) > at_kill["acked"], res.summary()
    text = log.read_text(errors="replace")
    assert "POST /v1/reactions" in text  # the access log is on ...
    assert ADMIN not in text and not any(u["token"] in text for u in users)  # ... and tokens never reach it
