"""A/B simulation: sticky salted-hash assignment, per-arm answers, and a real effect showing up."""

from __future__ import annotations

import json

import pytest

from rluf.simulate import SimulateConfig
from rluf.simulate.ab import ArmRouter, assign_arm, parse_arms
from rluf.simulate.engine import run_simulation
from rluf.simulate.responders import StyleResponder


def test_assignment_is_sticky_salted_and_weighted():
    users = [f"u{i:06d}" for i in range(4000)]
    a = [assign_arm(u, ["A", "B"], "s1") for u in users]
    assert a == [assign_arm(u, ["A", "B"], "s1") for u in users]  # sticky
    assert 0.46 < a.count("A") / len(a) < 0.54
    b = [assign_arm(u, ["A", "B"], "s2") for u in users]
    assert 0.4 < sum(x != y for x, y in zip(a, b, strict=True)) / len(a) < 0.6  # a new salt reshuffles
    w = [assign_arm(u, ["A", "B"], "s1", [9, 1]) for u in users]
    assert 0.87 < w.count("A") / len(w) < 0.93
    with pytest.raises(ValueError, match="positive weight"):
        assign_arm("u1", ["A", "B"], "s", [1, 0])


def test_parse_arms():
    arms, w = parse_arms(["control=policy:default", "treatment=policy:runs/cgpo:3"])
    assert arms == {"control": "policy:default", "treatment": "policy:runs/cgpo"} and w == [1.0, 3.0]
    for bad in (["x"], ["a=style"], ["a=style", "a=style"]):
        with pytest.raises(ValueError):
            parse_arms(bad)


def test_each_user_sees_one_arm_and_love_bait_gets_more_hearts(tmp_path):
    cfg = SimulateConfig(users=600, days=3, seed=3, data_dir=tmp_path / "none", calibration_turns=3000)
    router = ArmRouter({"plain": StyleResponder(p_closer=0.0), "bait": StyleResponder(p_closer=1.0)}, salt="t")
    res = run_simulation(cfg, tmp_path / "ab", responder=router)
    rows = [json.loads(x) for x in (tmp_path / "ab" / "interactions.jsonl").read_text().splitlines()]
    arm_of_user: dict[str, set] = {}
    for r in rows:
        arm_of_user.setdefault(r["user_id"], set()).add(r["policy"])
        assert r["policy"] == assign_arm(r["user_id"], ["plain", "bait"], "t")
    assert all(len(v) == 1 for v in arm_of_user.values())
    arms = res["arms"]
    assert set(arms) == {"plain", "bait"}
    # closers raise companionship users' love and cut their conversations short (the simulator's hack)
    assert arms["bait"]["mean_p_love"] > arms["plain"]["mean_p_love"]
    assert arms["bait"]["continuation_rate"] < arms["plain"]["continuation_rate"]


def test_cli_simulate_then_analyze(tmp_path):
    from typer.testing import CliRunner

    from rluf.cli import app

    db = f"sqlite:///{tmp_path / 'ab.db'}"
    res = CliRunner().invoke(app, ["abtest", "simulate", "--arm", "plain=style:closer=0", "--arm",
                                   "bait=style:closer=1", "--users", "300", "--days", "2", "--out",
                                   str(tmp_path / "ab"), "--db", db, "--data-dir", str(tmp_path / "none"), "--json"])
    assert res.exit_code == 0, res.output
    sim = json.loads(res.stdout.strip().splitlines()[-1])
    assert set(sim["arms"]) == {"plain", "bait"} and sim["ingest"]["quarantined"] == 0
    res = CliRunner().invoke(app, ["abtest", "analyze", "--db", db, "--arms", "plain,bait", "--json"])
    assert res.exit_code == 0, res.output
    r = json.loads(res.stdout)
    assert r["arms"]["plain"]["impressions"] == sim["arms"]["plain"]["turns"]
