"""Where rluf looks for things on disk, in one place."""

from __future__ import annotations

import os
from pathlib import Path

# `../shared/data` beside the checkout holds real public data (AlpacaEval, HH-RLHF). It is read in place,
# never copied into the repository. RLUF_DATA_DIR overrides it.
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = Path(os.environ.get("RLUF_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))


def data_dir_available(data_dir: Path | str | None) -> bool:
    """True when `data_dir` holds at least one of the real data sets rluf knows how to read."""
    if data_dir is None:
        return False
    d = Path(data_dir)
    return (d / "alpacaeval" / "instructions.jsonl.gz").exists() or (
        d / "hh_rlhf" / "harmless-base-test.jsonl.gz"
    ).exists()
