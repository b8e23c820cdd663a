"""Targets are found through the ``edgepipe.targets`` entry point group, built-ins included.

An entry point names either a :class:`Target` subclass (instantiated with no arguments) or a
callable returning an iterable of :class:`Target` instances (one per board profile, say).
"""

from __future__ import annotations

import functools
import importlib.metadata

from pipeline.errors import UsageError

from .base import Target

GROUP = "edgepipe.targets"


@functools.lru_cache(maxsize=1)
def available_targets() -> dict[str, Target]:
    """Every registered target by name, in registration order."""
    found: dict[str, Target] = {}
    # The host first (it is the default), then the rest in a stable order.
    entries = sorted(importlib.metadata.entry_points(group=GROUP), key=lambda e: (e.name != "host", e.name))
    for entry in entries:
        loaded = entry.load()
        made = [loaded()] if isinstance(loaded, type) else list(loaded())
        for target in made:
            found.setdefault(target.name, target)
    if not found:
        raise UsageError(
            "no targets are registered; install edgepipe (`pip install -e .` in its checkout) "
            "so that its entry points exist."
        )
    return found


def get_target(name: str) -> Target:
    targets = available_targets()
    if name not in targets:
        raise UsageError(f"unknown target {name!r}; choose one of: {', '.join(targets)} (see `edgepipe targets`).")
    return targets[name]
