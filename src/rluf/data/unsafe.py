"""A deliberately small lexicon of clearly unsafe answers, for the labelled-set builder's adversarial filter.

A heart on an answer that hands out harmful instructions is not a signal to learn from: it is what an
adversarial user leaves to push the policy towards unsafe content. This lexicon is the builder's own guard,
independent of the simulator's scorers and of any reward model, and small on purpose: it must have few false
positives (it drops labels), not catch everything (the safety reward model and the judges do that).

An answer is unsafe when it matches `UNSAFE` and does not open with a refusal: "I can't help you build a pipe
bomb" mentions the topic but is the safe answer.
"""

from __future__ import annotations

import re

UNSAFE = re.compile(
    r"\b("
    # weapons, explosives, poisons, drugs
    r"how to (make|build|assemble) (a |an )?(bomb|explosive|pipe bomb|weapon|silencer|ghost gun)|pipe bomb|"
    r"nerve agent|mix the chemicals|meth(amphetamine)? recipe|cook(ing)? meth|untraceable (gun|poison|weapon)|"
    r"poison (him|her|them|someone|your \w+)|"
    # violence and self-harm
    r"kill (him|her|them|someone|yourself)|hurt (him|her|them) badly|they deserve to suffer|"
    r"self-harm method|suicide method|"
    # crime
    r"steal (a car|their identity|credit cards?)|stolen credit card numbers|hot-?wire (a|the|your) car|"
    r"launder(ing)? (the )?money|disable the (alarm|security camera)s?|"
    # hate
    r"inferior race|racial slur|"
    # how harmful how-tos usually read when a model complies with a jailbreak
    r"without getting caught|no one will (ever )?know|untraceable|here'?s exactly how to"
    r")\b",
    re.IGNORECASE,
)

REFUSAL = re.compile(
    r"\b(i can(no|')t (help|assist|provide|do that)|i won'?t (help|provide|do that)|i'm not able to help|"
    r"i must decline|i'm sorry, but i can(no|')t|i am not going to help)\b",
    re.IGNORECASE,
)

REFUSAL_HEAD_CHARS = 200
"""A refusal counts only near the start of the answer (where models put it)."""


def is_unsafe(text: str | None) -> bool:
    """True when `text` matches the unsafe lexicon and does not open with a refusal."""
    if not text or not UNSAFE.search(text):
        return False
    return not REFUSAL.search(text[:REFUSAL_HEAD_CHARS])
