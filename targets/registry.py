"""Where targets are registered: built-ins in code, plugins through entry points.

Built-in targets register here, in code. Third-party targets register through the
``edgepipe.targets`` entry point group, naming either a :class:`Target` subclass (made with no
arguments) or a callable returning an iterable of :class:`Target` instances (one per board, say);
a plugin that fails to load is reported as a warning naming it, never a crash. Tests register
fakes with :func:`register_target`.
"""

from __future__ import annotations

import importlib.metadata
import logging

from edgecore.errors import UsageError
from edgecore.vocab import Capability

from .base import RunOptions, Target

GROUP = "edgepipe.targets"
log = logging.getLogger(__name__)
_registry: dict[str, Target] = {}
_loaded = False


def _builtins() -> list[Target]:
    from targets.arm.target import arm_targets
    from targets.host.target import HostTarget
    from targets.mcu.target import mcu_targets
    from targets.npu.target import npu_targets

    return [HostTarget(), *arm_targets(), *mcu_targets(), *npu_targets()]


def _plugins() -> list[Target]:
    found: list[Target] = []
    for entry in sorted(importlib.metadata.entry_points(group=GROUP), key=lambda e: e.name):
        try:
            loaded = entry.load()
            made = [loaded()] if isinstance(loaded, type) else list(loaded())
            bad = [t for t in made if not isinstance(t, Target) or not t.name]
            if bad:
                raise TypeError(f"it gave {bad[0]!r}, not a named Target")
        except Exception as exc:  # a broken plugin must not take edgepipe down with it
            log.warning("target plugin %r (%s) could not be loaded and is skipped: %s", entry.name, entry.value, exc)
            continue
        found.extend(made)
    return found


def _ensure_loaded() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for target in _builtins():
        _registry.setdefault(target.name, target)
    for target in _plugins():
        if target.name in _registry:
            log.warning("target plugin %r is skipped: a target of that name is already registered", target.name)
            continue
        _registry[target.name] = target


def register_target(target: Target, *, replace: bool = False) -> Target:
    """Add ``target`` to the registry (``replace`` an existing one of the same name on request)."""
    _ensure_loaded()
    if not isinstance(target, Target) or not target.name:
        raise TypeError(f"{target!r} is not a named Target")
    if target.name in _registry and not replace:
        raise UsageError(f"a target named {target.name!r} is already registered.")
    _registry[target.name] = target
    return target


def unregister_target(name: str) -> None:
    """Remove a target (tests use this to clean up a fake)."""
    _ensure_loaded()
    _registry.pop(name, None)


def available_targets() -> dict[str, Target]:
    """Every registered target by name, in registration order (the host first)."""
    _ensure_loaded()
    return dict(_registry)


def get_target(name: str) -> Target:
    """The target called ``name``; a UsageError listing the choices if there is none."""
    targets = available_targets()
    if name not in targets:
        raise UsageError(f"unknown target {name!r}; choose one of: {', '.join(targets)} (see `edgepipe targets`).")
    return targets[name]


def targets_with(capability: Capability) -> list[str]:
    """Names of the targets that have ``capability``."""
    return [name for name, target in available_targets().items() if capability in target.capabilities]


def require(target: Target, capability: Capability, asked_by: str) -> None:
    """A UsageError naming the targets that can, when ``target`` lacks ``capability``."""
    if capability not in target.capabilities:
        able = targets_with(capability)
        raise UsageError(f"target {target.name} does not support {asked_by}; targets that do: "
                         f"{', '.join(able) or 'none'}.")


def check_options(target: Target, options: RunOptions) -> None:
    """Refuse options the target cannot honour, instead of quietly ignoring them."""
    for capability, option in options.needs.items():
        require(target, capability, option)


def int16_refusal(names, op: str) -> str | None:
    """Why one of the targets ``names`` cannot compute ``op`` in int16 (its runtime has no such kernel)."""
    from .kernels import int16_refusal as refusal

    runtimes = [get_target(name).kernel_runtime for name in names]
    return refusal(list(dict.fromkeys(r for r in runtimes if r)), op)
