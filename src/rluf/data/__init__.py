"""Labelled sets from the store, and loaders for the real data sets."""

from rluf.data.labels import DatasetConfig, build_dataset
from rluf.data.realdata import load_alpacaeval, load_alpacaeval_references, load_hh_harmless

__all__ = ["DatasetConfig", "build_dataset", "load_alpacaeval", "load_alpacaeval_references", "load_hh_harmless"]
