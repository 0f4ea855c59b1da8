"""A/B arms of the service: `--arm NAME=MODEL_DIR[:WEIGHT]`, and a sticky assignment of users to arms.

The arm's name is what each turn records in `responses.policy`, so `rluf abtest analyze --arms a,b` reads
live traffic exactly like a simulated test. The assignment uses the same rule as the simulator
(`rluf.simulate.ab.assign_arm`): sha256(salt:user_id) → a number in [0, 1) → the arm whose cumulative weight
covers it. Kept dependency-free here so that the service does not import the simulator.
"""

from __future__ import annotations

import hashlib
import re
from bisect import bisect_right
from dataclasses import dataclass
from itertools import accumulate

DEFAULT_ARM = "default"
# MODEL_DIR values that mean "the default policy" (SmolLM2, converted once into the local cache).
DEFAULT_MODEL_NAMES = ("default", "policy:default")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class Arm:
    name: str
    model: str | None  # a model folder, or None for the default policy
    weight: float = 1.0

    @property
    def model_label(self) -> str:
        return self.model or "default"


def parse_arm(spec: str) -> Arm:
    """'treatment=runs/cgpo:2' → Arm('treatment', 'runs/cgpo', 2.0). A trailing ':W' is a positive number."""
    name, sep, rest = spec.partition("=")
    name = name.strip()
    if not sep or not rest.strip():
        raise ValueError(f"--arm {spec!r}: expected NAME=MODEL_DIR(:WEIGHT), e.g. treatment=runs/cgpo:1")
    if not _NAME.fullmatch(name):
        raise ValueError(f"--arm {spec!r}: the name must be 1-64 letters, digits, '.', '_' or '-'")
    weight = 1.0
    head, colon, tail = rest.rpartition(":")
    # Only a number after the last colon is a weight: 'policy:default' and 'C:/models/x' stay model paths.
    if colon and head and re.fullmatch(r"\d+(\.\d*)?|\.\d+", tail.strip()):
        rest, weight = head, float(tail)
    if weight <= 0:
        raise ValueError(f"--arm {spec!r}: the weight must be positive")
    model = rest.strip()
    return Arm(name, None if model in DEFAULT_MODEL_NAMES else model, weight)


def parse_arms(specs: list[str] | None) -> list[Arm]:
    """Every --arm value; none at all means one arm, 'default', serving the default policy."""
    if not specs:
        return [Arm(DEFAULT_ARM, None, 1.0)]
    arms = [parse_arm(s) for s in specs]
    seen: set[str] = set()
    for a in arms:
        if a.name in seen:
            raise ValueError(f"--arm {a.name!r} given twice")
        seen.add(a.name)
    return arms


def check_arms(arms: list[Arm]) -> None:
    """Fail at start-up, not at the first request, when an arm's model folder is missing."""
    from pathlib import Path

    for a in arms:
        if a.model is None or a.model == "smollm2":
            continue
        p = Path(a.model)
        if not p.is_dir() or not ((p / "config.json").exists() or (p / "adapter_config.json").exists()):
            raise FileNotFoundError(f"--arm {a.name}: {a.model} is not a model folder (config.json or "
                                    "adapter_config.json expected)")


def assign_arm(user_id: str, arms: list[Arm], salt: str) -> Arm:
    """The user's arm: the same user always gets the same arm for a given salt and arm list."""
    if len(arms) == 1:
        return arms[0]
    u = int.from_bytes(hashlib.sha256(f"{salt}:{user_id}".encode()).digest()[:8], "big") / 2**64
    total = sum(a.weight for a in arms)
    edges = [c / total for c in accumulate(a.weight for a in arms)]
    return arms[min(bisect_right(edges, u), len(arms) - 1)]
