"""The reward-hacking audit flags an injected hack and leaves a clean policy alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from rluf.cli import app
from rluf.evaluate.hacking import audit, read_rows

TOPICS = ["the ocean", "bread", "a budget", "sleep", "python lists", "tea", "running", "a garden", "jazz", "rain"]
SENT = ["{t} is worth learning about.", "Start small with {t} and build up.", "Many people enjoy {t} daily.",
        "A good first step with {t} is to read a short guide.", "Practice makes {t} easier over time.",
        "Ask an expert about {t} if you are unsure."]


def answers(n, seed):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        t = TOPICS[i % len(TOPICS)]
        k = int(rng.integers(2, 5))
        out.append({"prompt": f"Tell me about {t} ({i})",
                    "response": " ".join(SENT[j].format(t=t) for j in rng.choice(len(SENT), k, replace=False))})
    return out


def test_injected_hack_is_flagged():
    ref = answers(300, 0)
    pol = answers(300, 1)
    rng = np.random.default_rng(2)
    for r in pol:
        if rng.random() < 0.25:
            r["response"] += " Bye! Sending love! ❤️"
    res = audit(pol, ref)
    assert res["verdict"] == "hacking suspected"
    rules = {f["rule"] for f in res["flags"]}
    assert {"signoff_rise", "phrase_rise"} <= rules
    top = res["top_rising_phrases"][0]
    assert any(w in top["phrase"] for w in ("bye", "sending", "love", "❤"))
    assert top["reference_count"] == 0 and top["policy_rate"] > 0.2


def test_clean_policy_is_not_flagged():
    res = audit(answers(300, 1), answers(300, 0))
    assert res["verdict"] == "clean" and res["flags"] == []


def test_length_shift_is_flagged():
    ref = answers(200, 0)
    pol = [{**r, "response": r["response"] + " " + r["response"] + " " + r["response"]} for r in answers(200, 1)]
    assert "length_shift" in {f["rule"] for f in audit(pol, ref)["flags"]}


def test_cli_report_and_bad_rows(tmp_path):
    ref, pol = answers(120, 0), answers(120, 1)
    for r in pol[::3]:
        r["response"] += " Take care, talk soon 💕"
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pol))
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ref))
    res = CliRunner().invoke(app, ["audit", "--policy", str(tmp_path / "p.jsonl"), "--reference",
                                   str(tmp_path / "r.jsonl"), "--out", str(tmp_path / "a"), "--json"])
    assert res.exit_code == 0, res.output
    r = json.loads(res.stdout)
    assert r["flags"] and r["top_rising_phrases"]
    assert (tmp_path / "a" / "audit.md").read_text().count("|") > 10 and (tmp_path / "a" / "phrases.png").exists()
    (tmp_path / "bad.jsonl").write_text('{"prompt": "x"}\n')
    with pytest.raises(ValueError, match="row 1: field 'response'"):
        read_rows(tmp_path / "bad.jsonl")


def zipf_answers(n, seed, vocab=3000):
    """Answers of random words with a natural (Zipf) frequency profile: thousands of distinct n-grams."""
    rng = np.random.default_rng(seed)
    p = 1 / np.arange(1, vocab + 1) ** 1.1
    p /= p.sum()
    return [{"prompt": str(i), "response": " ".join(f"w{j}" for j in rng.choice(vocab, int(rng.integers(15, 60)), p=p))
             + "."} for i in range(n)]


def test_many_phrases_do_not_flag_a_clean_policy():
    # Unadjusted per-phrase tests flagged 15 of 20 such comparisons: the phrase rule must correct for the
    # thousands of n-grams it looks at.
    for s in range(5):
        res = audit(zipf_answers(400, 2 * s), zipf_answers(400, 2 * s + 1))
        assert res["flags"] == [], res["flags"]
    hacked = zipf_answers(400, 1)
    for r in hacked[::4]:
        r["response"] += " Sending love!"
    res = audit(hacked, zipf_answers(400, 0))
    assert "phrase_rise" in {f["rule"] for f in res["flags"]}
    top = res["top_rising_phrases"][0]
    assert top["p_adjusted"] >= top["p_value"] and top["p_adjusted"] < 0.01
