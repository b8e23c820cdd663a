"""Progress of long loops on stderr: a live bar on a terminal, plain lines otherwise, nothing
with ``-q``.

    with progress(len(x), "host: evaluating", log) as advance:
        for batch in ...:
            ...
            advance(len(batch))

On a terminal the bar is drawn with rich and removed when done; elsewhere (CI logs, pipes) one
line goes to the logger every 10 % of the way and at most every few seconds. Nothing is shown
when ``logger`` is quieter than INFO (``-q``), and stdout is never touched (``--json`` stays clean).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from typing import Callable, Iterator

PLAIN_INTERVAL_S = 5.0


@contextlib.contextmanager
def progress(total: int, description: str, logger: logging.Logger) -> Iterator[Callable[[int], None]]:
    """A context whose value, ``advance(n=1)``, reports ``n`` more of ``total`` done."""
    if total <= 0 or not logger.isEnabledFor(logging.INFO):
        yield lambda n=1: None
        return
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TimeRemainingColumn,
        )

        with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n=1: bar.advance(task, n)
        return
    state = {"done": 0, "shown": 0.0, "at": time.monotonic()}

    def advance(n: int = 1) -> None:
        state["done"] += n
        share = state["done"] / total
        now = time.monotonic()
        if share >= 1.0 or (share - state["shown"] >= 0.1 and now - state["at"] >= PLAIN_INTERVAL_S / 5) \
                or now - state["at"] >= PLAIN_INTERVAL_S:
            logger.info("%s: %d/%d (%.0f%%)", description, state["done"], total, 100 * share)
            state["shown"], state["at"] = share, now

    yield advance
