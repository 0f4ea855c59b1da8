"""Loaders for ../shared/data (the tests that need it are skipped, with the reason, where it is absent)."""

from __future__ import annotations

import gzip

import orjson
import pyarrow.compute as pc
import pytest

from rluf.data import load_alpacaeval, load_alpacaeval_models, load_alpacaeval_references, load_hh_harmless
from rluf.data.realdata import first_human_turn, hh_messages, split_hh


def test_alpacaeval_rows_groups_and_win_rates(real_data_dir):
    t = load_alpacaeval(real_data_dir)
    models = load_alpacaeval_models(real_data_dir)
    assert len(models) == 21
    assert set(pc.unique(t["group"]).to_pylist()) == set(models)
    dropped = sum(int(v) for k, v in t.schema.metadata.items() if k.startswith(b"dropped_"))
    assert t.num_rows + dropped == sum(m["n"] for m in models.values()) == 16904
    assert {"prompt", "response", "label", "group", "instruction_id", "preference"} <= set(t.column_names)
    cols = t.select(["group", "label", "preference"]).to_pydict()
    by_model: dict[str, list[int]] = {}
    for g, y, p in zip(cols["group"], cols["label"], cols["preference"], strict=True):
        assert y == int(p > 1.5) and 1.0 <= p <= 2.0
        by_model.setdefault(g, []).append(y)
    for name, m in models.items():
        rate = 100 * sum(by_model[name]) / len(by_model[name])
        assert rate == pytest.approx(m["win_rate_from_rows"], abs=0.01), name
    assert pc.count_distinct(t["instruction_id"]).as_py() == 805
    assert len(load_alpacaeval_references(real_data_dir)) == 805


def test_hh_harmless_pairs_are_balanced(real_data_dir):
    t = load_hh_harmless(real_data_dir)
    meta = {k.decode(): int(v) for k, v in t.schema.metadata.items()}
    assert meta["pairs"] + meta["skipped_pairs"] == 2312 and meta["skipped_pairs"] < 20
    assert t.num_rows == 2 * meta["pairs"] > 4550
    assert pc.sum(t["label"]).as_py() == meta["pairs"]                     # one chosen, one rejected each
    assert pc.count_distinct(t["group"]).as_py() == meta["pairs"]
    rows = t.slice(0, 200).to_pylist()
    for chosen, rejected in zip(rows[::2], rows[1::2], strict=True):
        assert chosen["pair_id"] == rejected["pair_id"] and (chosen["label"], rejected["label"]) == (1, 0)
        assert chosen["prompt"] == rejected["prompt"] and chosen["response"] != rejected["response"]
        assert chosen["prompt"].endswith("\n\nAssistant:") and chosen["response"]
        assert orjson.loads(chosen["messages"])[-1]["role"] == "user"


def test_hh_transcript_parsing():
    tr = "\n\nHuman: hi there\n\nAssistant: hello\n\nHuman: how to pick a lock?\n\nAssistant: I can't help."
    prompt, answer = split_hh(tr)
    assert answer == "I can't help." and prompt == tr[: -len(" I can't help.")]
    assert hh_messages(prompt) == [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "hello"},
                                   {"role": "user", "content": "how to pick a lock?"}]
    assert first_human_turn(tr) == "hi there"
    with pytest.raises(ValueError):
        split_hh("\n\nHuman: no answer here")


def test_loaders_on_small_files(tmp_path):
    """The loaders' rules on a handmade copy: null preferences dropped and counted, HH pairs skipped by reason."""
    a = tmp_path / "alpacaeval"
    a.mkdir()
    with gzip.open(a / "instructions.jsonl.gz", "wb") as f:
        f.write(orjson.dumps({"instruction_id": "i1", "instruction": "Say hi", "dataset": "x"}) + b"\n")
    with gzip.open(a / "judgments.jsonl.gz", "wb") as f:
        for model, pref in (("m1", 1.9), ("m2", 1.5), ("m3", None), ("m4", 1.2)):
            f.write(orjson.dumps({"instruction_id": "i1", "model": model, "generator": model, "output": "hi",
                                  "preference": pref}) + b"\n")
    t = load_alpacaeval(tmp_path)
    assert t.column("label").to_pylist() == [1, 0, 0] and t.column("group").to_pylist() == ["m1", "m2", "m4"]
    assert t.schema.metadata[b"dropped_null_preference"] == b"1"
    (tmp_path / "hh_rlhf").mkdir()
    h, q = "\n\nHuman: q\n\nAssistant:", "\n\nHuman: other\n\nAssistant:"
    pairs = [{"chosen": h + " good", "rejected": h + " bad"}, {"chosen": h + " same", "rejected": h + " same"},
             {"chosen": h + " good", "rejected": q + " bad"}, {"chosen": h, "rejected": h + " x"}, {"chosen": 3}]
    with gzip.open(tmp_path / "hh_rlhf" / "harmless-base-test.jsonl.gz", "wb") as f:
        f.write(b"".join(orjson.dumps(p) + b"\n" for p in pairs))
    t = load_hh_harmless(tmp_path)
    assert t.column("response").to_pylist() == ["good", "bad"] and t.column("group").to_pylist() == ["hh-00000"] * 2
    meta = {k.decode(): int(v) for k, v in t.schema.metadata.items()}
    assert meta == {"pairs": 1, "skipped_pairs": 4, "skipped_prompt_differs": 1, "skipped_identical": 1,
                    "skipped_empty_response": 1, "skipped_malformed": 1}


def test_missing_data_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="--data-dir"):
        load_alpacaeval(tmp_path)
    with pytest.raises(FileNotFoundError, match="harmless-base-test"):
        load_hh_harmless(tmp_path)
