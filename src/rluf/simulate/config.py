"""The simulated population's knobs, with the defaults `rluf simulate` and `rluf demo` use."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from rluf.config import StrictModel

SEGMENTS = ("information", "companionship", "creative", "adversarial", "bot")


class SimulateConfig(StrictModel):
    users: int = Field(2000, ge=1)
    """Number of simulated users."""
    days: int = Field(7, ge=1)
    """Days of traffic; users return on later days."""
    seed: int = 0
    """Random seed: the same seed gives byte-identical files."""
    responder: str = "style"
    """Who answers: 'world' (real answers: the reference policy's, AlpacaEval and HH-RLHF deployments', and a
    love-bait arm), 'policy:DIR' (a real language model folder; 'policy:default' = SmolLM2), 'style' (a fast
    template responder that varies style) or 'bait' (the same, a closer on every answer)."""
    reference_policy: str | None = None
    """world responder: the reference policy's folder (None: the default SmolLM2)."""
    responder_samples: int = Field(4, ge=1)
    """policy responder: answers generated per distinct prompt (drawn at random per turn, then reused)."""
    responder_max_new_tokens: int = Field(96, ge=1)
    """policy responder: tokens per answer."""
    prompts_per_segment: int | None = Field(None, ge=1)
    """Keep only this many prompts per segment (a seeded sample): bounds a policy responder's generation."""
    policy_name: str | None = None
    """Value of the log's `policy` field (default: the responder's name)."""
    id_prefix: str = Field("", pattern=r"^[A-Za-z0-9_-]*$", max_length=16)
    """Prefix of user, conversation and response ids, so that logs of several simulated deployments (say, one
    per responder) can be ingested into one store without their ids colliding."""
    data_dir: Path | None = None
    """Folder with alpacaeval/ and hh_rlhf/ (default ../shared/data); without it, built-in prompts."""
    start: str = "2026-11-01T00:00:00Z"
    """Start of the first day (ISO-8601)."""
    love_rate: float = Field(0.02, gt=0, lt=1)
    """Target love reactions per turn shown to human users (bots add their own hearts on top); the
    realised rates, with and without bots, are reported."""
    mixture: dict[str, float] = Field(default_factory=lambda: {
        "information": 0.42, "companionship": 0.27, "creative": 0.21, "adversarial": 0.06, "bot": 0.01})
    """Share of users per segment (renormalised)."""
    reactive_share: float = Field(0.3, ge=0, le=1)
    """Share of (non-bot) users who ever react; the others never do."""
    propensity_sigma: float = Field(1.0, ge=0)
    """Spread (log-odds, normal) of the reaction propensity among reactive users: a heavy right tail."""
    daily_active: float = Field(0.45, gt=0, le=1)
    """Mean chance a user is active on a given day (per-user, Beta-distributed)."""
    conversations_per_day: float = Field(1.5, gt=0)
    """Mean conversations on an active day."""
    max_turns: int = Field(6, ge=1)
    """Longest conversation."""
    reaction_delay_minutes: float = Field(20.0, gt=0)
    """Median delay of a reaction (lognormal; a few arrive after a day)."""
    reaction_delay_sigma: float = Field(1.8, ge=0)
    withdraw_prob: float = Field(0.05, ge=0, le=1)
    """Chance a love reaction is withdrawn later."""
    like_rate: float = Field(0.03, ge=0, le=1)
    """Chance a reactive user gives a 'like' (a separate, weaker signal)."""
    dislike_rate: float = Field(0.02, ge=0, le=1)
    """Base chance of a 'dislike' (higher for bad or unsafe answers)."""
    bot_love_everything: float = Field(0.5, ge=0, le=1)
    """Share of bots that heart every answer; the other bots heart at random."""
    bot_random_rate: float = Field(0.2, ge=0, le=1)
    """How often a random bot hearts."""
    calibration_turns: int = Field(20_000, ge=1000)
    """Turns of the style responder on which the love-rate intercept is fitted (fixed per config, so a
    better responder gets a higher love rate)."""

    @field_validator("mixture")
    @classmethod
    def _known_segments(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = set(v) - set(SEGMENTS)
        if unknown:
            raise ValueError(f"unknown segments {sorted(unknown)}; expected {', '.join(SEGMENTS)}")
        if any(x < 0 for x in v.values()) or sum(v.values()) <= 0:
            raise ValueError("mixture shares must be non-negative and not all zero")
        return v
