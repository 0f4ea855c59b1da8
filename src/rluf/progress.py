"""Progress bars and console output shared by every command.

Progress and human messages go to stderr, so that `--json` leaves exactly one JSON object on stdout.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")

stderr = Console(stderr=True)


def make_progress(transient: bool = True) -> Progress:
    """A rich Progress on stderr; nothing is drawn when stderr is not a terminal."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr,
        transient=transient,
    )


def track(iterable: Iterable[T], description: str, total: int | None = None, every_s: float = 30.0
          ) -> Iterator[T]:
    """Iterate with a progress bar on stderr (like `rich.progress.track`, but always on stderr)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    if not (stderr.is_terminal or stderr.is_jupyter):
        # rich draws nothing without a terminal (CI logs, nohup, a demo piped to a file): a plain line every
        # `every_s` seconds instead, so that a long stage in a log still shows that it moves and how fast.
        start = last = time.monotonic()
        done = 0
        for item in iterable:
            yield item
            done += 1
            if (now := time.monotonic()) - last >= every_s:
                last = now
                stderr.print(f"{description}: {done}/{total if total is not None else '?'} after {now - start:.0f} s",
                             markup=False, highlight=False)
        return
    with make_progress() as progress:
        task = progress.add_task(description, total=total)
        for item in iterable:
            yield item
            progress.advance(task)
