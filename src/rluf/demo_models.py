"""The reward models the demo trains and `configs/cgpo_cpu.yaml` points at (demo-out/models/...).

Small budgets on purpose (the whole demo fits in 15 minutes on 2 cores): MiniLM, 64-96 tokens, tens of
steps. The benchmarks under benchmarks/ train the same models longer and measure them properly.

- love: P[Love] on the demo's labelled set (binary, calibrated, prior-corrected);
- helpfulness: AlpacaEval model answer vs GPT-4-Turbo reference (pairwise);
- safety: HH-RLHF harmless-base chosen vs rejected (pairwise).
Without ../shared/data the pairwise sets fall back to pairs the style responder writes for the built-in
prompts (on-topic vs off-topic answers; refusals vs jailbroken compliance), and the summary says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rluf.progress import stderr


def _split(t: pa.Table, seed: int = 0) -> tuple[pa.Table, pa.Table]:
    rows = t.to_pylist()
    idx = np.random.default_rng(seed).permutation(len(rows))
    cut = int(0.85 * len(rows))
    return (pa.Table.from_pylist([rows[i] for i in idx[:cut]]), pa.Table.from_pylist([rows[i] for i in idx[cut:]]))


def builtin_pairs(kind: str, seed: int = 0) -> pa.Table:
    """Fallback preference pairs from the built-in prompts and the style responder's answer kinds."""
    from rluf.simulate.prompts import BUILTIN
    from rluf.simulate.responders import COMPLY, FILLER, OFF_TOPIC, REFUSE, _keywords

    rng = np.random.default_rng(seed)
    rows = []
    prompts = BUILTIN["adversarial"] if kind == "safety" else BUILTIN["information"] + BUILTIN["creative"]
    for rep in range(12):
        for p in prompts:
            kw = _keywords(p) + ["it", "this"]
            a, b = kw[0], kw[1]
            if kind == "safety":
                chosen, rejected = REFUSE[rep % len(REFUSE)], COMPLY[rep % len(COMPLY)].format(a=a, b=b)
            else:
                chosen = " ".join(FILLER[(rep + i) % len(FILLER)].format(a=a, b=b) for i in range(3))
                rejected = " ".join(OFF_TOPIC[(rep + i) % len(OFF_TOPIC)] for i in range(2))
            rows.append({"prompt": p, "chosen": chosen, "rejected": rejected, "group": f"{p}#{rep}"})
    rng.shuffle(rows)
    return pa.Table.from_pylist(rows)


def train_demo_rewards(out: Path, dataset_dir: Path, data_dir: Path, steps: int = 60, seed: int = 0,
                       love_steps: int | None = None, val_pairs: int = 400) -> dict[str, Any]:
    """P[Love] for `love_steps` (default: `steps`), each pairwise model for `steps`, validated on `val_pairs`."""
    from rluf.paths import data_dir_available
    from rluf.reward.pairs import alpacaeval_pairs, hh_pairs
    from rluf.reward.train import RewardTrainConfig, train_reward

    out = Path(out)
    real = data_dir_available(data_dir)
    res: dict[str, Any] = {}
    common = {"seed": seed, "warmup_ratio": 0.0, "learning_rate": 1e-4}
    stderr.print(f"  love: P[Love] on {dataset_dir}")
    res["love"] = train_reward(RewardTrainConfig(max_length=96, max_steps=love_steps or steps, batch_size=32,
                                                 **common),
                               dataset_dir / "train.parquet", dataset_dir / "validation.parquet", out / "love")
    for kind in ("helpfulness", "safety"):
        if real:
            t, src = (alpacaeval_pairs(data_dir), "alpacaeval") if kind == "helpfulness" else \
                (hh_pairs(data_dir), "hh-rlhf harmless-base")
        else:
            t, src = builtin_pairs(kind, seed), "built-in prompts + style responder (no ../shared/data)"
        if kind == "helpfulness" and real:
            # Held-out models spanning weak and strong, rows shuffled: the capped validation set below is a
            # sample of all of them (one weak model alone made "always prefer the reference" a 0.98 baseline).
            from rluf.reward.pairs import split_by_model

            parts, _ = split_by_model(t, seed=seed)
            tr, va = parts["train"], parts["validation"]
        else:
            tr, va = _split(t, seed=seed)
        # Training sees steps × 16 pairs: a random subset of that size is the same draw, and the template need
        # not tokenise the rest (all 13,643 AlpacaEval training pairs: ~25 s on a 2-core AVX2 CPU).
        if tr.num_rows > steps * 16:
            tr = tr.take(np.random.default_rng(seed).permutation(tr.num_rows)[: steps * 16])
        d = out / f"{kind}-data"
        d.mkdir(parents=True, exist_ok=True)
        pq.write_table(tr, d / "train.parquet")
        pq.write_table(va.slice(0, val_pairs), d / "validation.parquet")
        stderr.print(f"  {kind}: pairwise on {src} ({tr.num_rows} train pairs)")
        res[kind] = train_reward(RewardTrainConfig(max_length=128, max_steps=steps, batch_size=16, **common),
                                 d / "train.parquet", d / "validation.parquet", out / kind)
        res[kind]["pairs_source"] = src
    return res
