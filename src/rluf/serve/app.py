"""The HTTP service: OpenAI-compatible chat that stores every turn, reactions, users, a chat page.

Routes (all JSON errors look like OpenAI's: `{"error": {"message", "type", "param", "code"}}`, where `param`
names the offending field):

- `POST /v1/chat/completions`  (user token) an answer from the caller's A/B arm; `id` is the stored
  `response_id`. Extra fields: `conversation_id` (send it back to continue a conversation), `turn_index`,
  `arm`. `stream: true` is accepted and sends the whole answer as one server-sent chunk.
- `POST /v1/reactions`         (user token) `{"response_id", "reaction": love|like|dislike, "removed"}`:
  201 when recorded, 200 when it changes nothing (a retry, a double click); 404 for someone else's turn.
- `GET  /v1/responses/{id}`    (user token) the caller's own turn with its active reactions.
- `GET  /v1/models`            the arms.
- `POST /admin/users`          (admin token) a new user and its bearer token (shown once).
- `GET  /health`               200 once the models are loaded, 503 before (or if loading failed).
- `GET  /`                     the chat page.
"""


import asyncio
import hashlib
import hmac
import os
import secrets
import sys
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from rluf.serve.arms import Arm, assign_arm
from rluf.serve.config import ServeConfig
from rluf.serve.ratelimit import RateLimiter
from rluf.serve.store import Caller, Conflict, NotFound, ServeStore, now_ms
from rluf.serve.worker import GenerationWorker, Sampling

STATIC = Path(__file__).parent / "static"
ADMIN_TOKEN_ENV = "RLUF_ADMIN_TOKEN"


# -------------------------------------------------------------------------------------------- errors
class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers


def _error_body(status: int, message: str, param: str | None, code: str | None) -> dict[str, Any]:
    kinds = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}
    kind = kinds.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _error(status: int, message: str, param: str | None = None, code: str | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(_error_body(status, message, param, code), status_code=status, headers=headers)


def _loc_to_param(loc: tuple[Any, ...]) -> str | None:
    """('body', 'messages', 3, 'content') → 'messages[3].content'."""
    out = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("str", "list[TextPart]", "function-after", "literal"):  # pydantic union branch names
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or None


# ------------------------------------------------------------------------------------------ requests
class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatRequest(BaseModel):
    # OpenAI clients send fields we do not use (user, stop, presence_penalty, ...): accepted and ignored.
    model_config = ConfigDict(extra="allow")
    messages: list[Message]
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = 1
    stream: bool = False
    conversation_id: str | None = Field(None, min_length=1, max_length=256)


class ReactionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    response_id: str = Field(min_length=1, max_length=256)
    reaction: Literal["love", "like", "dislike"]
    removed: bool = False


class NewUserRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: str | None = Field(None, min_length=1, max_length=128)
    is_admin: bool = False


# ------------------------------------------------------------------------------------- body size cap
class BodyLimit:
    """Refuse a body over `max_bytes` from its Content-Length, before reading it; a chunked body (no
    length announced) is refused with 411, since its size could only be found by reading it all."""

    def __init__(self, app: Any, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH"):
            headers = dict(scope["headers"])
            length = headers.get(b"content-length")
            problem = None
            if length is None and b"chunked" in headers.get(b"transfer-encoding", b"").lower():
                problem = _error(411, "send the body with a Content-Length header", code="length_required")
            elif length is not None:
                try:
                    n = int(length)
                except ValueError:
                    n = -1
                if n < 0:
                    problem = _error(400, "Content-Length is not a number", code="bad_length")
                elif n > self.max_bytes:
                    problem = _error(413, f"the request body is {n} bytes; the limit is {self.max_bytes}",
                                     code="body_too_large")
            if problem is not None:
                await problem(scope, receive, send)
                return
        await self.app(scope, receive, send)


# --------------------------------------------------------------------------------------------- app
def resolve_admin_token(admin_token: str | None) -> str:
    """--admin-token, else $RLUF_ADMIN_TOKEN, else a fresh one printed once to stderr (and nowhere else)."""
    token = admin_token or os.environ.get(ADMIN_TOKEN_ENV)
    if token:
        return token
    token = "rluf_admin_" + secrets.token_urlsafe(24)
    print(f"rluf serve: no --admin-token or ${ADMIN_TOKEN_ENV}; this run's admin token is {token}",
          file=sys.stderr, flush=True)
    return token


def create_app(db: str | Engine, arms: list[Arm] | None = None, admin_token: str | None = None,
               config: ServeConfig | None = None, worker: GenerationWorker | None = None) -> FastAPI:
    """The service on store `db` (a URL or an engine) answering with `arms` (default: the default policy).

    Models load in a background thread when the app starts; `/health` says when they are ready.
    """
    from rluf.serve.arms import parse_arms
    from rluf.store import connect

    cfg = config or ServeConfig()
    arms = arms or parse_arms(None)
    engine = connect(db) if isinstance(db, str) else db
    store = ServeStore(engine)
    worker = worker or GenerationWorker(arms, cfg.batch_size, cfg.batch_wait_ms, threads=cfg.threads)
    limiter = RateLimiter(cfg.rate_per_minute, cfg.rate_burst)
    admin_digest = hashlib.sha256(resolve_admin_token(admin_token).encode()).digest()
    page = (STATIC / "page.html").read_bytes()
    script = (STATIC / "page.js").read_bytes()

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        worker.start()
        yield
        await run_in_threadpool(worker.stop)
        if isinstance(db, str):
            engine.dispose()

    app = FastAPI(title="rluf serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store, app.state.worker, app.state.arms, app.state.config = store, worker, arms, cfg
    app.add_middleware(BodyLimit, max_bytes=cfg.max_body_bytes)

    @app.exception_handler(ApiError)
    async def _api_error(_req: Request, e: ApiError) -> JSONResponse:
        return _error(e.status, e.message, e.param, e.code, e.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {"loc": (), "msg": "invalid request"}
        if first.get("type") == "json_invalid":
            return _error(400, "the request body is not valid JSON", code="invalid_json")
        param = _loc_to_param(tuple(first.get("loc", ())))
        if param is None:
            return _error(422, "the request body must be a JSON object (Content-Type: application/json)",
                          code="invalid_body")
        return _error(422, f"{param}: {first.get('msg')}", param, code="invalid_value")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, e: StarletteHTTPException) -> JSONResponse:
        return _error(e.status_code, str(e.detail), code="not_found" if e.status_code == 404 else None)

    # ------------------------------------------------------------------------------------ identity
    def _bearer(request: Request) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "send 'Authorization: Bearer <token>'", code="missing_token",
                           headers={"WWW-Authenticate": "Bearer"})
        return token.strip()

    async def user(request: Request) -> Caller:
        caller = await run_in_threadpool(store.caller_for_token, _bearer(request))
        if caller is None:
            raise ApiError(401, "unknown bearer token", code="invalid_token", headers={"WWW-Authenticate": "Bearer"})
        wait = limiter.allow(caller.user_id)
        if wait > 0:
            raise ApiError(429, f"too many requests; retry in {wait:.1f} s", code="rate_limited",
                           headers={"Retry-After": str(max(1, round(wait + 0.5)))})
        return caller

    async def admin(request: Request) -> None:
        token = _bearer(request)
        if hmac.compare_digest(hashlib.sha256(token.encode()).digest(), admin_digest):
            return
        caller = await run_in_threadpool(store.caller_for_token, token)
        if caller is None:
            raise ApiError(401, "unknown bearer token", code="invalid_token", headers={"WWW-Authenticate": "Bearer"})
        if not caller.is_admin:
            raise ApiError(403, "this route needs the admin token", code="forbidden")

    User = Annotated[Caller, Depends(user)]

    def _ready() -> None:
        if worker.error:
            raise ApiError(503, f"the models did not load: {worker.error}", code="not_ready")
        if not worker.ready.is_set():
            raise ApiError(503, "the models are still loading; retry shortly", code="loading",
                           headers={"Retry-After": "5"})

    # -------------------------------------------------------------------------------------- routes
    @app.get("/health")
    async def health() -> JSONResponse:
        body = {"status": "ok" if worker.ready.is_set() else ("error" if worker.error else "loading"),
                "arms": [{"name": a.name, "model": a.model_label, "weight": a.weight} for a in arms],
                "load_seconds": worker.load_seconds}
        if worker.error:
            body["error"] = worker.error
        return JSONResponse(body, status_code=200 if worker.ready.is_set() else 503)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": a.name, "object": "model", "owned_by": "rluf",
                                            "root": a.model_label} for a in arms]}

    @app.post("/admin/users", status_code=201, dependencies=[Depends(admin)])
    async def admin_create_user(body: NewUserRequest | None = None) -> dict[str, str]:
        body = body or NewUserRequest()
        try:
            return await run_in_threadpool(store.create_user, body.user_id, body.is_admin)
        except Conflict as e:
            raise ApiError(409, str(e), "user_id", "user_exists") from None
        except ValueError as e:
            raise ApiError(422, str(e), "user_id", "invalid_value") from None

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(body: ChatRequest, caller: User) -> Any:
        _ready()
        messages = _checked_messages(body, cfg)
        max_tokens = body.max_completion_tokens or body.max_tokens or cfg.default_max_tokens
        if max_tokens > cfg.max_new_tokens:
            raise ApiError(400, f"max_tokens: at most {cfg.max_new_tokens}", "max_tokens", "too_large")
        if body.n != 1:
            raise ApiError(400, "n: only n = 1 is supported", "n", "unsupported")
        arm = assign_arm(caller.user_id, arms, cfg.salt)
        if body.conversation_id is not None:
            if not await run_in_threadpool(store.conversation_owned, caller.user_id, body.conversation_id):
                raise ApiError(404, "conversation_id: no such conversation of yours; omit it to start one",
                               "conversation_id", "not_found")
            conversation_id = body.conversation_id
        else:
            conversation_id = "conv_" + uuid.uuid4().hex
        sampling = Sampling(max_tokens, cfg.temperature if body.temperature is None else body.temperature,
                            cfg.top_p if body.top_p is None else body.top_p)
        t0 = time.monotonic()
        try:
            answer = await asyncio.wait_for(worker.generate(arm.name, messages, sampling), cfg.request_timeout_s)
        except TimeoutError:
            raise ApiError(503, "the service is overloaded: no answer in time", code="timeout") from None
        except RuntimeError as e:
            raise ApiError(500, str(e), code="generation_failed") from None
        latency_ms = round((time.monotonic() - t0) * 1000)
        response_id = "chatcmpl-" + uuid.uuid4().hex
        created_ms = now_ms()
        turn_index = sum(m["role"] == "assistant" for m in messages)
        await run_in_threadpool(
            store.add_turn, response_id=response_id, conversation_id=conversation_id, user_id=caller.user_id,
            turn_index=turn_index, arm=arm.name, messages=messages, response=answer.text,
            created_at_ms=created_ms,
            metadata={"source": "rluf serve", "model": arm.model_label, "requested_model": body.model,
                      "max_tokens": max_tokens, "temperature": sampling.temperature, "top_p": sampling.top_p,
                      "finish_reason": answer.finish_reason, "completion_tokens": answer.completion_tokens,
                      "latency_ms": latency_ms, "batch": answer.batch},
        )
        usage = {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
                 "total_tokens": answer.prompt_tokens + answer.completion_tokens}
        extra = {"conversation_id": conversation_id, "turn_index": turn_index, "arm": arm.name}
        if body.stream:
            return StreamingResponse(_sse(response_id, created_ms // 1000, arm.name, answer.text,
                                          answer.finish_reason, usage, extra), media_type="text/event-stream")
        return {
            "id": response_id, "object": "chat.completion", "created": created_ms // 1000, "model": arm.name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                         "finish_reason": answer.finish_reason}],
            "usage": usage, **extra,
        }

    @app.post("/v1/reactions", response_model=None)
    async def react(body: ReactionRequest, caller: User) -> JSONResponse:
        try:
            out = await run_in_threadpool(store.react, caller.user_id, body.response_id, body.reaction,
                                          body.removed)
        except NotFound:
            raise ApiError(404, "response_id: no such response of yours", "response_id", "not_found") from None
        return JSONResponse(out, status_code=201 if out["status"] == "recorded" else 200)

    @app.get("/v1/responses/{response_id}")
    async def get_response(response_id: str, caller: User) -> dict[str, Any]:
        try:
            return await run_in_threadpool(store.get_turn, caller.user_id, response_id)
        except NotFound:
            raise ApiError(404, "response_id: no such response of yours", "response_id", "not_found") from None

    # The page's script is a separate file so that the Content-Security-Policy can forbid inline scripts.
    page_headers = {"Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                    "frame-ancestors 'none'", "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}

    @app.get("/")
    async def index() -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers=page_headers)

    @app.get("/static/page.js")
    async def page_js() -> Response:
        return Response(script, media_type="text/javascript; charset=utf-8", headers=page_headers)

    return app


def _checked_messages(body: ChatRequest, cfg: ServeConfig) -> list[dict[str, str]]:
    """The request's messages as plain {role, content}, within the service's limits (400 naming the field)."""
    if not body.messages:
        raise ApiError(400, "messages: at least one message is required", "messages", "empty")
    if len(body.messages) > cfg.max_messages:
        raise ApiError(400, f"messages: at most {cfg.max_messages} messages, got {len(body.messages)}",
                       "messages", "too_many_messages")
    out, total = [], 0
    for i, m in enumerate(body.messages):
        text = m.text()
        if len(text) > cfg.max_message_chars:
            raise ApiError(400, f"messages[{i}].content: at most {cfg.max_message_chars} characters, "
                           f"got {len(text)}", f"messages[{i}].content", "message_too_long")
        if "\x00" in text:
            raise ApiError(400, f"messages[{i}].content: NUL characters are not allowed",
                           f"messages[{i}].content", "invalid_value")
        total += len(text)
        out.append({"role": m.role, "content": text})
    if total > cfg.max_total_chars:
        raise ApiError(400, f"messages: at most {cfg.max_total_chars} characters in all, got {total}",
                       "messages", "conversation_too_long")
    if out[-1]["role"] != "user":
        raise ApiError(400, f"messages[{len(out) - 1}].role: the last message must be the user's",
                       f"messages[{len(out) - 1}].role", "invalid_value")
    if not out[-1]["content"].strip():
        raise ApiError(400, f"messages[{len(out) - 1}].content: the user's message is empty",
                       f"messages[{len(out) - 1}].content", "empty")
    return out


async def _sse(response_id: str, created: int, model: str, text: str, finish: str, usage: dict[str, int],
               extra: dict[str, Any]):
    """OpenAI's streaming format; the answer is generated in a batch, so it arrives as one delta."""
    base = {"id": response_id, "object": "chat.completion.chunk", "created": created, "model": model, **extra}
    first = {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": text},
                                  "finish_reason": None}]}
    last = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}], "usage": usage}
    for chunk in (first, last):
        yield b"data: " + orjson.dumps(chunk) + b"\n\n"
    yield b"data: [DONE]\n\n"


__all__ = ["create_app"]
