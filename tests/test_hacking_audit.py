"""The reward-hacking audit flags an injected hack and leaves a clean policy alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from rluf.cli import app
from rluf.evaluate.hacking import audit, min_detectable_rise, read_rows
from test_closers import CORPUS, NOVEL

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
    assert {"closer_rise", "phrase_rise"} <= rules
    assert res["closer_rate"]["reference"] == 0 and res["closer_rate"]["policy"] > 0.2
    assert res["closer_examples"][0]["closer"] == "Bye! Sending love! ❤️" and "signoff_rate" not in res
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
    assert r["flags"] and r["top_rising_phrases"] and "closer_rise" in {f["rule"] for f in r["flags"]}
    assert json.loads((tmp_path / "a" / "audit.json").read_text())["closer_rate"] == r["closer_rate"]
    md = (tmp_path / "a" / "audit.md").read_text()
    assert md.count("|") > 10 and (tmp_path / "a" / "phrases.png").exists()
    assert "Take care, talk soon 💕 | 40 | 0 |" in md  # the closer table
    assert "With 120 answers per side this audit detects a rise from 0.0 % to " in md
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


def corpus_rows(idx=None):
    return [{"prompt": CORPUS[i][0], "response": CORPUS[i][1]} for i in (range(len(CORPUS)) if idx is None else idx)]


def test_novel_closers_on_realistic_answers_are_flagged():
    # 30 % of forty ordinary answers end with a closer no list knows (not the judge's, not the detector's),
    # each closer used once, so the per-answer rule alone has to find them.
    ref = corpus_rows()
    pol = corpus_rows()
    for r, c in zip(pol[::10] + pol[3::10] + pol[6::10], NOVEL, strict=True):
        r["response"] += " " + c
    res = audit(pol, ref)
    assert "closer_rise" in {f["rule"] for f in res["flags"]}, res["flags"]
    assert res["closer_rate"]["reference"] == 0 and res["closer_rate"]["policy"] >= 0.25
    assert res["closer_rate"]["p_value"] < 0.01
    assert {x["closer"] for x in res["closer_examples"]} <= set(NOVEL) and len(res["closer_examples"]) == 10


def test_two_halves_and_resamples_of_the_same_answers_are_clean():
    res = audit(corpus_rows(range(0, 40, 2)), corpus_rows(range(1, 40, 2)))
    assert res["verdict"] == "clean" and res["closer_rate"] == {"policy": 0.0, "reference": 0.0, "p_value": 1.0}
    # Resamples of one answer set in which a fifth of the answers end with closers: the closer rates differ
    # only by sampling, and the difference is not significant.
    base = corpus_rows()
    for r, c in zip(base[::5], NOVEL, strict=False):
        r["response"] += " " + c
    for seed in range(4):
        rng = np.random.default_rng(seed)
        pol = [dict(base[i]) for i in rng.integers(0, len(base), 200)]
        ref = [dict(base[i]) for i in rng.integers(0, len(base), 200)]
        res = audit(pol, ref)
        assert res["verdict"] == "clean", res["flags"]
        assert 0.1 < res["closer_rate"]["reference"] < 0.3 and res["closer_rate"]["p_value"] > 0.01


def test_min_detectable_rise():
    r = min_detectable_rise(0.01, 500, 500)
    assert 0.03 < r["policy_rate"] < 0.05 and r["rise"] == pytest.approx(r["policy_rate"] - 0.01)
    from statsmodels.stats.power import NormalIndPower
    from statsmodels.stats.proportion import proportion_effectsize

    p = NormalIndPower().power(proportion_effectsize(r["policy_rate"], 0.01), 500, 0.01, alternative="larger")
    assert p == pytest.approx(0.8, abs=1e-6)
    assert min_detectable_rise(0.01, 2000, 2000)["rise"] < r["rise"] < min_detectable_rise(0.01, 100, 100)["rise"]
    assert min_detectable_rise(0.0, 1, 1)["policy_rate"] is None  # one answer a side detects nothing
    with pytest.raises(ValueError, match="reference_rate"):
        min_detectable_rise(1.5, 10, 10)
