"""TensorFlow Lite Micro in-process: pre-flight op check, exact arena, evaluation.

The ``tflite-micro`` Python package runs the real TFLM interpreter (reference kernels) with its
RecordingMicroAllocator. TFLM reports through C-level stderr, so every call into it runs with
file descriptor 2 captured, and what it said becomes part of a proper error.
"""

from __future__ import annotations

import importlib.metadata
import re
from dataclasses import dataclass

import numpy as np

from edgecore.cstderr import CapturedStderr
from edgecore.errors import TargetError
from edgecore.flatbuffer import OpUse
from edgecore.model_info import ModelInfo, dequantize, quantize

from .mcu_profiles import shared
from .worker import call_isolated

# Big enough for any model that could fit an MCU; the recorded figure is what counts.
PROBE_ARENA_BYTES = 16 * 1024 * 1024
_ARENA_TOTAL = re.compile(r"Arena allocation total (\d+) bytes")


def tflm_version() -> str:
    """The installed tflite-micro version."""
    try:
        return importlib.metadata.version("tflite-micro")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _runtime():
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError as exc:
        raise TargetError(
            f"TensorFlow Lite Micro is not installed ({exc}); run `pip install tflite-micro`."
        ) from exc
    return runtime


def supported_ops() -> tuple[set[str], set[str]]:
    """Builtin and custom op names the installed TFLM build has kernels for."""
    data = shared("tflm_ops")
    return set(data["builtin"]), set(data["custom"])


def unsupported_ops(ops: list[OpUse]) -> list[dict]:
    """Ops TFLM has no kernel for, with the layers that use them (pre-flight, no interpreter)."""
    builtin, custom = supported_ops()
    problems: dict[str, dict] = {}
    for op in ops:
        known = op.name.removeprefix("CUSTOM:") in custom if op.is_custom else op.name in builtin
        if not known:
            entry = problems.setdefault(op.name, {"op": op.name, "version": op.version, "layers": []})
            entry["layers"].append(op.layer)
    return list(problems.values())


def describe_unsupported(problems: list[dict]) -> str:
    """Unsupported ops with the layers that use them, as one phrase."""
    return "; ".join(f"{p['op']} (layer {', '.join(dict.fromkeys(p['layers']))})" for p in problems)


def _interpreter(model: bytes, arena_bytes: int):
    runtime = _runtime()
    with CapturedStderr() as said:
        try:
            interpreter = runtime.Interpreter.from_bytes(bytes(model), arena_size=int(arena_bytes))
        except (RuntimeError, ValueError) as exc:
            error = exc
        else:
            return interpreter
    detail = " ".join(line.strip() for line in said.text.splitlines() if line.strip())[:500]
    missing = re.findall(r"Didn't find op for builtin opcode '([A-Z0-9_]+)'", said.text)
    if missing:
        raise TargetError(f"TFLM has no kernel for {', '.join(dict.fromkeys(missing))}; replace those layers.") from error
    raise TargetError(f"TFLM could not set up the model: {error} ({detail or 'no detail'}).") from error


@dataclass(frozen=True)
class ArenaUse:
    """TFLM's arena use as its recording allocator reports it."""

    total: int
    head: int
    tail: int
    report: str


def _invoke_on_zeros(interpreter, info: ModelInfo) -> None:
    source = info.inputs[0]
    interpreter.set_input(np.zeros(source.shape, dtype=np.dtype(source.dtype)), 0)
    interpreter.invoke()


def measure_arena(model: bytes, info: ModelInfo) -> ArenaUse:
    """The arena TFLM actually uses, from its RecordingMicroAllocator, after one invoke."""
    interpreter = _interpreter(model, PROBE_ARENA_BYTES)
    with CapturedStderr() as said:
        _invoke_on_zeros(interpreter, info)
        interpreter.print_allocations()
    match = _ARENA_TOTAL.search(said.text)
    if not match:
        raise TargetError(f"TFLM did not report its arena use (it said: {said.text.strip()[:300]!r}).")

    def figure(label: str) -> int:
        found = re.search(rf"Arena allocation {label} (\d+) bytes", said.text)
        return int(found.group(1)) if found else 0

    return ArenaUse(total=int(match.group(1)), head=figure("head"), tail=figure("tail"), report=said.text.strip())


def arena_works(model: bytes, info: ModelInfo, arena_bytes: int) -> bool:
    """Whether TFLM can allocate and invoke the model in an arena of exactly this size."""
    try:
        interpreter = _interpreter(model, arena_bytes)
        with CapturedStderr():
            _invoke_on_zeros(interpreter, info)
        return True
    except (TargetError, RuntimeError):
        return False


def evaluate(model: bytes, info: ModelInfo, x: np.ndarray, arena_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw and dequantized first outputs for every row of ``x``, one invoke per sample."""
    interpreter = _interpreter(model, arena_bytes)
    source, target = info.inputs[0], info.outputs[0]
    q = quantize(x, source)
    raw = np.empty((len(q), *target.shape[1:]), dtype=np.dtype(target.dtype))
    with CapturedStderr() as said:
        try:
            for row in range(len(q)):
                interpreter.set_input(q[row:row + 1], 0)
                interpreter.invoke()
                raw[row] = interpreter.get_output(0)[0]
        except RuntimeError as exc:
            failure = exc
        else:
            failure = None
    if failure is not None:
        raise TargetError(f"TFLM failed to invoke the model: {failure} ({said.text.strip()[:300]}).") from failure
    return raw, dequantize(raw, target)


def cmsis_scratch_bytes(ops: list[OpUse]) -> int:
    """The largest scratch buffer CMSIS-NN's int8 kernels request for any op of the model."""
    largest = 0
    for op in ops:
        if len(op.inputs) < 2 or len(op.inputs[1].shape) != 4:
            continue
        _, kh, kw, channels = op.inputs[1].shape
        if op.name == "CONV_2D" and (kh, kw) != (1, 1):
            largest = max(largest, 2 * op.inputs[0].shape[-1] * kh * kw * 2)
        elif op.name == "DEPTHWISE_CONV_2D":
            largest = max(largest, channels * kh * kw * 2)
    return largest


def _measure_and_evaluate(model: bytes, info: ModelInfo, x: np.ndarray | None):
    """Worker-process body: arena first (on zeros), then the evaluation set if any."""
    arena = measure_arena(model, info)
    outputs = evaluate(model, info, x, arena.total) if x is not None and len(x) else None
    return arena, outputs


def run_isolated(model: bytes, info: ModelInfo, x: np.ndarray | None):
    """Measure the arena and evaluate, in a separate process (see :mod:`targets.worker`)."""
    return call_isolated(_measure_and_evaluate, model, info, x,
                         what=f"TensorFlow Lite Micro {tflm_version()} crashed while loading or running this model",
                         crash_hint="check the model on the host target first")
