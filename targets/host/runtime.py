"""Find a LiteRT interpreter and build interpreters with an explicit kernel choice.

The loops and the import fallback live in :mod:`targets.host.device_runner` (which must stay
self-contained for devices); this module adds edgepipe's errors around them.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from typing import Any

from edgecore.cstderr import CapturedStderr
from edgecore.errors import TargetError, first_line
from edgecore.vocab import Kernels

from . import device_runner
from .device_runner import delegation

log = logging.getLogger(__name__)
__all__ = ["Runtime", "delegation", "load_runtime", "make_interpreter"]


@dataclass(frozen=True)
class Runtime:
    """The LiteRT interpreter module in use, with its name and version."""

    name: str
    version: str
    module: Any

    def describe(self) -> str:
        return f"{self.name} {self.version}"


@functools.lru_cache(maxsize=1)
def load_runtime() -> Runtime:
    """The first LiteRT interpreter that imports, in order of preference."""
    try:
        label, version, module = device_runner.load_interpreter_module()
    except ImportError as exc:
        raise TargetError(
            f"no LiteRT interpreter could be imported; install one with `pip install ai-edge-litert` (tried {exc})."
        ) from exc
    return Runtime(label, version, module)


def make_interpreter(model: bytes, *, kernels: Kernels = Kernels.XNNPACK, threads: int | None = None):
    """An interpreter over ``model`` bytes, tensors allocated: ``xnnpack`` (XNNPACK delegate
    requested explicitly and checked afterwards by :func:`delegation`), ``builtin`` (no delegate)
    or ``reference``."""
    runtime = load_runtime()
    # LiteRT announces the XNNPACK delegate on stderr when tensors are first allocated, which is
    # when the delegate is applied: allocate here, inside the capture, so it goes to the debug log.
    said = CapturedStderr()
    try:
        with said:
            interpreter = device_runner.make_interpreter(runtime.module, model, str(Kernels(kernels)), threads)
            interpreter.allocate_tensors()
            return interpreter
    except (ValueError, RuntimeError) as exc:
        custom = re.search(r"unresolved custom op: ([^\s.]+)", str(exc))
        if custom:
            raise TargetError(f"{runtime.describe()} has no kernel for the custom op {custom.group(1)} this model "
                              "uses (a model compiled for an NPU, or made with a custom kernel); run it where that "
                              "op is, or convert the float model without it.") from exc
        raise TargetError(
            f"{runtime.describe()} cannot load this model ({first_line(exc)}); "
            "check that the file is a .tflite flatbuffer written by the TFLite converter."
        ) from exc
    finally:
        if said.text.strip():
            log.debug("LiteRT: %s", said.text.strip())
