"""Settings of `rluf serve`: request limits, rate limits, generation defaults and batching."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServeConfig:
    salt: str = "rluf-ab"
    """Assignment salt: a new salt reshuffles users across arms; the same salt never moves a user."""
    max_messages: int = 64
    """Most messages in one chat request (the history included)."""
    max_message_chars: int = 8_000
    """Longest single message."""
    max_total_chars: int = 32_000
    """Longest history (all messages together)."""
    max_body_bytes: int = 256 * 1024
    """Largest request body; bigger ones are refused with 413 before they are read."""
    max_new_tokens: int = 256
    """Cap on `max_tokens`; also the default when a request does not say."""
    default_max_tokens: int = 128
    temperature: float = 0.7
    top_p: float = 0.95
    rate_per_minute: float = 60.0
    """Sustained requests per minute per user (chat and reactions together); 0 turns the limit off."""
    rate_burst: int = 20
    """Requests a user may send at once before the sustained rate applies."""
    batch_size: int = 8
    """Most requests answered by one batched generate call."""
    batch_wait_ms: float = 2.0
    """How long the generation thread waits for company before it starts a batch."""
    threads: int | None = None
    """Torch threads of the generation thread (default: $RLUF_THREADS or every core). 1 is much faster for
    small models on a busy machine, where threads spinning at each op's barrier wait for each other."""
    request_timeout_s: float = 300.0
    """A chat request waiting longer than this for its answer gets 503."""
