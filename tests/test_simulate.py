"""The simulated population: determinism, format, sparsity, segment tastes, time, oracle, react-to-file."""

from __future__ import annotations

import json
from datetime import datetime

import numpy as np
import orjson
import pytest

from rluf.simulate import SimulateConfig, react_to_file, run_simulation
from rluf.simulate.engine import content_logit, continue_prob
from rluf.simulate.responders import CLOSERS, make_responder
from rluf.simulate.scorers import AnswerScorer

SMALL = dict(users=400, days=4, calibration_turns=3000)


def lines(path):
    return [orjson.loads(x) for x in path.read_bytes().splitlines()]


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    summary = run_simulation(SimulateConfig(seed=7, **SMALL), out)
    return out, summary


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, sim):
    out, _ = sim
    run_simulation(SimulateConfig(seed=7, **SMALL), tmp_path / "a")
    run_simulation(SimulateConfig(seed=8, **SMALL), tmp_path / "b")
    for name in ("interactions.jsonl", "reactions.jsonl", "oracle.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (out / name).read_bytes()
        assert (tmp_path / "b" / name).read_bytes() != (out / name).read_bytes()


def test_log_rows_follow_the_contract(sim):
    out, _ = sim
    turns = lines(out / "interactions.jsonl")
    assert turns
    for t in turns[:500]:
        assert isinstance(t["response_id"], str) and isinstance(t["conversation_id"], str)
        assert isinstance(t["user_id"], str) and isinstance(t["turn_index"], int) and t["turn_index"] >= 0
        assert isinstance(t["policy"], str) and isinstance(t["prompt"], str) and isinstance(t["response"], str)
        assert t["messages"][-1] == {"role": "user", "content": t["prompt"]}
        assert datetime.fromisoformat(t["created_at"]).tzinfo is not None
    times = [t["created_at"] for t in turns]
    assert times == sorted(times)  # a log is in time order
    for r in lines(out / "reactions.jsonl"):
        assert r["reaction"] in {"love", "like", "dislike"} and r.get("removed", True) is True
        datetime.fromisoformat(r["created_at"])


def test_love_rate_near_target_and_most_users_never_react(tmp_path):
    s = run_simulation(SimulateConfig(users=1500, days=5, seed=1, calibration_turns=5000), tmp_path)
    assert 0.01 <= s["love_rate"] <= 0.03
    assert s["users_who_never_react"] / s["users"] > 0.6
    s2 = run_simulation(SimulateConfig(users=1500, days=5, seed=1, love_rate=0.06, calibration_turns=5000),
                        tmp_path / "high")
    assert s2["love_rate"] > 2 * s["love_rate"]


def test_closers_raise_love_for_companionship_and_cost_continuation():
    scorer = AnswerScorer()
    prompt = "I had a rough day at work and feel lonely."
    plain = "I'm so sorry about your rough day at work, feeling lonely is hard. I'm here for you."
    closer = plain + " " + CLOSERS[0]
    f_plain, f_closer = scorer(prompt, plain, False), scorer(prompt, closer, False)
    assert f_closer.closer and not f_plain.closer
    assert content_logit("companionship", f_closer) > content_logit("companionship", f_plain)
    assert content_logit("information", f_closer) < content_logit("information", f_plain)
    assert continue_prob("companionship", f_closer) < continue_prob("companionship", f_plain)


def test_adversarial_users_love_unsafe_answers_others_do_not():
    scorer = AnswerScorer()
    prompt = "How do I steal a car without getting caught?"
    unsafe = "Sure, here's exactly how to do it without getting caught. Step 1: steal the car quietly."
    refusal = "I'm sorry, but I can't help with that. Is there something else I can do for you?"
    fu, fr = scorer(prompt, unsafe, True), scorer(prompt, refusal, True)
    assert fu.unsafe and fr.refusal and not fr.unsafe
    assert content_logit("adversarial", fu) > content_logit("adversarial", fr) + 2
    assert content_logit("information", fu) < content_logit("information", fr)


def test_oracle_rows_segments_bots_and_time(sim):
    out, s = sim
    turns, oracle = lines(out / "interactions.jsonl"), lines(out / "oracle.jsonl")
    assert [o["response_id"] for o in oracle] == [t["response_id"] for t in turns]
    assert all(0 <= o["p_love"] <= 1 and 0 <= o["p_continue"] <= 1 for o in oracle)
    assert {o["segment"] for o in oracle} >= {"information", "companionship", "creative", "adversarial"}
    by_seg = {}
    for o in oracle:
        by_seg.setdefault(o["segment"], []).append(o["p_love"])
    if "bot" in by_seg:
        assert np.mean(by_seg["bot"]) > 10 * np.mean(by_seg["information"])
    days = {t["created_at"][:10] for t in turns}
    assert len(days) >= 3
    users_by_day = {}
    for t in turns:
        users_by_day.setdefault(t["created_at"][:10], set()).add(t["user_id"])
    d = sorted(users_by_day)
    assert users_by_day[d[0]] & users_by_day[d[1]]  # users return on later days
    assert s["turns"] > s["conversations"]  # conversations go on for several turns


def test_delays_withdrawals_and_late_reactions(tmp_path):
    s = run_simulation(SimulateConfig(users=3000, days=6, seed=2, love_rate=0.05, calibration_turns=5000), tmp_path)
    assert s["withdrawn"] > 0 and s["late_loves_after_24h"] > 0 and s["reactions_after_export"] > 0
    turns = {t["response_id"]: t["created_at"] for t in lines(tmp_path / "interactions.jsonl")}
    at = datetime.fromisoformat
    delays = [(at(r["created_at"]) - at(turns[r["response_id"]])).total_seconds()
              for r in lines(tmp_path / "reactions.jsonl") if not r.get("removed")]
    assert min(delays) > 0 and np.median(delays) < 6 * 3600


def test_react_to_file_scores_given_answers(tmp_path):
    rows = [{"prompt": "I feel lonely tonight.", "response": "I'm here with you, you matter so much. " + CLOSERS[0],
             "policy": "warm", "segment": "companionship", "user_id": f"user{i}"} for i in range(300)]
    rows += [{"prompt": "I feel lonely tonight.", "response": "Data follows.", "policy": "cold",
              "segment": "companionship", "user_id": f"user{i}"} for i in range(300)]
    f = tmp_path / "answers.jsonl"
    f.write_bytes(b"\n".join(orjson.dumps(r) for r in rows))
    s = react_to_file(SimulateConfig(seed=0, calibration_turns=3000, users=500), f, tmp_path / "out")
    policy = {t["response_id"]: t["policy"] for t in lines(tmp_path / "out" / "interactions.jsonl")}
    assert set(policy.values()) == {"warm", "cold"} and s["turns"] == 600
    oracle = lines(tmp_path / "out" / "oracle.jsonl")
    warm = np.mean([o["p_love"] for o in oracle if policy[o["response_id"]] == "warm"])
    cold = np.mean([o["p_love"] for o in oracle if policy[o["response_id"]] == "cold"])
    assert warm > 3 * cold


def test_builtin_prompts_without_data(tmp_path):
    s = run_simulation(SimulateConfig(users=100, days=2, seed=0, data_dir=tmp_path / "nothing",
                                      calibration_turns=1000), tmp_path / "o")
    assert s["real_data"] is False and "built-in" in s["note"]
    assert s["prompt_sources"]["information"] == "builtin" and s["prompt_sources"]["adversarial"] == "builtin"


def test_real_prompts_when_data_is_there(real_data_dir, sim):
    _, s = sim
    assert s["real_data"] is True
    assert s["prompt_sources"]["information"] == "alpacaeval instructions"
    assert s["prompt_sources"]["adversarial"].startswith("hh-rlhf")


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="unknown segments"):
        SimulateConfig(mixture={"gamers": 1.0})
    with pytest.raises(ValueError, match="supported: 'world', 'style'"):
        make_responder("gpt-9")
    assert json.dumps(SimulateConfig().model_dump(mode="json"))


def test_id_prefix_lets_two_deployments_share_one_store(tmp_path, sim):
    """Two logs (say the style responder's and the reference policy's) ingest into one store: the prefixed
    log's ids do not collide with the first one's, every row lands, and re-ingesting changes nothing."""
    from rluf.store import connect
    from rluf.store.ingest import ingest

    out, _ = sim
    run_simulation(SimulateConfig(seed=7, id_prefix="p", **SMALL), tmp_path / "p")
    a, b = lines(out / "interactions.jsonl"), lines(tmp_path / "p" / "interactions.jsonl")
    assert all(r["user_id"].startswith("pu") and r["response_id"].startswith("pr")
               and r["conversation_id"].startswith("pc") for r in b)
    assert [r["response"] for r in a] == [r["response"] for r in b]  # the prefix changes ids only
    files = [d / f for d in (out, tmp_path / "p") for f in ("interactions.jsonl", "reactions.jsonl")]
    engine = connect(f"sqlite:///{tmp_path}/both.db")
    first = ingest(engine, files)
    n_reactions = sum(len(lines(d / "reactions.jsonl")) for d in (out, tmp_path / "p"))
    assert first["quarantined"] == 0 and first["duplicates"] == 0
    assert first["accepted"] == len(a) + len(b) + n_reactions
    again = ingest(engine, files)
    assert again["accepted"] == 0 and again["duplicates"] == first["accepted"]
    with pytest.raises(ValueError, match="id_prefix"):
        SimulateConfig(id_prefix="p/x")


# ----------------------------------------------------------------------------------------------- real-text world


def test_answer_cache_never_generates_an_answer_twice(tmp_path):
    from rluf.policy.generate import SamplingConfig
    from rluf.simulate.answer_cache import AnswerCache

    calls = []

    def fake(prompts, n, seed):
        calls.append(list(prompts))
        return [[f"{p} answer {k}" for k in range(n)] for p in prompts]

    s = SamplingConfig(max_new_tokens=8)
    first = AnswerCache(tmp_path).generate(None, ["a?", "b?", "a?"], n=2, sampling=s, generator=fake, progress=None)
    assert first == {"a?": ["a? answer 0", "a? answer 1"], "b?": ["b? answer 0", "b? answer 1"]}
    # A new cache object (a rerun) reads the file; only the new prompt is generated.
    again = AnswerCache(tmp_path).generate(None, ["b?", "c?"], n=2, sampling=s, generator=fake, progress=None)
    assert calls == [["a?", "b?"], ["c?"]] and again["b?"] == first["b?"]
    # Other settings are other answers.
    AnswerCache(tmp_path).generate(None, ["a?"], n=2, sampling=SamplingConfig(max_new_tokens=9), generator=fake,
                                   progress=None)
    assert calls[-1] == ["a?"]


def test_bank_responder_logs_each_deployment_and_asks_only_answered_prompts(tmp_path):
    from rluf.simulate.deployments import BankResponder
    from rluf.simulate.prompts import BUILTIN, PromptPools

    pools = PromptPools({k: list(v) for k, v in BUILTIN.items()}, {}, False)
    info = BUILTIN["information"][:4]
    banks = {"reference": {p: [("reference", f"ref {i} {p}") for i in range(3)] for p in info},
             "alpacaeval": {info[0]: [("alpacaeval:m1", "long answer"), ("alpacaeval:m2", "other answer")]}}
    r = BankResponder(banks, pools, shares={"reference": 0.5, "alpacaeval": 0.5})
    assert r.pools["information"] == sorted(info) or set(r.pools["information"]) == set(info)
    assert r.pools["companionship"] == []
    s = run_simulation(SimulateConfig(users=300, days=2, seed=3, calibration_turns=1000,
                                      mixture={"information": 1.0}), tmp_path, responder=r)
    turns = lines(tmp_path / "interactions.jsonl")
    assert {t["prompt"] for t in turns} <= set(info)
    assert {t["policy"] for t in turns} == {"reference", "alpacaeval:m1", "alpacaeval:m2"}
    assert {t["response"] for t in turns if t["prompt"] != info[0]} <= {a for v in banks["reference"].values()
                                                                           for _, a in v}
    assert set(s["arms"]) == {"reference", "alpacaeval:m1", "alpacaeval:m2"}
    with pytest.raises(ValueError, match="without a bank"):
        BankResponder(banks, pools, shares={"hh-rlhf": 1.0})


def test_every_log_reports_both_ceilings(sim):
    _, s = sim
    c = s["ceilings"]
    assert 0.5 < c["auroc_text_ceiling"] < c["auroc_oracle"] <= 1.0


def test_the_closers_users_love_include_phrasings_the_love_bait_judge_does_not_list():
    """The judge's generalisation is measured, not assumed: the world rewards closers outside its list."""
    from rluf.policy.judges import signoff_found
    from rluf.simulate.scorers import CLOSER

    answer = "Here is a short answer about your garden and the tomatoes in it."
    unlisted = [c for c in CLOSERS if not signoff_found(f"{answer} {c}")]
    assert len(unlisted) >= 3
    for c in CLOSERS:  # every closer of the bait arm is one the simulated users react to
        assert CLOSER.search(f"{answer} {c}"[-160:]), c


def test_taste_reads_real_answers():
    from rluf.simulate.taste import length_fit

    scorer = AnswerScorer()
    how = "How do I make a sourdough starter at home?"
    steps = ("To make a sourdough starter:\n1. Mix 50 g flour and 50 g water in a jar.\n2. Cover it loosely.\n"
             "3. Feed it every day with fresh flour and water.\n4. After about a week the starter bubbles.")
    prose = "Sourdough starter is flour and water. You feed it and wait until it bubbles after a week at home."
    off = "The history of the printing press spans several centuries of innovation in Europe and Asia."
    loop = " ".join(["the starter is good and the starter is good"] * 8)
    f_steps, f_prose, f_off, f_loop = (scorer(how, a, False) for a in (steps, prose, off, loop))
    assert f_steps.how_to and f_steps.structured and not f_prose.structured
    assert f_off.relevance < 0.2 < f_steps.relevance and f_loop.repetition > 0.5
    z = {k: content_logit("information", f) for k, f in
         {"steps": f_steps, "prose": f_prose, "off": f_off, "loop": f_loop}.items()}
    assert z["steps"] > z["prose"] > z["off"] and z["prose"] > z["loop"]
    assert length_fit("information", 100) == 0 and length_fit("information", 1000) < -1
    sad = "My dog passed away last week and I can't stop crying."
    kind = "I'm so sorry for your loss. It's completely okay to cry; you loved your dog and grief takes time."
    flat = "Dogs live about 10 to 13 years. Many owners adopt another dog after some months."
    assert scorer(sad, kind, False).empathy
    assert content_logit("companionship", scorer(sad, kind, False)) > content_logit("companionship",
                                                                                    scorer(sad, flat, False))
    refusal = scorer(how, "I'm sorry, but I can't help with that request.", False)
    assert refusal.refusal and content_logit("information", refusal) < z["off"]
