"""Prompt sets for policy training and evaluation, per task (`PromptSource.source`).

Chat prompts come from the simulator's pools (AlpacaEval instructions, chatterbot-corpus and rluf's own
emotional-support lines, HH red-team first turns — see `rluf.simulate.prompts`), so a policy is trained on
the same kinds of requests the simulated users send. Without ../shared/data the pools fall back to built-in
lines, and `load_prompts` says so in its `source` string.
"""

from __future__ import annotations

import random
from pathlib import Path

CHAT_MIX = ("companionship", "information", "creative")


def _interleave(lists: list[list[str]]) -> list[str]:
    out, i = [], 0
    while any(i < len(x) for x in lists):
        out += [x[i] for x in lists if i < len(x)]
        i += 1
    return out


def _read_file(path: Path) -> list[str]:
    import orjson

    if not path.exists():
        raise FileNotFoundError(f"prompt file {path} not found")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        if "prompt" not in table.column_names:
            raise ValueError(f"{path}: no 'prompt' column (columns: {table.column_names})")
        return [p for p in table.column("prompt").to_pylist() if p]
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            row = orjson.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
                raise ValueError(f"{path}:{n}: expected an object with a string 'prompt' field")
            out.append(row["prompt"])
    return out


def load_prompts(source: str, data_dir: str | Path | None, seed: int = 0, limit: int | None = None
                 ) -> tuple[list[str], str]:
    """(prompts in a seeded order, description of where they came from)."""
    from rluf.paths import DEFAULT_DATA_DIR
    from rluf.simulate.prompts import load_prompt_pools

    rng = random.Random(seed)
    if source.startswith("file:"):
        prompts, desc = _read_file(Path(source[5:])), source
    else:
        pools = load_prompt_pools(Path(data_dir) if data_dir else DEFAULT_DATA_DIR)
        names = {"chat": CHAT_MIX, "alpacaeval": ("information", "creative")}.get(source, (source,))
        unknown = [n for n in names if n not in pools.pools]
        if unknown:
            raise ValueError(f"unknown prompt source {source!r}; expected chat, alpacaeval, "
                             f"{', '.join(sorted(pools.pools))} or file:PATH")
        lists = []
        for n in names:
            x = list(pools.pools[n])
            rng.shuffle(x)
            lists.append(x)
        prompts = _interleave(lists)
        desc = "; ".join(f"{n}: {pools.sources[n]}" for n in names)
    if not prompts:
        raise ValueError(f"prompt source {source!r} gave no prompts")
    if source.startswith("file:"):
        rng.shuffle(prompts)
    return (prompts[:limit] if limit else prompts), desc
