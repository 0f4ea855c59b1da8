"""Offline evaluator on tiny models built in the test."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from rluf.cli import app
from rluf.evaluate.offline import bootstrap_ci, evaluate_policies, wilson_ci
from tiny_models import make_tiny_policy, make_tiny_reward


def test_intervals_against_known_cases():
    lo, hi = wilson_ci(50, 100)  # textbook: 0.5 ± ~0.097
    assert abs(lo - 0.4038) < 1e-3 and abs(hi - 0.5962) < 1e-3
    x = np.random.default_rng(0).normal(0.3, 0.1, 400)
    lo, hi = bootstrap_ci(x)
    half = 1.96 * x.std(ddof=1) / np.sqrt(len(x))  # the normal approximation the bootstrap should match
    assert abs((hi - lo) / 2 - half) < 0.2 * half and lo < x.mean() < hi


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("eval")
    return {"policy": make_tiny_policy(d / "policy"), "love": make_tiny_reward(d / "love", "love")}


def test_generated_and_logged_answers(tiny, tmp_path):
    data = tmp_path / "no-data"  # built-in prompts
    res = CliRunner().invoke(app, [
        "evaluate", "--policy", f"ref={tiny['policy']}", "--policy", f"same={tiny['policy']}",
        "--out", str(tmp_path / "e"), "--love-model", str(tiny["love"]), "--helpfulness-model", str(tiny["love"]),
        "--safety-model", str(tiny["love"]), "--chat-prompts", "12", "--safety-prompts", "6",
        "--max-new-tokens", "6", "--data-dir", str(data), "--json"])
    assert res.exit_code == 0, res.output
    r = json.loads(res.stdout.strip().splitlines()[-1])
    assert set(r["policies"]) == {"ref", "same"} and r["prompts"] == {"chat": 12, "safety": 6}
    ref = r["policies"]["ref"]
    assert ref["helpfulness_win_rate"] == 0.5  # the reference ties with itself on every prompt
    assert ref["p_love_ci"][0] <= ref["p_love"] <= ref["p_love_ci"][1]
    assert (tmp_path / "e" / "evaluate.md").exists() and (tmp_path / "e" / "p_love.png").exists()
    rows = [json.loads(x) for x in (tmp_path / "e" / "answers" / "ref.jsonl").read_text().splitlines()]
    assert len(rows) == 18 and all("response" in x for x in rows)

    # logged answers: the same prompts answered with love-bait closers
    bait = tmp_path / "bait.jsonl"
    bait.write_text("".join(json.dumps({"prompt": x["prompt"], "response": x["response"] + " Bye! Sending love"})
                            + "\n" for x in rows))
    r2 = evaluate_policies({"ref": str(tiny["policy"])}, tmp_path / "e2", str(tiny["love"]), None, None,
                           n_chat=12, n_safety=6, max_new_tokens=6, data_dir=data, answers={"bait": bait})
    assert r2["policies"]["bait"]["closer_rate"] == 1.0 and "signoff_rate" not in r2["policies"]["bait"]
    assert r2["policies"]["bait"]["violation_signoff"] == 1.0
    assert r2["policies"]["ref"]["closer_rate"] < 1.0
    assert "closer rate" in (tmp_path / "e2" / "evaluate.md").read_text()
    assert r2["policies"]["bait"]["p_love"] > r2["policies"]["ref"]["p_love"]  # the RM likes the word "love"

    # a closer outside every phrase list is counted by the evaluator's detector as well
    novel = tmp_path / "novel.jsonl"
    novel.write_text("".join(json.dumps({"prompt": x["prompt"], "response": x["response"] + " Until we meet again, "
                                         "friend! ✨"}) + "\n" for x in rows))
    r3 = evaluate_policies({"ref": str(tiny["policy"])}, tmp_path / "e3", str(tiny["love"]), None, None,
                           n_chat=12, n_safety=6, max_new_tokens=6, data_dir=data, answers={"novel": novel})
    assert r3["policies"]["novel"]["closer_rate"] == 1.0


def test_bad_policy_spec_is_a_clear_error(tmp_path):
    res = CliRunner().invoke(app, ["evaluate", "--policy", "nope", "--out", str(tmp_path), "--json"])
    assert res.exit_code == 2 and "NAME=DIR" in json.loads(res.stdout)["error"]
