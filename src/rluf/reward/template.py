"""How a (prompt, response) pair becomes model input, keeping what decides a reaction: the answer's end.

Template (documented in the README and stored in each model's rluf_reward.json):

    <prefix specials> PROMPT <separator> RESPONSE <suffix specials>

The specials are whatever the tokenizer puts around a text pair (BERT: [CLS] A [SEP] B [SEP], with token
type ids 0 / 1); a tokenizer without a pair template (most decoders) gets "\\n\\nAssistant: " between the two.
Truncation to `max_length` tokens:
- the answer keeps up to `response_share` of the budget (more when the prompt is short); a longer answer is
  cut in the middle — its first third and its last two thirds survive, so closers ("Bye! Sending love ❤️")
  are never cut;
- the prompt gets the rest, cut from the left: the latest context stays.
Optional scoring views (`views`, 1 by default): a cut answer is also read with other cut points — the share of
the answer budget taken from the start runs from 0 to 2/3 over the views (1/3 is the single view's), so the
tail's last third of the budget is in every view and together they read up to 5/3 of the budget of answer
text. The model's logit is the mean over a row's views; an answer that fits is read once.
Optional length hint (`length_hint`, off by default): the response segment starts with "(N words) ", N the
whole answer's word count (two significant digits), added after the cut so it always survives. A model that
sees 128 tokens cannot otherwise tell a 150-word answer from a 900-word one. It is off by default because a
reward that reads length invites a policy to lengthen its answers; use it where length is part of what is
judged (AlpacaEval's preferences are).
(transformers 5 has no public way to assemble a pair from pre-cut token ids, hence this small builder.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DECODER_SEPARATOR = "\n\nAssistant: "


def length_hint_text(response: str) -> str:
    """'(N words) ' with N rounded to two significant digits: 7, 48, 130, 2100."""
    n = len(response.split())
    if n >= 100:
        step = 10 ** (int(math.log10(n)) - 1)
        n = int(round(n / step) * step)
    return f"({n} words) "


def _find(seq: list[int], sub: list[int], start: int = 0) -> int:
    for i in range(start, len(seq) - len(sub) + 1):
        if seq[i : i + len(sub)] == sub:
            return i
    raise ValueError("cannot locate the pair in the tokenizer's output")


@dataclass
class PairTemplate:
    prefix: list[int]
    middle: list[int]
    suffix: list[int]
    type_ids: tuple[int, int, int, int, int] | None  # prefix, prompt, middle, response, suffix
    max_length: int
    response_share: float = 0.75
    length_hint: bool = False
    views: int = 1

    @classmethod
    def from_tokenizer(cls, tok, max_length: int, response_share: float = 0.75, length_hint: bool = False,
                       views: int = 1) -> PairTemplate:
        if views < 1:
            raise ValueError(f"views must be >= 1, got {views}")
        a = tok("a", add_special_tokens=False)["input_ids"]
        b = tok("b", add_special_tokens=False)["input_ids"]
        enc = tok("a", "b")
        ids = list(enc["input_ids"])
        ia = _find(ids, a)
        ib = _find(ids, b, ia + len(a))
        middle = ids[ia + len(a) : ib]
        if not middle:
            middle = tok(DECODER_SEPARATOR, add_special_tokens=False)["input_ids"]
        tt = enc.get("token_type_ids")
        types = None
        if tt is not None:
            tt = list(tt)
            types = (tt[0] if ia else tt[ia], tt[ia], tt[ia], tt[ib], tt[-1] if ib + len(b) < len(ids) else tt[ib])
        return cls(ids[:ia], middle, ids[ib + len(b) :], types, max_length, response_share, length_hint, views)

    @property
    def n_special(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)

    def head_shares(self) -> list[float]:
        """Per view, the share of the answer budget kept from the answer's start when it is cut."""
        return [1 / 3] if self.views == 1 else [2 / 3 * i / (self.views - 1) for i in range(self.views)]

    def cut(self, p: list[int], r: list[int], reserved: int = 0, head_share: float = 1 / 3
            ) -> tuple[list[int], list[int]]:
        budget = max(self.max_length - self.n_special - reserved, 2)
        r_budget = max(int(budget * self.response_share), budget - len(p))
        if len(r) > r_budget:
            head = int(r_budget * head_share + 1e-9)
            r = r[:head] + r[len(r) - (r_budget - head) :]
        p_budget = budget - len(r)
        p = p[len(p) - p_budget :] if p_budget > 0 else []
        return p, r

    def tokenize(self, tok, prompts: list[str], responses: list[str]
                 ) -> list[tuple[list[int], list[int], list[int]]]:
        """Per pair: prompt ids, response ids and length-hint ids (empty when off), before the cut."""
        # verbose=False: texts longer than the model are expected here (the template cuts them next); the
        # tokenizer's "sequence length is longer than the specified maximum" warning would only alarm users.
        ps = tok(list(prompts), add_special_tokens=False, verbose=False)["input_ids"]
        rs = tok(list(responses), add_special_tokens=False, verbose=False)["input_ids"]
        hints = (tok([length_hint_text(r) for r in responses], add_special_tokens=False)["input_ids"]
                 if self.length_hint else [[]] * len(rs))
        return [(p, r, h) for p, r, h in zip(ps, rs, hints, strict=True)]

    def build(self, p: list[int], r: list[int], hint: list[int] = (), head_share: float = 1 / 3
              ) -> dict[str, list[int]]:
        p, r = self.cut(p, r, reserved=len(hint), head_share=head_share)
        r = list(hint) + r
        ids = self.prefix + p + self.middle + r + self.suffix
        out = {"input_ids": ids, "attention_mask": [1] * len(ids)}
        if self.type_ids is not None:
            t0, tp, tm, tr, ts = self.type_ids
            out["token_type_ids"] = ([t0] * len(self.prefix) + [tp] * len(p) + [tm] * len(self.middle)
                                     + [tr] * len(r) + [ts] * len(self.suffix))
        return out

    def encode(self, tok, prompts: list[str], responses: list[str]) -> list[dict[str, list[int]]]:
        """One input per pair: the single (default) cut, whatever `views` says; training reads this."""
        return [self.build(p, r, h) for p, r, h in self.tokenize(tok, prompts, responses)]

    def encode_views(self, tok, prompts: list[str], responses: list[str]) -> list[list[dict[str, list[int]]]]:
        """Per pair, its distinct inputs over `views` cut points (one where the answer fits)."""
        out = []
        for p, r, h in self.tokenize(tok, prompts, responses):
            encs = [self.build(p, r, h, s) for s in self.head_shares()]
            out.append([e for i, e in enumerate(encs) if all(e["input_ids"] != f["input_ids"] for f in encs[:i])])
        return out

    def describe(self) -> dict:
        return {"layout": "<prefix> PROMPT <middle> RESPONSE <suffix>", "max_length": self.max_length,
                "response_share": self.response_share, "prompt_cut": "left",
                "response_cut": "middle (first third + last two thirds kept)", "length_hint": self.length_hint,
                "views": self.views,
                "prefix": self.prefix, "middle": self.middle, "suffix": self.suffix}


def pad_batch(features: list[dict], pad_id: int) -> dict[str, list[list[int]]]:
    """Right-pad a batch of encodings to its longest member."""
    n = max(len(f["input_ids"]) for f in features)
    out: dict[str, list] = {}
    for key, fill in (("input_ids", pad_id), ("attention_mask", 0), ("token_type_ids", 0)):
        if key in features[0]:
            out[key] = [f[key] + [fill] * (n - len(f[key])) for f in features]
    return out
