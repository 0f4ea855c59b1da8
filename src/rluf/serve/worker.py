"""One generation thread for the whole service, with micro-batching.

Generation is CPU-bound and a model is not safe to call from two threads, so every request goes through a
queue to a single thread. While that thread generates, new requests pile up in the queue; it then takes
all of them (up to `batch_size`) and answers them in one batched `generate` call per (arm, sampling)
group: under load the throughput grows with the batch instead of requests waiting one after another.
Models are loaded by the same thread at start-up, so `/health` can answer "loading" meanwhile.
"""

from __future__ import annotations

import asyncio
import queue
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rluf.serve.arms import Arm


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int
    temperature: float
    top_p: float


@dataclass
class Answer:
    text: str
    completion_tokens: int
    prompt_tokens: int
    finish_reason: str  # "stop" or "length"
    batch: int  # how many requests shared the generate call (for logs and benchmarks)


@dataclass
class _Job:
    arm: str
    messages: list[dict[str, str]]
    sampling: Sampling
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    queued_at: float = field(default_factory=time.monotonic)


def _load_generator(arm: Arm, batch_size: int) -> Any:
    from rluf.policy.generate import PolicyGenerator

    return PolicyGenerator.load(arm.model, batch_size=batch_size, name=arm.name)


def _deliver(fut: asyncio.Future, value: Any, error: BaseException | None) -> None:
    if fut.done():  # the client went away and the request was cancelled
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(value)


class GenerationWorker:
    def __init__(self, arms: list[Arm], batch_size: int = 8, batch_wait_ms: float = 2.0,
                 loader: Callable[[Arm, int], Any] = _load_generator, threads: int | None = None):
        self.arms = arms
        self.threads = threads
        self.batch_size = batch_size
        self.batch_wait = batch_wait_ms / 1000
        self._loader = loader
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="rluf-generate", daemon=True)
        self.generators: dict[str, Any] = {}
        self.ready = threading.Event()
        self.error: str | None = None
        self.load_seconds: float | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    async def generate(self, arm: str, messages: list[dict[str, str]], sampling: Sampling) -> Answer:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._queue.put(_Job(arm, messages, sampling, fut, loop))
        return await fut

    # ------------------------------------------------------------------------------------ the thread
    def _run(self) -> None:
        t0 = time.monotonic()
        try:
            for arm in self.arms:
                print(f"rluf serve: loading arm {arm.name} ({arm.model_label})", file=sys.stderr, flush=True)
                self.generators[arm.name] = self._loader(arm, self.batch_size)
            if self.threads:
                import torch

                torch.set_num_threads(self.threads)  # OpenMP settings are per thread: this one only
        except Exception as e:  # reported by /health; the service stays up to say why
            self.error = f"{type(e).__name__}: {e}"
            print(f"rluf serve: loading failed: {self.error}", file=sys.stderr, flush=True)
            self._fail_pending()
            return
        self.load_seconds = time.monotonic() - t0
        self.ready.set()
        print(f"rluf serve: models ready in {self.load_seconds:.1f} s", file=sys.stderr, flush=True)
        while True:
            job = self._queue.get()
            if job is None:
                return
            batch = [job]
            deadline = time.monotonic() + self.batch_wait
            while len(batch) < self.batch_size:
                try:
                    nxt = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(nxt)
            groups: dict[tuple[str, Sampling], list[_Job]] = defaultdict(list)
            for j in batch:
                groups[(j.arm, j.sampling)].append(j)
            for (arm, sampling), jobs in groups.items():
                self._answer(arm, sampling, jobs)

    def _answer(self, arm: str, sampling: Sampling, jobs: list[_Job]) -> None:
        from rluf.policy.generate import SamplingConfig, encode_prompts

        jobs = [j for j in jobs if not j.future.done()]
        if not jobs:
            return
        gen = self.generators[arm]
        try:
            cfg = SamplingConfig(max_new_tokens=sampling.max_new_tokens, temperature=sampling.temperature,
                                 top_p=sampling.top_p)
            texts = gen.generate([j.messages for j in jobs], n=1, sampling=cfg)
            # Counted again for `usage`: tokenising costs microseconds next to generating.
            prompt_ids = encode_prompts(gen.tokenizer, [j.messages for j in jobs], cfg.max_prompt_tokens)
            answers = []
            for (text,), ids in zip(texts, prompt_ids, strict=True):
                n_out = len(gen.tokenizer.encode(text, add_special_tokens=False)) if text else 0
                n_in = len(ids)
                finish = "length" if n_out >= sampling.max_new_tokens else "stop"
                answers.append(Answer(text, n_out, n_in, finish, len(jobs)))
        except Exception as e:  # one bad batch must not kill the thread that serves everyone
            err = RuntimeError(f"generation failed: {type(e).__name__}: {e}")
            for j in jobs:
                j.loop.call_soon_threadsafe(_deliver, j.future, None, err)
            return
        for j, a in zip(jobs, answers, strict=True):
            j.loop.call_soon_threadsafe(_deliver, j.future, a, None)

    def _fail_pending(self) -> None:
        err = RuntimeError(f"the models did not load: {self.error}")
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                job.loop.call_soon_threadsafe(_deliver, job.future, None, err)
