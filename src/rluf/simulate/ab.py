"""A/B tests on the simulated population: users are split into arms by a salted hash of their id (sticky:
a user always sees the same arm), each arm's responder answers its users, and the same population reacts
over several days. The log's `policy` field carries the arm, so `rluf abtest analyze` reads it like live
traffic."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from rluf.simulate.config import SimulateConfig
from rluf.simulate.responders import Responder, make_responder


def assign_arm(user_id: str, arms: list[str], salt: str, weights: list[float] | None = None) -> str:
    """Sticky arm for a user: sha256(salt:user_id) → a uniform number in [0, 1) → the arm whose cumulative
    weight covers it. A new salt reshuffles everyone; the same salt never moves a user."""
    weights = weights or [1.0] * len(arms)
    if len(weights) != len(arms) or min(weights) <= 0:
        raise ValueError(f"arms {arms} need one positive weight each, got {weights}")
    u = int.from_bytes(hashlib.sha256(f"{salt}:{user_id}".encode()).digest()[:8], "big") / 2**64
    edges = np.cumsum(weights) / sum(weights)
    return arms[min(int(np.searchsorted(edges, u, side="right")), len(arms) - 1)]


class ArmRouter:
    """Routes each turn to the responder of its user's arm, in one batch per arm."""

    name = "ab"

    def __init__(self, arms: dict[str, Responder], salt: str = "rluf-ab", weights: list[float] | None = None):
        self.arms, self.salt, self.weights = arms, salt, weights
        self.names = list(arms)

    def respond_users(self, users: list[str], prompts: list[str], segments: list[str], harmful: list[bool],
                      rng: np.random.Generator) -> tuple[list[str], list[str]]:
        arm_of = [assign_arm(u, self.names, self.salt, self.weights) for u in users]
        answers: list[str] = [""] * len(users)
        for name in self.names:
            idx = [i for i, a in enumerate(arm_of) if a == name]
            if idx:
                got = self.arms[name].respond([prompts[i] for i in idx], [segments[i] for i in idx],
                                              [harmful[i] for i in idx], rng)
                for i, a in zip(idx, got, strict=True):
                    answers[i] = a
        return answers, arm_of

    def prewarm(self, prompts: list[str]) -> None:
        for r in self.arms.values():
            if hasattr(r, "prewarm"):
                r.prewarm(prompts)

    def respond(self, prompts, segments, harmful, rng):  # pragma: no cover - the engine calls respond_users
        raise TypeError("ArmRouter answers per user: call respond_users")


def parse_arms(specs: list[str]) -> tuple[dict[str, str], list[float]]:
    """['control=policy:default', 'treatment=policy:runs/cgpo:1'] → ({name: responder spec}, weights).
    A trailing ':W' (a number) is the arm's traffic weight."""
    arms, weights = {}, []
    for spec in specs:
        name, sep, rest = spec.partition("=")
        if not sep or not name or not rest:
            raise ValueError(f"--arm {spec!r}: expected NAME=RESPONDER(:WEIGHT), e.g. treatment=policy:runs/cgpo")
        w = 1.0
        head, _, tail = rest.rpartition(":")
        if head and tail.replace(".", "", 1).isdigit():
            rest, w = head, float(tail)
        if name in arms:
            raise ValueError(f"--arm {name!r} given twice")
        arms[name] = rest
        weights.append(w)
    if len(arms) < 2:
        raise ValueError("an A/B test needs at least two --arm values")
    return arms, weights


def run_ab_simulation(cfg: SimulateConfig, arms: dict[str, str], out_dir: Path, salt: str = "rluf-ab",
                      weights: list[float] | None = None) -> dict[str, Any]:
    """Simulate the A/B test; writes the usual interactions / reactions / oracle files."""
    from rluf.simulate.engine import run_simulation

    responders = {name: make_responder(spec, cfg.responder_samples, cfg.responder_max_new_tokens, cfg.seed)
                  for name, spec in arms.items()}
    out = run_simulation(cfg, Path(out_dir), responder=ArmRouter(responders, salt, weights))
    out["ab"] = {"salt": salt, "arms": arms, "weights": weights or [1.0] * len(arms)}
    return out
