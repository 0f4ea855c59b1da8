"""Drive a running `rluf serve` with many concurrent chat users, and run servers for tests and benchmarks.

Used by the load and fault tests and by `benchmarks/serve_load.py`. Every client is a user of its own: it
chats (continuing its conversation), hearts each answer, re-sends the heart (which must change nothing) and
withdraws every second one. Every reaction the server acknowledges as recorded is kept, so that a caller
can check afterwards that each of them is in the store.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

PROMPTS = ("hello, how are you", "tell me about the sky", "write a poem about the night", "why is water blue",
           "i feel sad today", "what music do you like", "help me with a question", "thanks for the help")


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    k = (len(s) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


@dataclass
class LoadResult:
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"chat": [], "reaction": []})
    statuses: Counter = field(default_factory=Counter)
    transport_errors: Counter = field(default_factory=Counter)
    acked: list[dict[str, Any]] = field(default_factory=list)  # reaction events the server said it recorded
    turns: list[dict[str, Any]] = field(default_factory=list)  # chats answered with 200
    unexpected: list[str] = field(default_factory=list)  # answers other than the protocol expects
    wall_s: float = 0.0

    @property
    def server_errors(self) -> int:
        return sum(n for code, n in self.statuses.items() if code >= 500)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "requests": sum(self.statuses.values()), "wall_s": round(self.wall_s, 2),
            "requests_per_s": round(sum(self.statuses.values()) / self.wall_s, 2) if self.wall_s else None,
            "chats": len(self.turns), "chats_per_s": round(len(self.turns) / self.wall_s, 2) if self.wall_s else None,
            "reactions_recorded": len(self.acked),
            "status_codes": {str(k): v for k, v in sorted(self.statuses.items())},
            "server_errors_5xx": self.server_errors, "transport_errors": dict(self.transport_errors),
            "unexpected": len(self.unexpected),
        }
        for kind, xs in self.latencies.items():
            for q in (50, 95, 99):
                v = percentile(xs, q)
                out[f"{kind}_p{q}_ms"] = round(v * 1000, 1) if v is not None else None
        return out


async def create_users(base_url: str, admin_token: str, n: int, timeout: float = 30.0) -> list[dict[str, str]]:
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout) as http:
        async def one() -> dict[str, str]:
            r = await http.post("/admin/users", headers={"Authorization": f"Bearer {admin_token}"})
            r.raise_for_status()
            return r.json()

        return list(await asyncio.gather(*(one() for _ in range(n))))


class _Session:
    """One user's conversation; `resilient` sessions retry through connection failures (the fault test)."""

    def __init__(self, http: httpx.AsyncClient, user: dict[str, str], result: LoadResult, max_tokens: int,
                 resilient: bool, deadline: float):
        self.http, self.user, self.result = http, user, result
        self.headers = {"Authorization": f"Bearer {user['token']}"}
        self.max_tokens, self.resilient, self.deadline = max_tokens, resilient, deadline
        self.history: list[dict[str, str]] = []
        self.conversation_id: str | None = None

    async def _post(self, kind: str, path: str, body: dict[str, Any]) -> httpx.Response | None:
        while time.monotonic() < self.deadline:
            t0 = time.perf_counter()
            try:
                r = await self.http.post(path, json=body, headers=self.headers)
            except httpx.TransportError as e:
                self.result.transport_errors[type(e).__name__] += 1
                if not self.resilient:
                    return None
                await asyncio.sleep(0.2)  # the server is down or restarting: try again
                continue
            self.result.statuses[r.status_code] += 1
            if r.status_code < 500:
                self.result.latencies[kind].append(time.perf_counter() - t0)
            if r.status_code >= 500 and self.resilient:
                await asyncio.sleep(0.2)
                continue
            return r
        return None

    async def turn(self, i: int) -> bool:
        self.history.append({"role": "user", "content": PROMPTS[i % len(PROMPTS)]})
        body: dict[str, Any] = {"messages": self.history, "max_tokens": self.max_tokens}
        if self.conversation_id:
            body["conversation_id"] = self.conversation_id
        r = await self._post("chat", "/v1/chat/completions", body)
        if r is None or r.status_code != 200:
            if r is not None:
                self.result.unexpected.append(f"chat {r.status_code} {r.text[:200]}")
            return False
        ans = r.json()
        self.conversation_id = ans["conversation_id"]
        self.history.append({"role": "assistant", "content": ans["choices"][0]["message"]["content"]})
        self.result.turns.append({"id": ans["id"], "user_id": self.user["user_id"], "arm": ans["arm"]})
        steps = [("love", False, {201}), ("love", False, {200})]  # the re-sent heart must change nothing
        if i % 2 == 1:
            steps.append(("love", True, {201}))
        for reaction, removed, expected in steps:
            r = await self._post("reaction", "/v1/reactions",
                                 {"response_id": ans["id"], "reaction": reaction, "removed": removed})
            if r is None:
                return False
            # After a crash a retried request may find its first attempt committed: 200 is then right too.
            ok = expected | ({200} if self.resilient else set())
            if r.status_code not in ok:
                self.result.unexpected.append(f"reaction {r.status_code} (expected {expected}) {r.text[:200]}")
            if r.status_code == 201:
                ev = r.json()
                self.result.acked.append({"response_id": ev["response_id"], "user_id": self.user["user_id"],
                                          "reaction": ev["reaction"], "removed": ev["removed"],
                                          "created_at": ev["created_at"]})
        return True


async def run_load(base_url: str, users: list[dict[str, str]], turns: int | None = 2, max_tokens: int = 16,
                   duration_s: float | None = None, resilient: bool = False, timeout: float = 60.0,
                   stop: asyncio.Event | None = None, result: LoadResult | None = None) -> LoadResult:
    """Each user chats `turns` times (or until `duration_s` / `stop`), all users at once. Pass `result` to
    watch it fill while the load runs."""
    result = result if result is not None else LoadResult()
    deadline = time.monotonic() + (duration_s if duration_s is not None else timeout * 10)
    limits = httpx.Limits(max_connections=len(users) + 4, max_keepalive_connections=len(users) + 4)
    t0 = time.perf_counter()
    async with httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(timeout, connect=5.0),
                                 limits=limits) as http:
        async def client(user: dict[str, str]) -> None:
            s = _Session(http, user, result, max_tokens, resilient, deadline)
            i = 0
            while (turns is None or i < turns) and time.monotonic() < deadline and not (stop and stop.is_set()):
                if not await s.turn(i) and not resilient:
                    return
                i += 1

        await asyncio.gather(*(client(u) for u in users))
    result.wall_s = time.perf_counter() - t0
    return result


def stored_events(engine: Any) -> set[tuple[str, str, str, bool, int]]:
    from sqlalchemy import select

    from rluf.store.schema import reactions

    with engine.connect() as conn:
        return {(r.response_id, r.user_id, r.reaction, bool(r.removed), r.created_at_ms) for r in conn.execute(
            select(reactions.c.response_id, reactions.c.user_id, reactions.c.reaction, reactions.c.removed,
                   reactions.c.created_at_ms))}


def acked_keys(result: LoadResult) -> list[tuple[str, str, str, bool, int]]:
    from rluf.store.validate import parse_timestamp

    return [(a["response_id"], a["user_id"], a["reaction"], a["removed"], parse_timestamp(a["created_at"]))
            for a in result.acked]


# ---------------------------------------------------------------------------------------------- servers
class ServerProcess:
    """`rluf serve` in a child process (its own session, so a kill reaches nothing else)."""

    def __init__(self, db_url: str, arms: list[str], port: int, admin_token: str, log_path: Path,
                 extra: list[str] | None = None, env: dict[str, str] | None = None):
        self.cmd = [sys.executable, "-m", "rluf.cli", "serve", "--db", db_url, "--host", "127.0.0.1",
                    "--port", str(port), "--rate-limit", "0", *[a for arm in arms for a in ("--arm", arm)],
                    *(extra or [])]
        self.env = {**os.environ, "RLUF_ADMIN_TOKEN": admin_token, "TOKENIZERS_PARALLELISM": "false",
                    **(env or {})}
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> float:
        """Start and wait for /health = 200; returns the seconds it took."""
        t0 = time.monotonic()
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed when the process is reaped
        self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=True)
        log.close()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rluf serve exited with {self.proc.returncode}; log: {self.log_tail()}")
            try:
                if httpx.get(self.base_url + "/health", timeout=2.0).status_code == 200:
                    return time.monotonic() - t0
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.kill()
        raise TimeoutError(f"rluf serve not healthy within {timeout} s; log: {self.log_tail()}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


class ThreadServer:
    """A uvicorn server for an app object, in a thread of this process (no start-up import cost)."""

    def __init__(self, app: Any, port: int | None = None):
        import uvicorn

        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    access_log=False, lifespan="on"))
        import threading

        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.base_url + "/health", timeout=2.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.__exit__()
        raise TimeoutError("the in-process server was not healthy within 60 s")

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
