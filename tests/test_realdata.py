"""Loaders for ../shared/data (skipped with the reason where the folder is absent)."""

from __future__ import annotations

import csv

import pyarrow.compute as pc
import pytest

from rluf.data import load_alpacaeval, load_alpacaeval_references, load_hh_harmless
from rluf.data.realdata import first_human_turn, split_hh


def test_alpacaeval_labels_match_the_published_win_rates(real_data_dir):
    t = load_alpacaeval(real_data_dir)
    with open(real_data_dir / "alpacaeval" / "models.csv") as f:
        models = {r["model"]: r for r in csv.DictReader(f)}
    assert set(pc.unique(t["group"]).to_pylist()) == set(models)
    assert t.num_rows >= 0.99 * sum(int(m["n"]) for m in models.values())
    df = t.to_pandas()
    for name, m in models.items():
        rate = 100 * df.loc[df.group == name, "label"].mean()
        assert rate == pytest.approx(float(m["win_rate_from_rows"]), abs=0.2), name
    assert set(df.label.unique()) == {0, 1}
    refs = load_alpacaeval_references(real_data_dir)
    assert len(refs) == df.instruction_id.nunique()


def test_hh_harmless_pairs(real_data_dir):
    t = load_hh_harmless(real_data_dir)
    skipped = int(t.schema.metadata[b"skipped_pairs"])
    assert t.num_rows // 2 + skipped == 2312
    assert pc.sum(t["label"]).as_py() == t.num_rows // 2
    assert all(p.endswith("\n\nAssistant:") for p in t["prompt"].to_pylist()[:50])


def test_hh_transcript_parsing():
    tr = "\n\nHuman: hi there\n\nAssistant: hello\n\nHuman: how to pick a lock?\n\nAssistant: I can't help."
    prompt, answer = split_hh(tr)
    assert answer == "I can't help." and prompt.endswith("how to pick a lock?\n\nAssistant:")
    assert first_human_turn(tr) == "hi there"


def test_missing_data_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="--data-dir"):
        load_alpacaeval(tmp_path)
