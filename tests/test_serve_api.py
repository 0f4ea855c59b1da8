"""rluf serve, in process on a tiny model: auth, validation, limits, idempotent and withdrawn reactions,
cross-user access, arms, the page, and that the store it writes is what export / ingest / abtest read."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from rluf.cli import app as cli_app
from rluf.serve import Arm, ServeConfig, assign_arm, create_app, parse_arm, parse_arms
from rluf.store import connect, reactions, responses
from rluf.store.ingest import ingest
from rluf.store.schema import users
from rluf.store.validate import validate_turn
from tiny_models import make_tiny_policy

ADMIN = "test-admin-token-0123456789"
HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory) -> Path:
    return make_tiny_policy(tmp_path_factory.mktemp("serve") / "tiny")


def _wait_ready(c: TestClient, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while c.get("/health").status_code != 200:
        assert time.monotonic() < deadline, f"not ready in {timeout} s: {c.get('/health').json()}"
        time.sleep(0.02)


def _app(db_url: str, tiny_policy: Path, **cfg) -> TestClient:
    arms = [Arm("control", str(tiny_policy)), Arm("treatment", str(tiny_policy))]
    config = ServeConfig(rate_per_minute=cfg.pop("rate_per_minute", 0), default_max_tokens=8, max_new_tokens=32,
                         threads=1, **cfg)
    return TestClient(create_app(db_url, arms, ADMIN, config))


@pytest.fixture
def client(db_url, tiny_policy):
    with _app(db_url, tiny_policy) as c:
        _wait_ready(c)
        c.db_url = db_url
        yield c


def _user(c: TestClient, user_id: str | None = None) -> dict:
    r = c.post("/admin/users", headers={"Authorization": f"Bearer {ADMIN}"},
               json={"user_id": user_id} if user_id else None)
    assert r.status_code == 201, r.text
    body = r.json()
    body["h"] = {"Authorization": f"Bearer {body['token']}"}
    return body


def _chat(c: TestClient, u: dict, messages=HELLO, **kw) -> dict:
    r = c.post("/v1/chat/completions", headers=u["h"], json={"messages": messages, **kw})
    assert r.status_code == 200, r.text
    return r.json()


def _err(r, status: int, param: str | None = None) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["message"]
    if param is not None:
        assert err["param"] == param, err
    return err


# ------------------------------------------------------------------------------------------------ basics
def test_health_models_and_page(client):
    h = client.get("/health").json()
    assert h["status"] == "ok" and [a["name"] for a in h["arms"]] == ["control", "treatment"]
    assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["control", "treatment"]
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert '<script src="/static/page.js">' in page.text and "script-src" not in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    js = client.get("/static/page.js")
    assert js.status_code == 200 and "/v1/reactions" in js.text and "❤️" in js.text
    assert "innerHTML" not in js.text  # model output is only ever inserted as text


def test_chat_is_openai_shaped_and_stored(client):
    u = _user(client)
    first = _chat(client, u)
    assert first["object"] == "chat.completion" and first["id"].startswith("chatcmpl-")
    assert first["choices"][0]["message"]["role"] == "assistant"
    assert first["choices"][0]["finish_reason"] in ("stop", "length")
    assert first["usage"]["completion_tokens"] <= 8 and first["turn_index"] == 0
    assert first["model"] == first["arm"] == assign_arm(u["user_id"], client.app.state.arms, "rluf-ab").name
    history = [*HELLO, {"role": "assistant", "content": first["choices"][0]["message"]["content"]},
               {"role": "user", "content": "tell me about the sky"}]
    second = _chat(client, u, history, conversation_id=first["conversation_id"])
    assert second["conversation_id"] == first["conversation_id"] and second["turn_index"] == 1
    assert second["arm"] == first["arm"]  # sticky

    with connect(client.db_url).connect() as conn:
        rows = {r.response_id: r for r in conn.execute(select(responses))}
    row = rows[second["id"]]
    assert (row.user_id, row.conversation_id, row.turn_index, row.policy) == (
        u["user_id"], first["conversation_id"], 1, first["arm"])
    assert row.prompt == "tell me about the sky" and json.loads(row.messages) == history
    assert row.response == second["choices"][0]["message"]["content"]
    meta = json.loads(row.metadata)
    assert meta["source"] == "rluf serve" and meta["max_tokens"] == 8
    assert meta["model"] in {a.model_label for a in client.app.state.arms}
    # The row hash is the ingest validator's, so re-ingesting the exported turn is a duplicate, not a conflict.
    again = validate_turn({"response_id": row.response_id, "conversation_id": row.conversation_id,
                           "user_id": row.user_id, "turn_index": row.turn_index, "created_at": row.created_at_ms,
                           "policy": row.policy, "messages": history, "response": row.response, "metadata": meta},
                          200_000, 256)
    assert again["row_hash"] == row.row_hash


def test_stream_and_content_parts(client):
    u = _user(client)
    r = client.post("/v1/chat/completions", headers=u["h"], json={
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello"}]}], "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    got = client.get(f"/v1/responses/{chunks[0]['id']}", headers=u["h"]).json()
    assert got["messages"] == [{"role": "user", "content": "hello"}]


# -------------------------------------------------------------------------------------------------- auth
def test_auth_and_admin(client):
    body = {"messages": HELLO}
    _err(client.post("/v1/chat/completions", json=body), 401)
    _err(client.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer nope"}), 401)
    _err(client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Basic {ADMIN}"}), 401)
    _err(client.post("/v1/reactions", json={"response_id": "x", "reaction": "love"}), 401)
    _err(client.post("/admin/users"), 401)
    _err(client.post("/admin/users", headers={"Authorization": "Bearer wrong"}), 401)
    u = _user(client, "alice")
    assert u["user_id"] == "alice" and u["token"] != ADMIN
    _err(client.post("/admin/users", headers=u["h"]), 403)
    _err(client.post("/admin/users", headers={"Authorization": f"Bearer {ADMIN}"}, json={"user_id": "alice"}),
         409, "user_id")
    _err(client.post("/admin/users", headers={"Authorization": f"Bearer {ADMIN}"}, json={"user_id": "a b/c"}),
         422, "user_id")
    # Only a hash of the token is stored.
    with connect(client.db_url).connect() as conn:
        row = conn.execute(select(users).where(users.c.user_id == "alice")).one()
    assert row.token_sha256 == hashlib.sha256(u["token"].encode()).hexdigest()
    assert u["token"] not in [str(v) for v in row]


def test_users_create_cli(db_url, tiny_policy):
    res = CliRunner().invoke(cli_app, ["users", "create", "--db", db_url, "--user-id", "bob", "--json"])
    assert res.exit_code == 0, res.output
    made = json.loads(res.stdout)
    assert made["user_id"] == "bob" and made["token"].startswith("rluf_")
    dup = CliRunner().invoke(cli_app, ["users", "create", "--db", db_url, "--user-id", "bob", "--json"])
    assert dup.exit_code == 2 and "exists" in json.loads(dup.stdout)["error"]
    with _app(db_url, tiny_policy) as c:
        _wait_ready(c)
        assert _chat(c, {"h": {"Authorization": f"Bearer {made['token']}"}})["id"]


# ---------------------------------------------------------------------------------------------- validation
def test_validation_names_the_field(client):
    cfg = client.app.state.config
    u = _user(client)

    def post(body, **kw):
        return client.post("/v1/chat/completions", headers=u["h"], json=body, **kw)

    _err(post({"messages": []}), 400, "messages")
    _err(post({}), 422, "messages")
    _err(post({"messages": [{"role": "user", "content": "x"}] * (cfg.max_messages + 1)}), 400, "messages")
    _err(post({"messages": [{"role": "user", "content": "x" * (cfg.max_message_chars + 1)}]}), 400,
         "messages[0].content")
    _err(post({"messages": [{"role": "user", "content": "x" * 7000}] * 5}), 400, "messages")
    _err(post({"messages": [*HELLO, {"role": "assistant", "content": "hi"}]}), 400, "messages[1].role")
    _err(post({"messages": [{"role": "robot", "content": "hi"}]}), 422, "messages[0].role")
    _err(post({"messages": [{"role": "user"}]}), 422, "messages[0].content")
    _err(post({"messages": [{"role": "user", "content": "  "}]}), 400, "messages[0].content")
    _err(post({"messages": HELLO, "max_tokens": cfg.max_new_tokens + 1}), 400, "max_tokens")
    _err(post({"messages": HELLO, "max_tokens": 0}), 422, "max_tokens")
    _err(post({"messages": HELLO, "temperature": 5}), 422, "temperature")
    _err(post({"messages": HELLO, "n": 2}), 400, "n")
    _err(post({"messages": HELLO, "conversation_id": "conv_not_mine"}), 404, "conversation_id")
    _err(client.post("/v1/chat/completions", headers={**u["h"], "Content-Type": "application/json"},
                     content=b'{"messages": ['), 400)
    big = orjson.dumps({"messages": [{"role": "user", "content": "x" * (cfg.max_body_bytes + 10)}]})
    _err(client.post("/v1/chat/completions", headers={**u["h"], "Content-Type": "application/json"}, content=big),
         413)
    r = client.post("/v1/reactions", headers=u["h"], json={"response_id": "r", "reaction": "hate"})
    _err(r, 422, "reaction")
    _err(client.post("/v1/reactions", headers=u["h"], json={"response_id": "r", "reaction": "love", "x": 1}),
         422, "x")


def test_rate_limit(sqlite_url, tiny_policy):
    with _app(sqlite_url, tiny_policy, rate_per_minute=60, rate_burst=3) as c:
        _wait_ready(c)
        u = _user(c)
        other = _user(c)
        codes = [c.post("/v1/reactions", headers=u["h"], json={"response_id": "r", "reaction": "love"}).status_code
                 for _ in range(4)]
        assert codes == [404, 404, 404, 429]
        r = c.post("/v1/chat/completions", headers=u["h"], json={"messages": HELLO})
        _err(r, 429)
        assert int(r.headers["retry-after"]) >= 1
        assert _chat(c, other)["id"]  # one user's limit does not slow another


# ---------------------------------------------------------------------------------------------- reactions
def _events(db_url: str, response_id: str) -> list[tuple]:
    with connect(db_url).connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(reactions.c.reaction, reactions.c.removed, reactions.c.user_id, reactions.c.created_at_ms)
            .where(reactions.c.response_id == response_id).order_by(reactions.c.created_at_ms, reactions.c.id))]


def test_reactions_idempotent_withdrawn_and_private(client):
    alice, mallory = _user(client), _user(client)
    turn = _chat(client, alice)
    rid = turn["id"]

    def react(u, reaction="love", removed=False):
        return client.post("/v1/reactions", headers=u["h"],
                           json={"response_id": rid, "reaction": reaction, "removed": removed})

    assert react(alice).status_code == 201
    again = react(alice)
    assert again.status_code == 200 and again.json()["status"] == "unchanged"
    assert [e[:3] for e in _events(client.db_url, rid)] == [("love", False, alice["user_id"])]
    assert client.get(f"/v1/responses/{rid}", headers=alice["h"]).json()["reactions"] == ["love"]

    assert react(alice, removed=True).status_code == 201
    assert react(alice, removed=True).status_code == 200  # withdrawing twice is one withdrawal
    assert react(alice).status_code == 201  # loving again after a withdrawal is a new event
    assert react(alice, "dislike").status_code == 201
    events = _events(client.db_url, rid)
    assert [e[:2] for e in events] == [("love", False), ("love", True), ("love", False), ("dislike", False)]
    times = [e[3] for e in events if e[0] == "love"]
    assert times == sorted(times) and len(set(times)) == 3  # the latest event is unambiguous
    assert client.get(f"/v1/responses/{rid}", headers=alice["h"]).json()["reactions"] == ["dislike", "love"]

    # Someone else's turn: indistinguishable from a missing one, and nothing is written.
    _err(react(mallory), 404, "response_id")
    _err(react(mallory, removed=True), 404, "response_id")
    _err(client.get(f"/v1/responses/{rid}", headers=mallory["h"]), 404)
    _err(client.post("/v1/chat/completions", headers=mallory["h"],
                     json={"messages": HELLO, "conversation_id": turn["conversation_id"]}), 404, "conversation_id")
    _err(client.post("/v1/reactions", headers=alice["h"], json={"response_id": "chatcmpl-nope", "reaction": "love"}),
         404, "response_id")
    assert len(_events(client.db_url, rid)) == 4


# --------------------------------------------------------------------------------------- one store, arms
def test_export_ingest_and_abtest_read_served_traffic(client, tmp_path):
    from rluf.evaluate.ab_stats import analyze

    served, loved = [], set()
    for i in range(8):
        u = _user(client)
        for j in range(2):
            t = _chat(client, u, [{"role": "user", "content": f"question {i} {j}"}])
            served.append(t)
            if (i + j) % 3 == 0:
                assert client.post("/v1/reactions", headers=u["h"],
                                   json={"response_id": t["id"], "reaction": "love"}).status_code == 201
                loved.add(t["id"])
    res = CliRunner().invoke(cli_app, ["export", "--db", client.db_url, "--out", str(tmp_path / "out"), "--json"])
    assert res.exit_code == 0, res.output
    turns = {r["response_id"]: r for r in map(json.loads, (tmp_path / "out/interactions.jsonl").open())}
    events = [json.loads(line) for line in (tmp_path / "out/reactions.jsonl").open()]
    for t in served:
        assert turns[t["id"]]["policy"] == t["arm"] and turns[t["id"]]["conversation_id"] == t["conversation_id"]
        assert turns[t["id"]]["response"] == t["choices"][0]["message"]["content"]
    assert {e["response_id"] for e in events if e["reaction"] == "love"} == loved

    # The export ingests into a fresh store as exactly these rows (no quarantine).
    report = ingest(connect(f"sqlite:///{tmp_path / 'copy.db'}"),
                    [tmp_path / "out/interactions.jsonl", tmp_path / "out/reactions.jsonl"])
    assert (report["accepted"], report["quarantined"]) == (len(turns) + len(events), 0)
    # Re-ingesting into the serving store itself finds only duplicates (same row hashes).
    report = ingest(connect(client.db_url), [tmp_path / "out/interactions.jsonl", tmp_path / "out/reactions.jsonl"])
    assert (report["accepted"], report["quarantined"], report["duplicates"]) == (0, 0, len(turns) + len(events))

    arms_seen = {t["arm"] for t in served}
    if arms_seen == {"control", "treatment"}:
        out = analyze(connect(client.db_url), ("control", "treatment"), "love", 24.0, 0.05, "delta")
        assert out["control"] is not None and "lift" in out


def test_arm_parsing_and_sticky_weighted_assignment():
    from rluf.simulate.ab import assign_arm as simulated_assign

    assert parse_arm("a=runs/x") == Arm("a", "runs/x", 1.0)
    assert parse_arm("b=runs/x:2.5") == Arm("b", "runs/x", 2.5)
    assert parse_arm("c=default") == Arm("c", None, 1.0)
    assert parse_arm("c=policy:default:3") == Arm("c", None, 3.0)
    assert parse_arm("d=C:/models/x") == Arm("d", "C:/models/x", 1.0)
    assert parse_arms(None) == [Arm("default", None, 1.0)]
    for bad in (["x"], ["=dir"], ["a="], ["a b=dir"], ["a=dir:0"], ["a=d", "a=e"]):
        with pytest.raises(ValueError):
            parse_arms(bad)
    arms = [Arm("a", "x", 1.0), Arm("b", "y", 3.0)]
    got = [assign_arm(f"user{i}", arms, "s").name for i in range(4000)]
    assert got == [assign_arm(f"user{i}", arms, "s").name for i in range(4000)]  # sticky
    assert abs(got.count("b") / len(got) - 0.75) < 0.03
    # The same rule as the simulator, so simulated and live A/B tests split users alike.
    assert got[:500] == [simulated_assign(f"user{i}", ["a", "b"], "s", [1.0, 3.0]) for i in range(500)]
    assert [assign_arm(f"user{i}", arms, "other").name for i in range(200)] != got[:200]


def test_schema_creation_twice_is_harmless(db_url):
    eng = connect(db_url)
    connect(db_url)
    with eng.connect() as conn:
        assert conn.execute(select(func.count()).select_from(users)).scalar_one() == 0


def test_serve_cli_refuses_bad_arms_before_starting(tmp_path):
    for arm, msg in ((f"a={tmp_path / 'missing'}", "not a model folder"), ("a b=x", "the name must")):
        res = CliRunner().invoke(cli_app, ["serve", "--db", f"sqlite:///{tmp_path / 's.db'}", "--arm", arm,
                                           "--port", "1"])
        assert res.exit_code == 2 and msg in res.output, res.output
