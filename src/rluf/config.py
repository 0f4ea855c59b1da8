"""Typed configs (pydantic) for every stage, loadable from YAML.

Each stage has one config class; CLI flags override what a YAML file sets, which overrides the defaults
written here. Defaults are the embedded CPU defaults of DESIGN §4.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict

T = TypeVar("T", bound=BaseModel)


class StrictModel(BaseModel):
    """Unknown keys in a YAML config are an error, not silently ignored (a typo must not pass)."""

    model_config = ConfigDict(extra="forbid")


def load_config(cls: type[T], path: str | Path | None = None, **overrides: Any) -> T:
    """Build `cls` from an optional YAML file, then apply the non-None `overrides` (CLI flags)."""
    values: dict[str, Any] = {}
    if path is not None:
        text = Path(path).read_text(encoding="utf-8")
        loaded = yaml.safe_load(text) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a YAML mapping at the top level, got {type(loaded).__name__}")
        values.update(loaded)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return cls.model_validate(values)


class IngestConfig(StrictModel):
    chunk_rows: int = 50_000
    """Rows per transaction; memory use is bounded by this, never by the file size."""
    max_text_chars: int = 200_000
    """Longest prompt / response / message accepted; longer rows are quarantined."""
    max_id_chars: int = 256
    """Longest id (response_id, user_id, conversation_id) accepted."""

