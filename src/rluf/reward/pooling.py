"""Mean pooling in front of a checkpoint's own one-logit head (`pooling: mean`).

Written by hand because transformers' sequence-classification heads read one position only: [CLS] through
BERT's pre-training pooler (encoders) or the last real token (decoders). all-MiniLM-L6-v2, the default
backbone, was trained as a *mean-pooled* sentence encoder (its `1_Pooling` folder), so its [CLS] position
and pooler were never tuned to summarise a text. Frozen, on AlpacaEval split by model, a logistic regression
on its mean-pooled states reached test AUROC 0.867 against 0.841 on [CLS] and 0.837 on the pooler output.

The model folder stays a plain `AutoModelForSequenceClassification` folder (the pooler weights are simply
unused); `rluf_reward.json` records `pooling` so `RewardModel.load` wraps it again. Folders without it (made
before pooling existed) load as 'head', which is what they were trained with.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.modeling_outputs import SequenceClassifierOutput

POOLINGS = ("head", "mean")
"""`auto` (the default of `rluf reward train`) resolves to one of these when training starts."""


def _linear_head(model: Any) -> str:
    """The name of the checkpoint's final one-logit layer: BERT-style `classifier` or decoder-style `score`."""
    for name in ("classifier", "score"):
        if isinstance(getattr(model, name, None), torch.nn.Linear):
            return name
    raise ValueError(f"pooling 'mean' needs a sequence-classification model whose head is one Linear layer "
                     f"(`classifier` as in BERT, or `score` as in Llama); {type(model).__name__} has none — "
                     f"use pooling 'head'")


class MeanPooled(torch.nn.Module):
    """Masked mean of the last hidden states → dropout (where the model has one) → the one-logit head."""

    def __init__(self, model: Any):
        super().__init__()
        self.model = model
        self.config = model.config
        # Names, not modules: the layers stay the wrapped model's own, so each weight is saved once.
        self.head_name = _linear_head(model)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def forward(self, input_ids, attention_mask, token_type_ids=None, **_: Any) -> SequenceClassifierOutput:
        kw = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        hidden = self.model.base_model(input_ids=input_ids, attention_mask=attention_mask, **kw).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        dropout = getattr(self.model, "dropout", None) or torch.nn.Identity()
        return SequenceClassifierOutput(logits=getattr(self.model, self.head_name)(dropout(pooled)))

    def save_pretrained(self, path: Any, **kw: Any) -> None:
        self.model.save_pretrained(path, **kw)


def resolve_pooling(model: Any, pooling: str) -> str:
    """'auto' → 'mean' for encoders with a BERT-style Linear `classifier`, 'head' for the rest (decoders read
    their last real token, which under causal attention has seen the whole text). Measured with MiniLM, mean
    against [CLS]: AlpacaEval test AUROC 0.925 vs 0.915 (within-model 0.847 vs 0.833; the [CLS] run was fp32,
    on another day); a simulated log's test AUROC 0.598 vs 0.562 and Pearson with the simulated users' taste
    0.483 vs 0.402 (same data and seed)."""
    if pooling != "auto":
        return pooling
    return "mean" if isinstance(getattr(model, "classifier", None), torch.nn.Linear) else "head"


def with_pooling(model: Any, pooling: str) -> Any:
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    return MeanPooled(model) if pooling == "mean" else model
