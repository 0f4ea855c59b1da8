"""`rluf reward eval` and `rluf reward score`: a trained reward model on a file."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from rluf.reward.data import read_judged, read_table
from rluf.reward.metrics import binary_metrics, plots, report_md
from rluf.reward.model import RewardModel


def eval_reward(model_dir: Path, data: Path, out_dir: Path | None = None, batch_size: int = 64) -> dict[str, Any]:
    """Metrics of a binary model on a labelled file; with out_dir, also metrics.json, report.md, plots."""
    rm = RewardModel.load(model_dir)
    cols = read_judged(data)
    t = time.perf_counter()
    p = rm.score(cols["prompt"], cols["response"], batch_size=batch_size, progress=True)
    seconds = time.perf_counter() - t
    m = binary_metrics(cols["label"], p, [len(r) for r in cols["response"]], cols.get("group"))
    m.update(model=str(model_dir), data=str(data), seconds=round(seconds, 2),
             rows_per_second=round(len(p) / seconds, 1) if seconds else None)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        images = plots(cols["label"], p, out_dir)
        (out_dir / "metrics.json").write_text(json.dumps(m, indent=2))
        (out_dir / "report.md").write_text(report_md(f"Evaluation of {Path(model_dir).name} on {Path(data).name}",
                                                     {"eval": m}, images))
        m["report"] = str(out_dir / "report.md")
    return m


def score_file(model_dir: Path, input_path: Path, out_path: Path, batch_size: int = 64) -> dict[str, Any]:
    """The input rows plus `score` (calibrated probability, or reward for pairwise models)."""
    rm = RewardModel.load(model_dir)
    table = read_table(input_path)
    for c in ("prompt", "response"):
        if c not in table.column_names:
            raise ValueError(f"{input_path}: missing column {c!r}")
    t = time.perf_counter()
    scores = rm.score(table["prompt"].to_pylist(), table["response"].to_pylist(), batch_size=batch_size,
                      progress=True)
    seconds = time.perf_counter() - t
    if "score" in table.column_names:
        table = table.drop(["score"])
    table = table.append_column("score", pa.array(scores, pa.float64()))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if out_path.suffix == ".parquet":
        pq.write_table(table, out_path)
    else:
        import orjson

        with open(out_path, "wb") as f:
            for row in table.to_pylist():
                f.write(orjson.dumps(row, default=str) + b"\n")
    return {"model": str(model_dir), "kind": rm.kind, "input": str(input_path), "out": str(out_path),
            "rows": table.num_rows, "mean_score": float(scores.mean()) if len(scores) else None,
            "seconds": round(seconds, 2), "rows_per_second": round(table.num_rows / seconds, 1) if seconds else None}
