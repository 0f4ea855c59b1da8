"""The AlpacaEval helpfulness split (by model, dealt by win rate) and the baselines a pairwise accuracy is read
against ("the longer answer wins", "the reference wins")."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats

from rluf.reward.metrics import baselines_md, pairwise_baselines, wilson
from rluf.reward.pairs import SIDES, assign_models, model_win_rates, split_by_model

# AlpacaEval-like: three strong models, the rest losing to the reference almost always.
RATES = [0.72, 0.66, 0.53, 0.16, 0.13, 0.088, 0.082, 0.073, 0.071, 0.062, 0.06, 0.058, 0.055, 0.053, 0.047,
         0.045, 0.04, 0.039, 0.032, 0.027, 0.016]


def synthetic_pairs(rates=RATES, instructions=40, seed=0) -> pa.Table:
    rng = np.random.default_rng(seed)
    rows = []
    for j, rate in enumerate(rates):
        for i in range(instructions):
            won = bool(rng.random() < rate)
            model, ref = "m" * int(rng.integers(1, 30)), "r" * int(rng.integers(1, 30))
            chosen, rejected = (model, ref) if won else (ref, model)
            rows.append({"prompt": f"q{i}", "chosen": chosen, "rejected": rejected, "group": f"model{j:02d}",
                         "instruction_id": str(i), "chosen_is_reference": not won,
                         "chosen_length": len(chosen), "rejected_length": len(rejected)})
    return pa.Table.from_pylist(rows)


def check_split(side: dict[str, str], rates: dict[str, float]) -> None:
    assert set(side.values()) == set(SIDES)
    ranked = sorted(rates, key=lambda m: -rates[m])
    strong, weak = set(ranked[:2]), set(ranked[len(ranked) * 2 // 3:])
    for k in ("validation", "test"):
        held = {m for m, s in side.items() if s == k}
        assert len(held) >= 3
        # spans the range: one of the two strongest models and one of the weakest third
        assert held & strong and held & weak, (k, held)
    assert any(side[m] == "train" for m in ranked[:3])  # training keeps a strong model too


def test_assign_models_deals_held_out_sides_across_win_rates():
    rates = {f"model{j:02d}": r for j, r in enumerate(RATES)}
    side = assign_models(rates)
    check_split(side, rates)
    assert [sum(s == k for s in side.values()) for k in SIDES] == [13, 4, 4]
    assert assign_models(dict(reversed(rates.items()))) == side  # deterministic, whatever the input order
    with pytest.raises(ValueError):
        assign_models(rates, every=2)


def test_split_by_model_no_model_on_two_sides_and_every_row_kept():
    t = synthetic_pairs()
    parts, side = split_by_model(t)
    seen = {k: set(parts[k]["group"].to_pylist()) for k in SIDES}
    assert not (seen["train"] & seen["validation"] or seen["train"] & seen["test"] or seen["validation"] & seen["test"])
    assert all(side[g] == k for k in SIDES for g in seen[k])
    assert sum(p.num_rows for p in parts.values()) == t.num_rows
    check_split(side, model_win_rates(t))
    again, _ = split_by_model(t)
    assert all(again[k].equals(parts[k]) for k in SIDES)
    # rows are shuffled, so a capped prefix of validation still holds all its models
    assert set(parts["validation"].slice(0, 40)["group"].to_pylist()) == seen["validation"]


def test_model_win_rates_from_the_reference_side():
    t = pa.table({"group": ["a", "a", "a", "a", "b"], "chosen_is_reference": [True, False, True, True, True]})
    assert model_win_rates(t) == {"a": 0.25, "b": 0.0}


def test_pairwise_baselines_on_a_hand_made_set():
    # pair:             0     1     2     3     4     5
    lc = np.array([10, 5, 7, 3, 8, 20])
    lr = np.array([5, 9, 7, 4, 2, 1])             # longer wins: 1, 0, 0.5 (tie), 0, 1, 1 -> 3.5 / 6
    ref = np.array([1, 1, 0, 1, 0, 1], bool)      # reference wins: 4 / 6
    rc = np.array([1.0, 2.0, 0.0, 0.5, 3.0, 1.0])
    rr = np.array([0.0, 1.0, 1.0, 0.5, 1.0, 2.0])  # model: 1, 1, 0, 0 (tie), 1, 0 -> 3 / 6
    groups = ["x", "x", "x", "y", "y", "y"]
    b = pairwise_baselines(lc, lr, ref, rc, rr, groups=groups)
    assert b["n"] == 6 and b["interval"] == "Wilson"
    assert b["model"]["accuracy"] == pytest.approx(3 / 6)
    assert b["longer_wins"]["accuracy"] == pytest.approx(3.5 / 6)
    assert b["reference_wins"]["accuracy"] == pytest.approx(4 / 6)
    x, y = b["by_group"]["x"], b["by_group"]["y"]
    assert (x["n"], y["n"]) == (3, 3)
    for k, want_x, want_y in (("model", 2 / 3, 1 / 3), ("longer_wins", 1.5 / 3, 2 / 3),
                              ("reference_wins", 2 / 3, 2 / 3)):
        assert (x[k]["accuracy"], y[k]["accuracy"]) == pytest.approx((want_x, want_y)), k
    for m in (b, x, y):
        for k in ("model", "longer_wins", "reference_wins"):
            lo, hi = m[k]["ci95"]
            assert 0 <= lo <= m[k]["accuracy"] <= hi <= 1
    # without rewards or a reference: only the length baseline
    only = pairwise_baselines(lc, lr)
    assert set(only) == {"interval", "n", "longer_wins"}
    md = "\n".join(baselines_md(b))
    assert "| all | 6 | 0.500 [" in md and "| x | 3 |" in md and "reference wins" in md


def test_wilson_matches_scipy():
    for k, n in ((0, 10), (8, 10), (97, 100), (400, 400)):
        ci = stats.binomtest(k, n).proportion_ci(method="wilson")
        assert wilson(k, n) == pytest.approx([ci.low, ci.high], abs=1e-6)
    assert wilson(0, 0) is None


def test_bootstrap_over_clusters_contains_the_point_and_pairs_the_differences():
    t = synthetic_pairs(instructions=60, seed=3)
    c = t.to_pydict()
    rng = np.random.default_rng(1)
    # a scorer right 80 % of the time
    right = rng.random(t.num_rows) < 0.8
    rc, rr = np.where(right, 1.0, 0.0), np.where(right, 0.0, 1.0)
    b = pairwise_baselines(c["chosen_length"], c["rejected_length"], c["chosen_is_reference"], rc, rr,
                           groups=c["group"], clusters=c["instruction_id"], n=500)
    assert b["interval"] == "bootstrap over 60 clusters, 500 resamples"
    assert b["model"]["accuracy"] == pytest.approx(right.mean())
    assert b["reference_wins"]["accuracy"] == pytest.approx(np.mean(c["chosen_is_reference"]))
    for m in (b, *b["by_group"].values()):
        for k in ("model", "longer_wins", "reference_wins"):
            lo, hi = m[k]["ci95"]
            assert lo <= m[k]["accuracy"] + 1e-12 and m[k]["accuracy"] <= hi + 1e-12
        d = m["model_minus_reference_wins"]
        assert d["difference"] == pytest.approx(m["model"]["accuracy"] - m["reference_wins"]["accuracy"])
        assert d["ci95"][0] <= d["difference"] + 1e-12 <= d["ci95"][1] + 2e-12
    # 1,260 pairs: the overall interval is a few points wide, a single model's wider
    assert b["model"]["ci95"][1] - b["model"]["ci95"][0] < 0.06
    assert b["by_group"]["model00"]["model"]["ci95"][1] - b["by_group"]["model00"]["model"]["ci95"][0] > 0.1
    assert pairwise_baselines(c["chosen_length"], c["rejected_length"], c["chosen_is_reference"], rc, rr,
                              clusters=c["instruction_id"], n=500) == {k: v for k, v in b.items() if k != "by_group"}


def test_real_alpacaeval_pairs_split_by_win_rate(real_data_dir):
    from rluf.reward.pairs import alpacaeval_pairs

    t = alpacaeval_pairs(real_data_dir)
    c = t.select(["chosen", "rejected", "chosen_is_reference", "chosen_length", "rejected_length",
                  "preference"]).to_pydict()
    assert c["chosen_length"] == [len(x) for x in c["chosen"]]
    assert c["rejected_length"] == [len(x) for x in c["rejected"]]
    assert all(ref == (p <= 1.5) for ref, p in zip(c["chosen_is_reference"], c["preference"], strict=True))
    parts, side = split_by_model(t)
    rates = model_win_rates(t)
    assert len(side) == 21
    check_split(side, rates)
    for k in ("validation", "test"):
        held = [rates[m] for m, s in side.items() if s == k]
        assert max(held) > 0.6 and min(held) < 0.06
        # the held-out side is no longer one the reference wins ~97 % of the time
        assert np.mean(parts[k]["chosen_is_reference"].to_pylist()) < 0.85
