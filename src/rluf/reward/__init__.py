"""Reward models: P[Love] (pointwise, calibrated) — train, calibrate, evaluate, score.

Importing this package is cheap; torch and transformers load when a model is built or loaded.
"""

from rluf.reward.model import RewardModel

__all__ = ["RewardModel"]
