"""Serving benchmark: `rluf serve` under concurrent chat users — requests/s and latency percentiles.

Each scenario starts a real `rluf serve` process on loopback (so the clients do not share its CPU time
slices in one interpreter), creates one user per client, and runs them all at once: every client chats
(continuing its conversation), hearts each answer, re-sends the heart (no new row) and withdraws every second
heart. Afterwards the store is checked: every reaction acknowledged as recorded is there, once.

Scenarios: the tiny 2-layer test model (measures the service: HTTP, auth, store, batching) and the default
policy (SmolLM2-135M, measures a realistic answer), each on SQLite and on PostgreSQL.

    python benchmarks/serve_load.py             # all scenarios (a few minutes)
    python benchmarks/serve_load.py --quick     # the tiny model only
    python benchmarks/serve_load.py --only default-16-t1 --append   # one scenario, added to the results

Writes benchmarks/results/serve_load.json and benchmarks/results/serve_load.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE.parent / "tests"))  # tiny_models.make_tiny_policy

PG_URL = os.environ.get("RLUF_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
ADMIN = "bench-" + uuid.uuid4().hex


def pg_schema_url() -> tuple[str | None, str | None, str | None]:
    """(url with a private schema, schema, None) or (None, None, reason)."""
    from sqlalchemy import create_engine, text

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    try:
        eng = create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with eng.begin() as c:
            c.execute(text(f'CREATE SCHEMA "{schema}"'))
        eng.dispose()
    except Exception as e:  # no server here: the PostgreSQL rows are skipped with the reason
        return None, None, f"{type(e).__name__}: {str(e)[:160]}"
    return f"{PG_URL}?options=-csearch_path%3D{schema}", schema, None


def drop_schema(schema: str) -> None:
    from sqlalchemy import create_engine, text

    eng = create_engine(PG_URL)
    with eng.begin() as c:
        c.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    eng.dispose()


def run_scenario(name: str, model: str, db_url: str, clients: int, turns: int, max_tokens: int, batch_size: int,
                 threads: int | None, work: Path) -> dict:
    from rluf.serve.loadtest import ServerProcess, acked_keys, create_users, free_port, run_load, stored_events
    from rluf.store import connect

    port = free_port()
    extra = ["--batch-size", str(batch_size), "--max-new-tokens", str(max(max_tokens, 16)), "--no-access-log"]
    if threads:
        extra += ["--threads", str(threads)]
    srv = ServerProcess(db_url, [f"{name}={model}"], port, ADMIN, work / f"{name}-{port}.log", extra=extra)
    print(f"  starting rluf serve ({name}, {db_url.split(':')[0]}) ...", file=sys.stderr, flush=True)
    load_avg = os.getloadavg()[0]
    startup = srv.start(timeout=600)
    try:
        users = asyncio.run(create_users(srv.base_url, ADMIN, clients))
        res = asyncio.run(run_load(srv.base_url, users, turns=turns, max_tokens=max_tokens, timeout=600))
    finally:
        srv.kill()
    stored = stored_events(connect(db_url))
    acked = acked_keys(res)
    s = res.summary()
    row = {
        "model": name, "store": "PostgreSQL" if db_url.startswith("postgres") else "SQLite", "clients": clients,
        "turns_per_client": turns, "max_tokens": max_tokens, "batch_size": batch_size, "threads": threads or "all",
        "date": time.strftime("%Y-%m-%d %H:%M"), "startup_s": round(startup, 1),
        "load_avg_1min_at_start": round(load_avg, 2), **s,
        "lost_reactions": sum(1 for a in acked if a not in stored),
        "extra_reaction_rows": len(stored) - len(set(acked)),
    }
    print(f"    {s['chats']} chats in {s['wall_s']} s ({s['chats_per_s']} chats/s, {s['requests_per_s']} req/s); "
          f"chat p50/p95 {s['chat_p50_ms']}/{s['chat_p95_ms']} ms; 5xx {s['server_errors_5xx']}; "
          f"lost {row['lost_reactions']}", file=sys.stderr, flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="The tiny model only.")
    ap.add_argument("--tiny-clients", type=int, default=50)
    ap.add_argument("--default-clients", type=int, default=16)
    ap.add_argument("--default-max-tokens", type=int, default=32)
    ap.add_argument("--only", nargs="+",
                    help="Scenario keys to run: tiny, default-16, default-1, default-16-t1, default-1-t1.")
    ap.add_argument("--append", action="store_true", help="Add the rows to the existing results files.")
    ap.add_argument("--render", action="store_true", help="Only rewrite the Markdown from the JSON results.")
    args = ap.parse_args()

    from tiny_models import make_tiny_policy

    work = Path(tempfile.mkdtemp(prefix="rluf-serve-bench-"))
    tiny = make_tiny_policy(work / "tiny")
    n, mt = args.default_clients, args.default_max_tokens
    # Sixteen users answered 8 at a time; a single user shows the latency without queueing; one torch thread
    # shows what the generation thread gets when other jobs share the two cores.
    catalogue = {
        "tiny": ("tiny", str(tiny), args.tiny_clients, 2, 16, 16, 1, ["sqlite", "postgresql"]),
        "default-16": ("smollm2-135m", "default", n, 2, mt, 8, None, ["sqlite", "postgresql"]),
        "default-1": ("smollm2-135m", "default", 1, 4, mt, 8, None, ["sqlite"]),
        "default-16-t1": ("smollm2-135m", "default", n, 2, mt, 8, 1, ["sqlite"]),
        "default-1-t1": ("smollm2-135m", "default", 1, 4, mt, 8, 1, ["sqlite"]),
    }
    keys = [] if args.render else (args.only or (["tiny"] if args.quick else list(catalogue)))
    scenarios = [catalogue[k] for k in keys]
    previous = json.loads((RESULTS / "serve_load.json").read_text()) if args.append or args.render else {}
    rows, skipped = list(previous.get("results", [])), list(previous.get("skipped", []))
    for name, model, clients, turns, max_tokens, batch, threads, stores in scenarios:
        for store in stores:
            schema = None
            if store == "sqlite":
                url = f"sqlite:///{work / f'{name}-{clients}-t{threads or 0}.db'}"
            else:
                url, schema, reason = pg_schema_url()  # each scenario starts from an empty store
                if url is None:
                    skipped.append({"model": name, "store": store, "reason": f"PostgreSQL unreachable: {reason}"})
                    continue
            print(f"{name} x {clients} clients on {store}", file=sys.stderr, flush=True)
            try:
                rows.append(run_scenario(name, model, url, clients, turns, max_tokens, batch, threads, work))
            finally:
                if schema:
                    drop_schema(schema)

    shutil.rmtree(work, ignore_errors=True)
    report = {
        "benchmark": "serve_load", "date": previous.get("date") if args.render else time.strftime("%Y-%m-%d"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "workload": "per client: chat (continuing its conversation), love the answer, re-send the love (must "
                    "change nothing), withdraw every second love; all clients at once on loopback",
        "results": rows, "skipped": skipped,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serve_load.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# Serving benchmark (`rluf serve`)",
        "",
        f"{report['date']}, {os.cpu_count()} CPUs, Python {platform.python_version()}; a real `rluf serve` process "
        "on loopback, one user per client, all clients at once. Per client and turn: one chat request and three "
        "reaction requests on every second turn (love, love again, withdraw), two otherwise. "
        "`load` is the machine's 1-minute load average when the scenario started (other jobs share the CPUs). "
        "Lost = acknowledged reactions missing from the store; extra = reaction rows nobody was told about.",
        "",
        "Compare rows by their `load`: with `threads = all` while other jobs keep both cores busy, torch's "
        "OpenMP threads wait for each other at every operation and generation can be an order of magnitude "
        "slower than with `--threads 1`; on a quiet machine both cores win.",
        "",
        "| run | model | store | clients × turns | max tokens | batch | threads | chats/s | requests/s "
        "| chat p50 / p95 / p99 ms | reaction p50 / p95 ms | 5xx | lost | extra | start s | load |",
        "|---|---|---|---|---:|---:|---|---:|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.get('date', '—')} | {r['model']} | {r['store']} | {r['clients']} × {r['turns_per_client']} | "
            f"{r['max_tokens']} | "
            f"{r['batch_size']} | {r['threads']} | {r['chats_per_s']} | {r['requests_per_s']} | "
            f"{r['chat_p50_ms']:.0f} / {r['chat_p95_ms']:.0f} / {r['chat_p99_ms']:.0f} | "
            f"{r['reaction_p50_ms']:.0f} / {r['reaction_p95_ms']:.0f} | {r['server_errors_5xx']} | "
            f"{r['lost_reactions']} | {r['extra_reaction_rows']} | {r['startup_s']} | {r['load_avg_1min_at_start']} |")
    for s in skipped:
        lines.append(f"\nSkipped {s['model']} on {s['store']}: {s['reason']}")
    (RESULTS / "serve_load.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
