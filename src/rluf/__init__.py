"""rluf — Reinforcement Learning from User Feedback."""

__version__ = "0.1.0"

DEFAULT_DB_URL = "sqlite:///rluf.db"
