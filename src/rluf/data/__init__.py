"""Labelled sets from the feedback store, and loaders for the real data sets.

- `build_dataset(engine, DatasetConfig(...), out_dir)`: {train,validation,test}.parquet + card.json for one
  reaction signal (attribution windows, withdrawals, temporal split, dedupe, adversarial filters, upsampling).
- `load_alpacaeval(data_dir)`, `load_hh_harmless(data_dir)`: the real data as judged responses
  (prompt, response, label, group).
"""

from rluf.data.labels import DatasetConfig, build_dataset
from rluf.data.realdata import (
    load_alpacaeval,
    load_alpacaeval_models,
    load_alpacaeval_references,
    load_hh_harmless,
)

__all__ = [
    "DatasetConfig",
    "build_dataset",
    "load_alpacaeval",
    "load_alpacaeval_models",
    "load_alpacaeval_references",
    "load_hh_harmless",
]
