"""Ingest benchmark: generated events (no model) into SQLite — events/s and peak RSS.

rluf's streamed ingest (validation, dedupe, quarantine, one transaction per chunk) runs beside a pandas
baseline in the same run: `read_json(lines=True)` + `to_sql` (no validation, no dedupe) — whole-file for the
smaller size, chunked for the larger one where whole-file pandas does not fit a sensible budget. Each
measurement runs in its own process so that its peak RSS is its own.

    python benchmarks/ingest.py                 # 1M and 10M events (takes a while)
    python benchmarks/ingest.py --sizes 100000  # a quick look

Writes benchmarks/results/ingest.json and benchmarks/results/ingest.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orjson

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
WORK = HERE / "work"
# Two workloads: reaction events alone (DESIGN §3's "reaction event rows"), and a log mixing assistant turns
# (80 %, each with a prompt and an answer) with reaction events (20 %).
WORKLOADS = {"reaction events": 0.0, "mixed log (80 % turns)": 0.8}
TARGET_EVENTS_PER_S = 100_000
TARGET_PEAK_MB = 500

WORDS = ("the of and to in is you that it he was for on are as with his they at be this have from or one had by "
         "word but not what all were we when your can said there use an each which she do how their if will up "
         "other about out many then them these so some her would make like him into time has look two more").split()


def generate(n_events: int, out_dir: Path, turn_share: float, seed: int = 0) -> tuple[Path, Path]:
    """Write interactions.jsonl and reactions.jsonl with n_events rows in all (streamed, bounded memory)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_turns = int(n_events * turn_share)
    n_reactions = n_events - n_turns
    t0 = 1_790_000_000
    words = np.array(WORDS)
    inter, react = out_dir / "interactions.jsonl", out_dir / "reactions.jsonl"
    block = 100_000
    with open(inter, "wb") as f:
        for start in range(0, n_turns, block):
            n = min(block, n_turns - start)
            users = rng.integers(0, max(1, n_events // 50), n)
            lens_p, lens_r = rng.integers(5, 25, n), rng.integers(20, 80, n)
            ws = words[rng.integers(0, len(words), (n, 105))]
            lines = []
            for i in range(n):
                k = start + i
                lines.append(orjson.dumps({
                    "response_id": f"r{k}", "conversation_id": f"c{k // 4}", "user_id": f"u{users[i]}",
                    "turn_index": k % 4, "created_at": t0 + k, "policy": "ref-v1",
                    "prompt": " ".join(ws[i, : lens_p[i]]), "response": " ".join(ws[i, 25 : 25 + lens_r[i]]),
                    "surface": "web", "locale": "en-US",
                }))
            f.write(b"\n".join(lines) + b"\n")
    kinds = np.array(["love", "like", "dislike"])
    with open(react, "wb") as f:
        for start in range(0, n_reactions, block):
            n = min(block, n_reactions - start)
            # Logs are appended in time order: event k happens at t0 + k/5 s and hearts a random earlier turn.
            when = (t0 + 60) * 1000 + (start + np.arange(n)) * 200 + rng.integers(0, 200, n)
            target = (rng.random(n) * np.minimum((when // 1000 - t0), max(1, n_turns, n_events // 5))).astype(int)
            kind = kinds[rng.choice(3, n, p=[0.6, 0.3, 0.1])]
            removed = rng.random(n) < 0.03
            lines = []
            for i in range(n):
                row = {"response_id": f"r{target[i]}", "user_id": f"u{target[i] % 997}", "reaction": str(kind[i]),
                       "created_at": int(when[i])}
                if removed[i]:
                    row["removed"] = True
                lines.append(orjson.dumps(row))
            f.write(b"\n".join(lines) + b"\n")
    return inter, react


def _peak_rss_mb() -> float:
    """Peak RSS of this process. VmHWM, not ru_maxrss: after fork+exec ru_maxrss still counts the parent's
    pages at fork time (the generator's), which would charge its memory to the measured method."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_rluf(files: list[Path], db: Path) -> dict:
    from rluf.store import connect
    from rluf.store.ingest import ingest

    db.unlink(missing_ok=True)
    t = time.perf_counter()
    res = ingest(connect(f"sqlite:///{db}"), files, progress=False)
    s = time.perf_counter() - t
    return {"seconds": s, "read": res["read"], "accepted": res["accepted"], "duplicates": res["duplicates"],
            "quarantined": res["quarantined"], "peak_rss_mb": _peak_rss_mb()}


def run_pandas(files: list[Path], db: Path, chunksize: int | None) -> dict:
    import sqlite3

    import pandas as pd

    db.unlink(missing_ok=True)
    t = time.perf_counter()
    n = 0
    with sqlite3.connect(db) as con:
        for f in files:
            table = f.stem
            if chunksize is None:
                df = pd.read_json(f, lines=True)
                df.to_sql(table, con, if_exists="append", index=False, chunksize=50_000)
                n += len(df)
                del df
            else:
                for df in pd.read_json(f, lines=True, chunksize=chunksize):
                    df.to_sql(table, con, if_exists="append", index=False)
                    n += len(df)
    s = time.perf_counter() - t
    return {"seconds": s, "read": n, "peak_rss_mb": _peak_rss_mb()}


def measure(which: str, size: int, data_dir: Path, chunksize: int | None = None) -> dict:
    """Run one measurement in a fresh process; returns its result dict."""
    cmd = [sys.executable, __file__, "--child", which, "--data", str(data_dir)]
    if chunksize:
        cmd += ["--chunksize", str(chunksize)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    res["events_per_s"] = res["read"] / res["seconds"]
    res.update(size=size, method=which if not chunksize else f"{which} (chunks of {chunksize:,})")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--whole-file-pandas-max", type=int, default=1_000_000,
                    help="Largest size at which pandas reads the whole file at once (above: chunked).")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--chunksize", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        d = Path(args.data)
        files = [f for f in (d / "interactions.jsonl", d / "reactions.jsonl") if f.stat().st_size > 0]
        fn = run_rluf if args.child == "rluf" else (lambda f, db: run_pandas(f, db, args.chunksize))
        print(json.dumps(fn(files, d / f"{args.child}.db")))
        return

    rows = []
    for workload, turn_share in WORKLOADS.items():
        for size in args.sizes:
            d = WORK / f"events_{size}"
            print(f"{workload}: generating {size:,} events ...", file=sys.stderr, flush=True)
            generate(size, d, turn_share)
            file_mb = sum(f.stat().st_size for f in d.glob("*.jsonl")) / 1e6
            for which, chunks in (("rluf", None),
                                  ("pandas", None if size <= args.whole_file_pandas_max else 100_000)):
                print(f"  {which} ...", file=sys.stderr, flush=True)
                r = measure(which, size, d, chunks)
                r.update(input_mb=round(file_mb, 1), workload=workload)
                rows.append(r)
                print(f"    {r['events_per_s']:,.0f} events/s, peak {r['peak_rss_mb']:.0f} MB", file=sys.stderr)
            for f in d.glob("*"):
                f.unlink()
            d.rmdir()

    report = {
        "benchmark": "ingest",
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "targets": {"events_per_s": TARGET_EVENTS_PER_S, "peak_rss_mb": TARGET_PEAK_MB},
        "workloads": WORKLOADS,
        "results": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ingest.json").write_text(json.dumps(report, indent=2))
    lines = [
        "# Ingest benchmark",
        "",
        f"{report['date']}, {os.cpu_count()} CPUs, Python {platform.python_version()}. Generated JSONL "
        "(no model) into a fresh SQLite file, each run in its own process. rluf validates, dedupes and "
        "quarantines; the pandas baseline (`read_json(lines=True)` + `to_sql`) only loads. "
        f"Targets: ≥ {TARGET_EVENTS_PER_S:,} events/s, peak RSS ≤ {TARGET_PEAK_MB} MB at 10M.",
        "",
        "| workload | events | method | input MB | seconds | events/s | peak RSS MB | accepted | target met |",
        "|---|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        met = ""
        if r["method"] == "rluf":
            ok = r["events_per_s"] >= TARGET_EVENTS_PER_S and r["peak_rss_mb"] <= TARGET_PEAK_MB
            met = "yes" if ok else "no"
        lines.append(f"| {r['workload']} | {r['size']:,} | {r['method']} | {r['input_mb']} | {r['seconds']:.1f} | "
                     f"{r['events_per_s']:,.0f} | {r['peak_rss_mb']:.0f} | {r.get('accepted', '')} | {met} |")
    (RESULTS / "ingest.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
