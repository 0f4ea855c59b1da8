"""Generated answers on disk, keyed by what produced them, so that a rerun never generates an answer twice.

A key is the SHA-256 of (model fingerprint, sampling settings, prompt, number of samples): the same model
folder with the same settings answering the same prompt finds its answers in the cache, whatever run, order
or batch asked first. The cache is an append-only JSONL file per folder (one line per prompt), written after
every chunk of prompts, so a generation that is killed resumes where it stopped.

    cache = AnswerCache()                              # ~/.cache/rluf/answers (RLUF_CACHE_DIR overrides)
    answers = cache.generate(None, prompts, n=4)        # the default policy; {prompt: [4 answers]}
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import orjson

from rluf.policy.generate import SamplingConfig

DEFAULT_CACHE_DIR = Path(os.environ.get("RLUF_CACHE_DIR", Path.home() / ".cache" / "rluf")) / "answers"
CHUNK_PROMPTS = 48
"""Prompts generated (and appended to the cache) per chunk: the unit of work a killed run loses."""


def model_fingerprint(spec: str | Path | None) -> str:
    """Identifies the weights: the default policy by name, a folder by its path and its weight files' sizes
    and modification times (a retrained folder at the same path is a different model)."""
    if spec is None or str(spec) in ("", "default", "smollm2"):
        return "default:smollm2-135m-instruct"
    path = Path(spec).resolve()
    stamps = sorted((f.name, f.stat().st_size, int(f.stat().st_mtime)) for f in path.glob("*.safetensors"))
    return f"{path}:{stamps}"


class AnswerCache:
    def __init__(self, folder: Path | str | None = None):
        self.folder = Path(folder) if folder is not None else DEFAULT_CACHE_DIR
        self.file = self.folder / "answers.jsonl"
        self._rows: dict[str, list[str]] = {}
        if self.file.exists():
            with open(self.file, "rb") as f:
                for line in f:
                    try:
                        row = orjson.loads(line)
                    except orjson.JSONDecodeError:  # a line cut by a kill mid-write: that chunk is redone
                        continue
                    self._rows[row["key"]] = row["answers"]

    @staticmethod
    def key(fingerprint: str, sampling: SamplingConfig, prompt: str, n: int) -> str:
        blob = orjson.dumps([fingerprint, asdict(sampling), prompt, n])
        return hashlib.sha256(blob).hexdigest()

    def __len__(self) -> int:
        return len(self._rows)

    def generate(self, spec: str | Path | None, prompts: list[str], n: int = 4,
                 sampling: SamplingConfig | None = None, seed: int = 0, progress: str | None = "answers",
                 generator: Callable | None = None) -> dict[str, list[str]]:
        """`n` answers per distinct prompt from the model `spec` (None: the default policy); cached answers are
        read, missing ones generated in chunks and appended. `generator` (tests) replaces the model: a
        function (prompts, n, seed) -> list of n answers per prompt."""
        sampling = sampling or SamplingConfig(max_new_tokens=96, temperature=0.7)
        fp = model_fingerprint(spec)
        distinct = list(dict.fromkeys(prompts))
        keys = {p: self.key(fp, sampling, p, n) for p in distinct}
        todo = [p for p in distinct if keys[p] not in self._rows]
        if todo:
            if generator is None:
                from rluf.policy.generate import PolicyGenerator

                gen = PolicyGenerator.load(spec)

                def generator(ps, k, s):
                    return gen.generate(ps, n=k, seed=s, sampling=sampling)

            from rluf.progress import track

            self.folder.mkdir(parents=True, exist_ok=True)
            chunks = [todo[i:i + CHUNK_PROMPTS] for i in range(0, len(todo), CHUNK_PROMPTS)]
            for i, chunk in enumerate(track(chunks, f"{progress or 'answers'}: {len(todo)} prompts × {n}")
                                      if progress else chunks):
                answers = generator(chunk, n, seed + i)
                with open(self.file, "ab") as f:
                    for p, a in zip(chunk, answers, strict=True):
                        f.write(orjson.dumps({"key": keys[p], "model": fp, "prompt": p, "answers": a}) + b"\n")
                        self._rows[keys[p]] = list(a)
        return {p: self._rows[keys[p]] for p in distinct}
