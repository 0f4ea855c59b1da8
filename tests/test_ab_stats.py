"""A/B statistics checked against independently computed cases, and analyze() on a real store."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats
from sqlalchemy import insert
from typer.testing import CliRunner

from rluf.cli import app
from rluf.evaluate.ab_stats import analyze, lift_interval, power, ratio_var, relative_change, twoway_rate_var
from rluf.store import connect
from rluf.store.schema import reactions, responses


def test_ratio_variance_matches_the_linearisation():
    rng = np.random.default_rng(1)
    n = rng.integers(1, 20, 300).astype(float)
    y = rng.binomial(n.astype(int), rng.beta(0.5, 20, 300)).astype(float)
    r, v = ratio_var(y, n)
    # independent route: residuals of the linearised ratio, e_u = y_u - R n_u, Var(R) = Var(e) / (N n̄²)
    e = y - (y.sum() / n.sum()) * n
    assert r == pytest.approx(y.sum() / n.sum())
    assert v == pytest.approx(e.var(ddof=1) / (len(n) * n.mean() ** 2), rel=1e-9)


def test_clustered_interval_covers_and_the_naive_one_does_not():
    """200 A/A experiments with strongly clustered users: the delta-method CI covers the true lift (0) about
    95 % of the time; a binomial CI that treats impressions as independent covers far less."""
    rng = np.random.default_rng(7)
    cover = naive = 0
    for _ in range(200):
        arms = []
        for _ in range(2):
            n = rng.integers(1, 40, 400).astype(float)
            p = rng.beta(0.3, 12, 400)  # heavy-tailed propensities: a few users give most reactions
            arms.append((rng.binomial(n.astype(int), p).astype(float), n))
        (ya, na), (yb, nb) = arms
        res = relative_change(ya, na, yb, nb)
        cover += res["ci_low"] <= 0 <= res["ci_high"]
        pa, pb = ya.sum() / na.sum(), yb.sum() / nb.sum()
        se = np.sqrt(pa * (1 - pa) / na.sum() + pb * (1 - pb) / nb.sum())
        naive += abs(pb - pa) <= 1.96 * se
    assert 0.90 <= cover / 200 <= 0.99
    assert naive / 200 < 0.8


def test_bootstrap_agrees_with_the_delta_method():
    rng = np.random.default_rng(3)
    n = rng.integers(1, 10, 800).astype(float)
    ya = rng.binomial(n.astype(int), 0.05).astype(float)
    yb = rng.binomial(n.astype(int), 0.07).astype(float)
    d = relative_change(ya, n, yb, n)
    b = relative_change(ya, n, yb, n, method="bootstrap", n_boot=3000)
    assert b["rel_change"] == d["rel_change"]
    assert abs(b["ci_low"] - d["ci_low"]) < 0.08 and abs(b["ci_high"] - d["ci_high"]) < 0.08


def test_power_matches_the_textbook_case():
    # two-proportion test, p1 = 0.10 → p2 = 0.12, alpha 0.05 two-sided, power 0.8: about 3,840 per arm
    r = power(0.10, mde_rel=0.2)
    assert 3800 <= r["users_per_arm"] <= 3900
    back = power(0.10, users_per_arm=r["users_per_arm"])
    assert back["mde_rel"] == pytest.approx(0.2, abs=0.01)
    clustered = power(0.10, mde_rel=0.2, impressions_per_user=10, icc=0.1)
    assert clustered["design_effect"] == pytest.approx(1.9)
    assert clustered["users_per_arm"] == pytest.approx(r["users_per_arm"] * 1.9 / 10, rel=0.01)
    with pytest.raises(ValueError, match="exactly one"):
        power(0.1)


def fill_store(url, n_users=300, seed=0):
    """Two arms; B's users love more. Also: a withdrawn love, a late love, another user's love — none count."""
    rng = np.random.default_rng(seed)
    eng = connect(url)
    turns, events, per_user = [], [], {}
    t0 = 1_700_000_000_000
    for u in range(n_users):
        arm = "A" if u % 2 else "B"
        rate = 0.05 if arm == "A" else 0.08
        for k in range(int(rng.integers(1, 8))):
            rid = f"r{u}-{k}"
            created = t0 + u * 1000 + k * 10
            turns.append({"response_id": rid, "conversation_id": f"c{u}", "user_id": f"u{u}", "turn_index": k,
                          "created_at_ms": created, "policy": arm, "response": "x", "row_hash": "h"})
            loved = rng.random() < rate
            per_user.setdefault((arm, f"u{u}"), [0, 0, 0])
            per_user[(arm, f"u{u}")][0] += 1
            per_user[(arm, f"u{u}")][1] += loved
            if loved:
                events.append({"response_id": rid, "user_id": f"u{u}", "reaction": "love", "created_at_ms": created + 5,
                               "removed": False})
    # noise that must not count
    events += [{"response_id": "r1-0", "user_id": "u1", "reaction": "love", "created_at_ms": t0 + 1000 + 50,
                "removed": False},
               {"response_id": "r1-0", "user_id": "u1", "reaction": "love", "created_at_ms": t0 + 1000 + 60,
                "removed": True},
               {"response_id": "r3-0", "user_id": "u3", "reaction": "love", "created_at_ms": t0 + 3000 + 90_000_000,
                "removed": False},
               {"response_id": "r5-0", "user_id": "u999", "reaction": "love", "created_at_ms": t0 + 5000 + 5,
                "removed": False}]
    with eng.begin() as c:
        c.execute(insert(responses), turns)
        c.execute(insert(reactions), events)
    return eng, per_user


def test_analyze_on_the_store(db_url):
    eng, per_user = fill_store(db_url)
    res = analyze(eng, ("A", "B"))
    # the same numbers from the hand-kept per-user counts
    arrs = {a: np.array([v for (arm, _), v in per_user.items() if arm == a], dtype=float) for a in "AB"}
    want = relative_change(arrs["A"][:, 1], arrs["A"][:, 0], arrs["B"][:, 1], arrs["B"][:, 0])
    assert res["lift"] == pytest.approx(want["rel_change"])
    assert res["ci_low"] == pytest.approx(want["ci_low"]) and res["p_value"] == pytest.approx(want["p_value"])
    n = [res["arms"]["A"]["users"], res["arms"]["B"]["users"]]
    assert res["srm_p"] == pytest.approx(stats.chisquare(n).pvalue)
    cont = res["guardrails"][0]
    assert cont["metric"] == "continuation_rate" and "non_inferior" in cont
    with pytest.raises(ValueError, match="arms found"):
        analyze(eng, ("A", "Z"))


def test_bots_are_dropped_from_both_arms_but_counted_for_srm(sqlite_url):
    eng, per_user = fill_store(sqlite_url)
    bots = [_turn(10_000 + b, k, "A") for b in range(3) for k in range(20)]  # 3 control users who heart everything
    with eng.begin() as c:
        c.execute(insert(responses), bots)
        c.execute(insert(reactions), [_love(10_000 + b, k) for b in range(3) for k in range(20)])
    res = analyze(eng, ("A", "B"))
    assert res["bot_filter"]["A"] == {"users": 3, "impressions": 60, "reactions": 60}
    assert res["bot_filter"]["B"]["users"] == 0  # humans loving at 5-8 % are never flagged
    # the lift is the one computed on the human users alone ...
    arrs = {a: np.array([v for (arm, _), v in per_user.items() if arm == a], dtype=float) for a in "AB"}
    want = relative_change(arrs["A"][:, 1], arrs["A"][:, 0], arrs["B"][:, 1], arrs["B"][:, 0])
    assert res["lift"] == pytest.approx(want["rel_change"]) and res["ci_low"] == pytest.approx(want["ci_low"])
    assert res["arms"]["A"]["users"] == len(arrs["A"])
    # ... while the sample-ratio check still sees every assigned user
    assert res["srm_p"] == pytest.approx(stats.chisquare([len(arrs["A"]) + 3, len(arrs["B"])]).pvalue)
    kept = analyze(eng, ("A", "B"), bot_max_rate=None)
    assert kept["bot_filter"] == {"max_rate": None} and kept["arms"]["A"]["loves"] == res["arms"]["A"]["loves"] + 60
    assert kept["lift"] < res["lift"]  # 60 bot loves in the control arm hide B's gain
    twoway = analyze(eng, ("A", "B"), method="twoway")
    assert twoway["bot_filter"]["A"]["users"] == 3 and twoway["arms"]["A"]["loves"] == res["arms"]["A"]["loves"]
    # the two-way interval is computed from per-turn rows: they must lose the bots too (same point estimate)
    assert twoway["lift"] == pytest.approx(res["lift"])
    assert analyze(eng, ("A", "B"), method="twoway", bot_max_rate=None)["lift"] == pytest.approx(kept["lift"])
    disliked = analyze(eng, ("A", "B"), reaction="dislike")  # heavy dislikers are the harm measured, not bots
    assert disliked["bot_filter"]["max_rate"] is None and "off_because" in disliked["bot_filter"]
    res = CliRunner().invoke(app, ["abtest", "analyze", "--db", sqlite_url, "--arms", "A,B", "--keep-bots", "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["lift"] == pytest.approx(kept["lift"])
    res = CliRunner().invoke(app, ["abtest", "analyze", "--db", sqlite_url, "--arms", "A,B", "--bot-max-rate", "2"])
    assert res.exit_code != 0 and "--bot-max-rate must be in (0, 1]" in res.output
    res = CliRunner().invoke(app, ["abtest", "analyze", "--db", sqlite_url, "--arms", "A,B", "--keep-bots",
                                   "--bot-max-rate", "0", "--json"])
    assert res.exit_code == 0, res.output  # with the filter off its threshold is not read


def test_cli_analyze_and_power(sqlite_url):
    fill_store(sqlite_url)
    res = CliRunner().invoke(app, ["abtest", "analyze", "--db", sqlite_url, "--arms", "A,B", "--json"])
    assert res.exit_code == 0, res.output
    r = json.loads(res.stdout)
    for k in ("lift", "ci_low", "ci_high", "p_value", "srm_p", "guardrails"):
        assert k in r
    res = CliRunner().invoke(app, ["abtest", "power", "--baseline", "0.02", "--mde", "0.1", "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["users_per_arm"] > 0


def _turn(u, k, arm, turn_index=None, meta=None):
    return {"response_id": f"r{u}-{k}", "conversation_id": f"c{u}", "user_id": f"u{u}",
            "turn_index": k if turn_index is None else turn_index, "created_at_ms": 1_700_000_000_000 + u * 1000 + k,
            "policy": arm, "response": "x", "row_hash": "h", "metadata": json.dumps(meta) if meta else None}


def _love(u, k):
    return {"response_id": f"r{u}-{k}", "user_id": f"u{u}", "reaction": "love",
            "created_at_ms": 1_700_000_000_000 + u * 1000 + k + 5, "removed": False}


def test_a_turn_is_continued_by_any_later_turn(db_url):
    # imported logs may number messages (0, 2, 4), not assistant turns: 2 of each user's 3 turns are continued
    eng = connect(db_url)
    with eng.begin() as c:
        c.execute(insert(responses), [_turn(u, k, "AB"[u % 2], turn_index=2 * k) for u in range(40) for k in range(3)])
        c.execute(insert(reactions), [_love(u, 0) for u in range(0, 40, 3)])
    res = analyze(eng, ("A", "B"))
    assert res["arms"]["A"]["continuation_rate"] == pytest.approx(2 / 3)
    assert res["arms"]["B"]["continuation_rate"] == pytest.approx(2 / 3)


def test_no_love_in_control_gives_an_undefined_lift_not_an_error(sqlite_url):
    eng = connect(sqlite_url)
    with eng.begin() as c:
        c.execute(insert(responses), [_turn(u, k, "AB"[u % 2]) for u in range(40) for k in range(3)])
        c.execute(insert(reactions), [_love(u, 0) for u in range(1, 40, 2)][:5])  # only B (odd) users love
    assert np.isfinite(analyze(eng, ("B", "A"))["mde_rel"])  # control B has loves: an MDE exists
    res = analyze(eng, ("A", "B"))
    assert np.isnan(res["lift"]) and np.isnan(res["mde_rel"])


def test_equal_unsafe_rates_pass_the_safety_guardrail(sqlite_url):
    rng = np.random.default_rng(0)
    eng = connect(sqlite_url)
    turns = [_turn(u, k, "AB"[u % 2], meta={"unsafe": True} if rng.random() < 0.2 else {"x": 1})
             for u in range(1000) for k in range(5)]
    with eng.begin() as c:
        c.execute(insert(responses), turns)
        c.execute(insert(reactions), [_love(u, k) for u in range(1000) for k in range(5) if rng.random() < 0.1])
    g = {x["metric"]: x for x in analyze(eng, ("A", "B"))["guardrails"]}["safety_violation_rate"]
    want = {a: sum(json.loads(t["metadata"]).get("unsafe", False) for t in turns if t["policy"] == a) for a in "AB"}
    assert g["control"] == pytest.approx(want["A"] / 2500) and g["treatment"] == pytest.approx(want["B"] / 2500)
    assert g["ci_low"] < 0 < g["ci_high"] < g["margin"] and g["non_inferior"]


def test_twoway_variance_matches_the_cgm_formula():
    """Independent route: V = c_u S_u + c_a S_a − c_ua S_ua, S_g = Σ_g (Σ_{i∈g} e_i)² / N², e = y − ȳ,
    c_g = G / (G − 1) (statsmodels' small-sample factor with one parameter)."""
    rng = np.random.default_rng(5)
    n = 3000
    users = rng.integers(0, 300, n)
    answers = rng.integers(0, 40, n)
    p = rng.beta(1, 30, 300)[users] * rng.lognormal(0, 0.8, 40)[answers]
    y = (rng.random(n) < np.clip(p, 0, 1)).astype(float)
    r, v = twoway_rate_var(y, users.astype(str), answers.astype(str))
    e = y - y.mean()

    def part(keys):
        _, g = np.unique(keys, return_inverse=True, axis=0)
        sums = np.bincount(g.ravel(), weights=e)
        k = len(sums)
        return k / (k - 1) * (sums**2).sum() / n**2

    want = part(users) + part(answers) - part(np.column_stack([users, answers]))
    assert r == pytest.approx(y.mean()) and v == pytest.approx(want, rel=1e-6)


def test_twoway_interval_covers_when_answers_are_shared_and_the_user_one_does_not():
    """A/A tests where each arm answers from its own bank of 8 answers of varying appeal (as the simulated A/B
    does): the truth over banks is no lift. The user-clustered CI treats the bank as fixed and misses that."""
    rng = np.random.default_rng(11)
    cover_twoway = cover_user = 0
    reps = 150
    for _ in range(reps):
        arms = []
        for _ in range(2):
            appeal = rng.beta(1, 25, 8)
            users = np.repeat(np.arange(300), 5)
            answers = rng.integers(0, 8, len(users))
            y = (rng.random(len(users)) < appeal[answers]).astype(float)
            arms.append((y, users, answers))
        (ya, ua, aa), (yb, ub, ab) = arms
        tw = lift_interval(*twoway_rate_var(ya, ua, aa), *twoway_rate_var(yb, ub, ab))
        per_user = [(np.bincount(u, weights=y), np.bincount(u).astype(float)) for y, u, _ in arms]
        one = relative_change(per_user[0][0], per_user[0][1], per_user[1][0], per_user[1][1])
        cover_twoway += tw["ci_low"] <= 0 <= tw["ci_high"]
        cover_user += one["ci_low"] <= 0 <= one["ci_high"]
    print(f"coverage: two-way {cover_twoway / reps:.3f}, user-clustered {cover_user / reps:.3f}")
    assert cover_twoway / reps >= 0.85
    assert cover_user / reps < cover_twoway / reps - 0.15


def test_analyze_twoway_on_the_store(sqlite_url):
    eng, _ = fill_store(sqlite_url)
    d, t = analyze(eng, ("A", "B")), analyze(eng, ("A", "B"), method="twoway")
    assert t["method"] == "twoway" and t["lift"] == pytest.approx(d["lift"])
    assert np.isfinite(t["ci_low"]) and t["ci_low"] < t["lift"] < t["ci_high"]
    res = CliRunner().invoke(app, ["abtest", "analyze", "--db", sqlite_url, "--arms", "A,B", "--method", "twoway",
                                   "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["lift"] == pytest.approx(d["lift"])
