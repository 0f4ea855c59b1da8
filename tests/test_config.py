"""Typed configs: the shipped YAML files load, unknown keys and bad values are errors, flags override."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from rluf.config import IngestConfig, load_config
from rluf.data import DatasetConfig
from rluf.simulate import SimulateConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
KIND = {"simulate.yaml": SimulateConfig, "dataset.yaml": DatasetConfig, "ingest.yaml": IngestConfig}


@pytest.mark.parametrize("name", sorted(KIND))
def test_shipped_configs_load(name):
    cfg = load_config(KIND[name], CONFIGS / name)
    assert cfg.model_dump()


def test_flags_override_yaml_and_none_means_unset():
    cfg = load_config(SimulateConfig, CONFIGS / "simulate.yaml", users=5, days=None)
    assert cfg.users == 5 and cfg.days == 7


def test_unknown_key_and_bad_value(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("userz: 3\n")
    with pytest.raises(ValidationError, match="userz"):
        load_config(SimulateConfig, f)
    f.write_text("window_hours: -1\n")
    with pytest.raises(ValidationError, match="window_hours"):
        load_config(DatasetConfig, f)
    f.write_text("- a list\n")
    with pytest.raises(ValueError, match="mapping"):
        load_config(IngestConfig, f)
