"""The data path end to end, through the CLI: simulate → ingest → dataset build → export, and `rluf demo`."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from rluf.cli import app

runner = CliRunner()


def run_json(*args):
    res = runner.invoke(app, [*map(str, args), "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    d = tmp_path_factory.mktemp("pipeline")
    db = f"sqlite:///{d / 'rluf.db'}"
    sim = run_json("simulate", "--users", 300, "--days", 4, "--seed", 3, "--responder", "style", "--out", d / "sim")
    files = [d / "sim" / "interactions.jsonl", d / "sim" / "reactions.jsonl"]
    ing = run_json("ingest", *files, "--db", db)
    card = run_json("dataset", "build", "--db", db, "--signal", "love", "--out", d / "ds")
    return d, db, sim, ing, card


def test_simulate_writes_the_three_files(pipeline):
    d, *_ = pipeline
    for name in ("interactions.jsonl", "reactions.jsonl", "oracle.jsonl"):
        assert (d / "sim" / name).stat().st_size > 0


def test_ingest_accepts_everything_the_simulator_writes(pipeline):
    d, db, sim, ing, card = pipeline
    n_lines = sum(1 for f in ("interactions.jsonl", "reactions.jsonl") for _ in open(d / "sim" / f, "rb"))
    assert ing["read"] == n_lines
    assert ing["read"] == ing["accepted"] + ing["duplicates"] + ing["quarantined"]
    assert ing["quarantined"] == 0 and ing["duplicates"] == 0


def test_reingest_changes_nothing(pipeline):
    d, db, *_ = pipeline
    again = run_json("ingest", d / "sim" / "interactions.jsonl", d / "sim" / "reactions.jsonl", "--db", db)
    assert again["accepted"] == 0 and again["duplicates"] == again["read"]


def test_dataset_splits_are_temporal_and_labelled(pipeline):
    d, db, sim, ing, card = pipeline
    tables = {s: pq.read_table(d / "ds" / f"{s}.parquet").to_pandas() for s in ("train", "validation", "test")}
    assert all(len(t) > 0 for t in tables.values())
    assert tables["train"]["created_at"].max() <= tables["validation"]["created_at"].min()
    assert tables["validation"]["created_at"].max() <= tables["test"]["created_at"].min()
    total_pos = sum(int(t["label"].sum()) for t in tables.values())
    assert total_pos > 0
    assert set(tables["train"]["label"].unique()) <= {0, 1}
    assert (d / "ds" / "card.json").exists()
    assert json.loads((d / "ds" / "card.json").read_text())["signal"] == "love"


def test_export_round_trips_through_ingest(pipeline, tmp_path):
    d, db, *_ = pipeline
    out = run_json("export", "--db", db, "--out", tmp_path / "ex")
    db2 = f"sqlite:///{tmp_path / 'second.db'}"
    res = run_json("ingest", tmp_path / "ex" / "interactions.jsonl", tmp_path / "ex" / "reactions.jsonl", "--db", db2)
    assert res["accepted"] == out["interactions"] + out["reactions"] and res["quarantined"] == 0
    out2 = run_json("export", "--db", db2, "--out", tmp_path / "ex2")
    for name in ("interactions.jsonl", "reactions.jsonl"):
        assert (tmp_path / "ex" / name).read_bytes() == (tmp_path / "ex2" / name).read_bytes()
    assert out2["interactions"] == out["interactions"]


def test_cli_errors_are_clear(tmp_path):
    res = runner.invoke(app, ["ingest", str(tmp_path / "missing.jsonl"), "--db", f"sqlite:///{tmp_path}/x.db",
                              "--json"])
    assert res.exit_code == 2
    assert "no such file" in json.loads(res.stdout.strip().splitlines()[-1])["error"]
    bad = tmp_path / "x.txt"
    bad.write_text("hello")
    res = runner.invoke(app, ["ingest", str(bad), "--db", f"sqlite:///{tmp_path}/x.db"])
    assert res.exit_code == 2 and "unknown format" in res.output


def test_demo_runs_the_data_path(tmp_path):
    res = run_json("demo", "--out", tmp_path / "demo", "--users", 200, "--days", 3, "--stop-after", "dataset",
                   "--policy-log-users", 0)  # the second deployment needs SmolLM2: the demo's own run covers it
    assert res["ingest"]["quarantined"] == 0
    assert res["card"]["signal"] == "love"
    assert (tmp_path / "demo" / "dataset" / "train.parquet").exists()


def test_cli_imports_no_torch():
    """`rluf --help` and the data commands must not pay for importing torch / transformers."""
    import subprocess
    import sys

    code = ("import sys, rluf.cli; from typer.testing import CliRunner; CliRunner().invoke(rluf.cli.app, ['--help']);"
            "print(any(m in sys.modules for m in ('torch', 'transformers')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_demo_profile_follows_the_hardware(monkeypatch):
    """No --profile: the quick budgets where bf16 is fast, the smaller fp32 ones elsewhere; every profile names
    the same budget keys; an explicit or unknown profile is kept or refused."""
    import rluf.hardware
    from rluf.demo import PROFILES, resolve_profile

    monkeypatch.setattr(rluf.hardware, "bf16_is_fast", lambda: True)
    assert resolve_profile(None) == "quick"
    monkeypatch.setattr(rluf.hardware, "bf16_is_fast", lambda: False)
    assert resolve_profile(None) == "quick-fp32" and resolve_profile("quick") == "quick"
    assert len({frozenset(p) for p in PROFILES.values()}) == 1
    assert PROFILES["quick-fp32"]["policy_steps"] < PROFILES["quick"]["policy_steps"]
    with pytest.raises(ValueError, match="unknown profile"):
        resolve_profile("fast")
