"""Judges: constraints that veto a sampled answer, whatever its reward (CGPO's "mixture of judges").

One small protocol: a judge takes prompts and responses (and, for the model-based ones, the reference answer
per prompt) and returns, per sample, whether the answer violates it and why. A sample that violates any
judge of its task gets no credit from CRPG, is the negative in CODPO and is never imitated by CRRAFT.

Rule-based judges are regexes and counts, fast and transparent; model-based ones threshold a reward model;
the `llm` judge (`rluf.policy.llm_judge`) asks a chat model a yes/no question about each answer.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol

from rluf.data.unsafe import UNSAFE


@dataclass(frozen=True)
class Verdict:
    violated: bool
    reason: str = ""


PASS = Verdict(False)


class Judge(Protocol):
    name: str

    def __call__(self, prompts: list[str], responses: list[str], references: list[str] | None = None
                 ) -> list[Verdict]: ...


# Love-bait and sign-off closers: what the paper's policy learned at P[Love] weight 0.3 ("Bye! Sending love!").
SIGNOFF = re.compile(
    # "good night's sleep", "take care not to burn it", "you'll see you need..." are advice, not closers.
    r"(\b(bye|goodbye|good night(?!['’]s\b|\s+(sleep|rest)\b)|farewell|"
    r"take care(?!\s+(to|not|that|when|while|with|in)\b)(?!\s+of\s+(?!yourself\b))|talk (to you )?soon|"
    r"see you( soon| later| next time| around)?(?=\s*([!.,;:)]|\W*$))|ttyl|xoxo|"
    r"sending (you )?(love|hugs|hearts?)|hugs and kisses|lots of love|with love|love you)\b"
    r"|\b(leave|give|send|hit|tap|press|click|drop)( me| us)? (a |the )?(heart|like|love|reaction|thumbs up)\b"
    r"|\bif (this|that|it|i) (helped|was helpful|made you smile)[^.!?]{0,40}\b(heart|like|react(ion)?)\b"
    r"|[\u2764\u2665\U0001F495-\U0001F49F\U0001F60D\U0001F618\U0001F970\U0001F917])",
    re.IGNORECASE,
)
SIGNOFF_TAIL_CHARS = 160
"""A sign-off is judged on the end of the answer, where closers live; "goodbye" in a story's middle is fine."""

REFUSAL = re.compile(
    # Typographic apostrophes (’) as well: real and model-written answers use both.
    r"\b(i can(no|['’])t|i am unable to|i['’]m unable to|i won['’]?t|i will not|i must decline|i['’]m not able to|"
    r"i am not able to|as an ai( language model)?,? i (can(no|['’])t|don['’]?t)|i['’]m sorry,? but i)\b",
    re.IGNORECASE,
)
REFUSAL_HEAD_CHARS = 160
# Stems with inflections only, not any continuation: `meth\w*` matched "method", `rob\w*` "robot"/"robust",
# `scam\w*` "scampi", and a refusal of such a benign prompt then passed as a refusal of a harmful one.
HARMFUL_REQUEST = re.compile(
    r"\b(steal|stole|stolen|kill|murder|poison|bomb|weapon|drug|meth|hack|launder|shoplift|hurt|revenge|racist|"
    r"insult|cheat|explosive|suicide|suicidal|self-harm|illegal|rob|robb|scam|scamm|stalk|kidnap|kidnapp|"
    r"tortur|torture)(s|es|e?d|ing|ers?|ery|ies|ly)?\b",
    re.IGNORECASE,
)


def signoff_found(response: str) -> bool:
    return bool(SIGNOFF.search(response[-SIGNOFF_TAIL_CHARS:]))


@dataclass
class SignoffJudge:
    """Love-bait / sign-off closers: farewells, "sending love", hearts, asking for a reaction."""

    name: str = "signoff"

    def __call__(self, prompts, responses, references=None):
        return [Verdict(True, f"sign-off closer: {m.group(0)!r}") if (m := SIGNOFF.search(r[-SIGNOFF_TAIL_CHARS:]))
                else PASS for r in responses]


@dataclass
class RefusalJudge:
    """Refusing a benign request is a violation; refusing a harmful one is not (the safety judge wants it)."""

    name: str = "refusal"

    def __call__(self, prompts, responses, references=None):
        out = []
        for p, r in zip(prompts, responses, strict=True):
            m = REFUSAL.search(r[:REFUSAL_HEAD_CHARS])
            out.append(Verdict(True, f"refused a benign request: {m.group(0)!r}")
                       if m and not HARMFUL_REQUEST.search(p) else PASS)
        return out


@dataclass
class RepetitionJudge:
    """Degenerate repetition: one word n-gram filling too much of the answer."""

    n: int = 3
    max_share: float = 0.3
    min_words: int = 12
    name: str = "repetition"

    def __call__(self, prompts, responses, references=None):
        out = []
        for r in responses:
            words = r.lower().split()
            grams = [tuple(words[i:i + self.n]) for i in range(len(words) - self.n + 1)]
            if len(words) < self.min_words or not grams:
                out.append(PASS)
                continue
            gram, count = Counter(grams).most_common(1)[0]
            share = count * self.n / len(words)
            out.append(Verdict(True, f"{' '.join(gram)!r} repeated {count}x ({share:.0%} of words)")
                       if count > 2 and share > self.max_share else PASS)
        return out


@dataclass
class LengthJudge:
    min_words: int = 1
    max_words: int = 400
    name: str = "length"

    def __call__(self, prompts, responses, references=None):
        out = []
        for r in responses:
            n = len(r.split())
            out.append(Verdict(True, f"{n} words, below {self.min_words}") if n < self.min_words else
                       Verdict(True, f"{n} words, above {self.max_words}") if n > self.max_words else PASS)
        return out


WORD_LIMIT = re.compile(r"\b(?:in|under|within|at most|no more than|fewer than|less than)\s+(\d+)\s+words?\b",
                        re.IGNORECASE)
SENTENCE_LIMIT = re.compile(r"\b(?:in|at most|no more than)\s+(one|two|three|\d+)\s+sentences?\b", re.IGNORECASE)
# A quoted keyword is what is between the quotes; an unquoted one is the next word. (A lazy run up to the
# next punctuation read "use the word 'ocean' in your poem." as the keyword "ocean' in your poem", which no
# answer contains, and missed "include the keyword "blue sky" in it" altogether.)
KEYWORD = re.compile(r"\b(?:include|use|mention) the (?:word|keyword|phrase)s?\s+"
                     r"(?:[\"“'‘]([^\"”'’]+)[\"”'’]|([\w-]+))", re.IGNORECASE)
JSON_FORMAT = re.compile(r"\b(in|as) (valid )?json\b", re.IGNORECASE)
BULLETS = re.compile(r"\b(bullet(ed)? (points?|list)|as a list)\b", re.IGNORECASE)
NUMBERS = {"one": 1, "two": 2, "three": 3}


@dataclass
class InstructionJudge:
    """Verifiable instructions in the prompt: word and sentence limits, required keywords, JSON, bullets."""

    name: str = "instructions"

    def check(self, prompt: str, response: str) -> str | None:
        if m := WORD_LIMIT.search(prompt):
            limit, n = int(m.group(1)), len(response.split())
            if n > limit:
                return f"{n} words, the prompt allows {limit}"
        if m := SENTENCE_LIMIT.search(prompt):
            limit = NUMBERS.get(m.group(1).lower()) or int(m.group(1))
            n = len([s for s in re.split(r"(?<=[.!?])\s+", response.strip()) if s])
            if n > limit:
                return f"{n} sentences, the prompt allows {limit}"
        for m in KEYWORD.finditer(prompt):
            kw = (m.group(1) or m.group(2)).strip()
            if kw and kw.lower() not in response.lower():
                return f"required keyword {kw!r} missing"
        if JSON_FORMAT.search(prompt):
            import json

            body = response.strip().removeprefix("```json").removeprefix("```").removesuffix("```").strip()
            try:
                json.loads(body)
            except ValueError:
                return "the prompt asks for JSON, the answer does not parse"
        if BULLETS.search(prompt) and not re.search(r"^\s*([-*•]|\d+[.)])\s", response, re.MULTILINE):
            return "the prompt asks for a list, the answer has no list items"
        return None

    def __call__(self, prompts, responses, references=None):
        return [Verdict(True, why) if (why := self.check(p, r)) else PASS
                for p, r in zip(prompts, responses, strict=True)]


@dataclass
class UnsafeLexiconJudge:
    """Answers matching the unsafe lexicon of `rluf.data.unsafe` (harmful how-tos) without a refusal."""

    name: str = "unsafe_lexicon"

    def __call__(self, prompts, responses, references=None):
        from rluf.data.unsafe import is_unsafe

        return [Verdict(True, f"unsafe content: {UNSAFE.search(r).group(0)!r}") if is_unsafe(r) else PASS
                for r in responses]


@dataclass
class SafetyJudge:
    """The safety reward model below a threshold. With `relative`, the threshold applies to the calibrated
    score sigmoid(r(answer) - r(reference)): "clearly less safe than the reference answer"."""

    reward_model: Any
    threshold: float = 0.0
    relative: bool = False
    name: str = "safety"

    def __call__(self, prompts, responses, references=None):
        import numpy as np

        r = self.reward_model.logits(prompts, responses)
        if self.relative:
            if references is None:
                raise ValueError("safety judge with relative=true needs reference answers")
            r = 1 / (1 + np.exp(-(r - self.reward_model.logits(prompts, references))))
        return [Verdict(True, f"safety score {x:.3f} < {self.threshold}") if x < self.threshold else PASS for x in r]


@dataclass
class HelpfulnessFloorJudge:
    """Calibrated helpfulness vs the reference answer, sigmoid(r(answer) - r(reference)), below a floor."""

    reward_model: Any
    floor: float = 0.2
    name: str = "helpfulness_floor"

    def __call__(self, prompts, responses, references=None):
        import numpy as np

        if references is None:
            raise ValueError("the helpfulness-floor judge needs a reference answer per prompt")
        z = self.reward_model.logits(prompts, responses) - self.reward_model.logits(prompts, references)
        p = 1 / (1 + np.exp(-z))
        return [Verdict(True, f"helpfulness vs reference {x:.3f} < {self.floor}") if x < self.floor else PASS
                for x in p]


RULE_JUDGES = {"signoff": SignoffJudge, "refusal": RefusalJudge, "repetition": RepetitionJudge,
               "length": LengthJudge, "instructions": InstructionJudge, "unsafe_lexicon": UnsafeLexiconJudge}
MODEL_JUDGES = {"safety": SafetyJudge, "helpfulness_floor": HelpfulnessFloorJudge}
# Judges that ask a chat model (`rluf.policy.llm_judge`), imported on use: that module imports Verdict from here.
LLM_JUDGES = ("llm",)


def build_judge(kind: str, params: dict[str, Any] | None = None, load_reward: Any = None) -> Judge:
    """A judge from its config entry; model-based judges get their reward model through `load_reward(path)`.

    ```python
    build_judge("length", {"max_words": 50})  # LengthJudge(min_words=1, max_words=50, name='length')
    build_judge("llm", {"question": "closer", "base_url": "http://127.0.0.1:8000"}).name  # 'llm_closer'
    ```
    """
    params = dict(params or {})
    if kind in RULE_JUDGES:
        return RULE_JUDGES[kind](**params)
    if kind in MODEL_JUDGES:
        model = params.pop("model", None)
        if not model:
            raise ValueError(f"judge {kind!r} needs params.model (a reward model folder)")
        return MODEL_JUDGES[kind](reward_model=load_reward(model), **params)
    if kind in LLM_JUDGES:
        from rluf.policy.llm_judge import LLMJudge

        return LLMJudge.from_params(params)
    raise ValueError(f"unknown judge {kind!r}; expected one of "
                     f"{sorted(RULE_JUDGES) + sorted(MODEL_JUDGES) + list(LLM_JUDGES)}")


def judge_name(kind: str, params: dict[str, Any] | None = None) -> str:
    """The name `build_judge(kind, params)` gives its judge, without building it (no model loads): what
    `run_judges` keys verdicts by, so log columns can be laid out from the config alone.

    ```python
    judge_name("llm", {"question": "refusal"})  # 'llm_refusal'
    ```
    """
    params = params or {}
    if kind in LLM_JUDGES:
        from rluf.policy.llm_judge import judge_name as llm_judge_name

        return llm_judge_name(params)
    return str(params.get("name") or kind)


def run_judges(judges: list[Judge], prompts: list[str], responses: list[str], references: list[str] | None = None
               ) -> tuple[list[bool], dict[str, list[Verdict]]]:
    """(passed all judges per sample, verdicts per judge name)."""
    verdicts = {j.name: j(prompts, responses, references) for j in judges}
    passed = [not any(v[i].violated for v in verdicts.values()) for i in range(len(responses))]
    return passed, verdicts
