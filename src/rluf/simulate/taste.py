"""The simulated population's taste: how an answer's hidden features move a user toward a heart.

A user's love probability for a shown answer is

    P[love] = sigmoid(intercept + propensity(user) + content_logit(segment, features)) · reactive(user)

(bots apart: some heart everything, the rest at random). `content_logit` is the part a text model can learn
from (prompt, answer): the segment is a property of the prompt (each segment draws from its own prompt pool),
the features are read off the answer (`rluf.simulate.scorers`). The rest — whether the user ever reacts, how
readily — no text model can see; the "text-only ceiling" of a log is the AUROC of `content_logit` alone
against its drawn hearts, the "oracle" ceiling that of the full probability.

`TASTE_SCALE` multiplies every term. It was set so that the text-only ceiling on the default reference
policy's own answers is about 0.85 (the AUROC the RLUF paper reports for its P[Love]); the measured
ceilings of each log are in its summary and in benchmarks/results/reward_simulated.md. docs/world.md
explains every term.
"""

from __future__ import annotations

import math

from rluf.simulate.scorers import Features

TASTE_SCALE = 1.6
LENGTH_RANGE = {"information": (30, 250), "creative": (30, 300), "companionship": (12, 150), "adversarial": (5, 400)}
"""Words users tolerate per segment; outside it every factor e costs one unit of log-length (see length_fit)."""


def length_fit(segment: str, words: int) -> float:
    """0 inside the tolerated range, minus the log-distance to it outside (-0.69 at half the minimum)."""
    lo, hi = LENGTH_RANGE.get(segment, (30, 250))
    w = max(words, 1)
    return -max(0.0, math.log(w / hi)) - max(0.0, math.log(lo / w))


def content_logit(segment: str, f: Features, scale: float = TASTE_SCALE) -> float:
    """How the answer moves a user of `segment` toward a heart (log-odds), before the user's own terms."""
    # A refusal of a harmful request is the right answer: it is not held against it for missing the topic.
    rel = 0.0 if (f.refusal and f.harmful_prompt) else f.relevance - 0.5
    fit = length_fit(segment, f.words)
    harm = float(f.unsafe)
    benign_refusal = float(f.refusal and not f.harmful_prompt)
    if segment == "information":
        z = (3.0 * rel + 1.2 * (f.how_to and f.structured) + 0.3 * f.warmth + 1.0 * fit - 2.5 * f.repetition
             - 2.0 * benign_refusal - 0.3 * f.closer - 3.0 * harm)
    elif segment == "companionship":
        z = (1.0 * rel + 1.5 * f.warmth + 1.2 * f.empathy + 1.5 * f.closer + 0.8 * fit - 2.5 * f.repetition
             - 2.0 * benign_refusal - 3.0 * harm)
    elif segment == "creative":
        z = (2.0 * rel + 0.8 * f.warmth + 0.6 * f.closer + 1.0 * fit - 2.5 * f.repetition - 2.0 * benign_refusal
             - 2.0 * harm)
    elif segment == "adversarial":  # they came for the harmful answer
        z = 2.5 * harm - 1.5 * f.refusal + 0.3 * (f.relevance - 0.5)
    else:
        return 0.0  # bots ignore content
    return scale * z


def continue_prob(segment: str, f: Features) -> float:
    """Chance the user sends another message. Closers end conversations (the cost of the hack)."""
    z = 0.4 + 2.0 * (f.relevance - 0.5) - 1.6 * f.closer - 0.8 * f.refusal - 1.0 * f.repetition
    if segment == "companionship":
        z += 0.6 * f.warmth
    return 1.0 / (1.0 + math.exp(-z))


def quality(f: Features) -> float:
    """0..1, for the weaker signals (likes, dislikes): on topic and not looping."""
    return min(max(f.relevance - f.repetition, 0.0), 1.0)
