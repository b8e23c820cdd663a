"""TensorFlow Lite Micro in-process: pre-flight op check, exact arena, evaluation.

The ``tflite-micro`` Python package runs the real TFLM interpreter (reference kernels) with its
RecordingMicroAllocator. TFLM reports through C-level stderr, so every call into it runs with
file descriptor 2 captured, and what it said becomes part of a proper error.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import re
import struct
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

import numpy as np

from edgecore.cstderr import CapturedStderr
from edgecore.errors import TargetError, first_line
from edgecore.flatbuffer import OpUse
from edgecore.model_info import ModelInfo, dequantize, quantize
from edgecore.progress import progress
from targets.profiles import shared
from targets.worker import breadcrumb, call_isolated

log = logging.getLogger(__name__)
# Big enough for any model that could fit an MCU; the verified figure is what counts.
PROBE_ARENA_BYTES = 16 * 1024 * 1024
# A worker process costs about half a second to start: shards smaller than this do not pay.
MIN_SHARD_SAMPLES = 64
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
        except (struct.error, TypeError, IndexError, AttributeError, UnicodeDecodeError) as exc:
            # Its Python side unpacks the whole flatbuffer first; read_graph checks the same, so this is a
            # second line for models that reach TFLM some other way.
            raise TargetError(f"TFLM could not read the model ({type(exc).__name__}: {exc}); the file is damaged: "
                              "convert the model again (e.g. with `edgepipe convert`) or copy it again.") from exc
        else:
            return interpreter
    detail = " ".join(line.strip() for line in said.text.splitlines() if line.strip())[:500]
    missing = re.findall(r"Didn't find op for builtin opcode '([A-Z0-9_]+)'", said.text)
    if missing:
        raise TargetError(f"TFLM has no kernel for {', '.join(dict.fromkeys(missing))}; replace those layers.") from error
    raise TargetError(f"TFLM could not set up the model: {error} ({detail or 'no detail'}).") from error


@dataclass(frozen=True)
class ArenaUse:
    """TFLM's arena: the smallest size verified to allocate and invoke, and what the recording
    allocator reported (which misses temporary allocations made while preparing)."""

    total: int  # verified: TFLM allocates and invokes at exactly this size, and fails one byte below
    recorded: int
    head: int
    tail: int
    attempts: int
    report: str


def _invoke(interpreter, info: ModelInfo, sample: np.ndarray | None) -> None:
    source = info.inputs[0]
    value = np.zeros(source.shape, dtype=np.dtype(source.dtype)) if sample is None else sample
    try:
        interpreter.set_input(value, 0)
        interpreter.invoke()
    except (RuntimeError, ValueError) as exc:
        raise TargetError(f"TFLM could not run the model ({first_line(exc)}); the model's input may not be what its "
                          "file says: convert the model again (e.g. with `edgepipe convert`).") from exc


def probe_arena_bytes(model: bytes, live_peak: int = 0) -> int:
    """An arena large enough for any model that could fit a microcontroller, and for this one."""
    return max(PROBE_ARENA_BYTES, 4 * live_peak + 2 * len(model))


def record_arena(model: bytes, info: ModelInfo, sample: np.ndarray | None, probe: int) -> tuple[int, int, int, str]:
    """(total, head, tail, report) from TFLM's RecordingMicroAllocator after one invoke."""
    interpreter = _interpreter(model, probe)
    with CapturedStderr() as said:
        _invoke(interpreter, info, sample)
        interpreter.print_allocations()
    match = _ARENA_TOTAL.search(said.text)
    if not match:
        raise TargetError(f"TFLM did not report its arena use (it said: {said.text.strip()[:300]!r}).")

    def figure(label: str) -> int:
        found = re.search(rf"Arena allocation {label} (\d+) bytes", said.text)
        return int(found.group(1)) if found else 0

    return int(match.group(1)), figure("head"), figure("tail"), said.text.strip()


def arena_works(model: bytes, info: ModelInfo, arena_bytes: int, sample: np.ndarray | None = None) -> bool:
    """Whether TFLM can allocate and invoke the model in an arena of exactly this size."""
    if arena_bytes <= 0:
        return False
    try:
        interpreter = _interpreter(model, arena_bytes)
        with CapturedStderr():
            _invoke(interpreter, info, sample)
        return True
    except (TargetError, RuntimeError):
        return False


def survives(attempt) -> bool:
    """``attempt()`` in a forked child of this (worker) process: True when it returned True.

    TFLM does not always fail gracefully in a too-small arena: on some models (seen with a Dense
    autoencoder) it dereferences a failed allocation and the process dies with SIGSEGV. A fork
    costs milliseconds here, so every probe of the search gets its own process and a crash
    counts as "does not work"."""
    if not hasattr(os, "fork"):
        return bool(attempt())
    pid = os.fork()
    if pid == 0:  # the child: never return into the caller's code
        try:
            ok = bool(attempt())
        except BaseException:
            ok = False
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def smallest_arena(works, recorded: int, limit: int) -> tuple[int, int]:
    """The smallest size for which ``works(size)`` holds, searched from the recorded figure:
    outward in doubling steps until the answer is bracketed, then by bisection to one byte.
    Returns (size, number of attempts)."""
    attempts = 0

    def attempt(size: int) -> bool:
        nonlocal attempts
        attempts += 1
        return works(size)

    step = 16
    if attempt(recorded):
        high, low = recorded, recorded - step
        while low > 0 and attempt(low):
            high, step = low, step * 2
            low = high - step
        low = max(low, 0)
    else:
        low, high = recorded, recorded + step
        while not attempt(high):
            if high >= limit:
                raise TargetError(f"TFLM cannot allocate this model even in {limit:,} bytes of arena.")
            low, step = high, step * 2
            high = min(low + step, limit)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if attempt(middle) else (middle, high)
    return high, attempts


def measure_arena(model: bytes, info: ModelInfo, sample: np.ndarray | None = None, live_peak: int = 0) -> ArenaUse:
    """The arena the model needs: recorded by TFLM, then verified by allocating and invoking at
    the figure and searched until it is the smallest size that works."""
    probe = probe_arena_bytes(model, live_peak)
    recorded, head, tail, report = record_arena(model, info, sample, probe)
    total, attempts = smallest_arena(lambda size: survives(lambda: arena_works(model, info, size, sample)),
                                     recorded, probe)
    return ArenaUse(total=total, recorded=recorded, head=head, tail=tail, attempts=attempts, report=report)


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
        except (RuntimeError, ValueError) as exc:
            failure = exc
        else:
            failure = None
    if failure is not None:
        raise TargetError(f"TFLM failed to invoke the model: {failure} ({said.text.strip()[:300]}).") from failure
    return raw, dequantize(raw, target)


def _measure_then_evaluate(model: bytes, info: ModelInfo, x: np.ndarray | None, sample, live_peak: int):
    """Worker body for the first shard: the verified arena, then the shard evaluated at exactly it."""
    breadcrumb("measuring the arena in TensorFlow Lite Micro")
    arena = measure_arena(model, info, sample, live_peak)
    breadcrumb(f"running TensorFlow Lite Micro on {0 if x is None else len(x)} samples")
    outputs = evaluate(model, info, x, arena.total) if x is not None and len(x) else None
    return arena, outputs


def _evaluate_shard(model: bytes, info: ModelInfo, x: np.ndarray, arena_bytes: int):
    """Worker body for the other shards (arena size does not change TFLM's numbers)."""
    breadcrumb(f"running TensorFlow Lite Micro on {len(x)} samples")
    return evaluate(model, info, x, arena_bytes)


def default_workers() -> int:
    """Worker processes for TFLM evaluation: the CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def run_isolated(model: bytes, info: ModelInfo, x: np.ndarray | None, *, live_peak: int = 0,
                 workers: int | None = None) -> tuple[ArenaUse, tuple[np.ndarray, np.ndarray] | None]:
    """The verified arena and, for ``x``, TFLM's raw and dequantized outputs, in worker processes
    (see :mod:`targets.worker`): the eval set is split into shards run in parallel, the first of
    which also measures the arena; outputs are in the order of ``x``, whatever the split."""
    what = f"TensorFlow Lite Micro {tflm_version()} crashed while loading or running this model"
    hint = "check the model on the host target first"
    source = info.inputs[0]
    sample = quantize(x[:1], source) if x is not None and len(x) else None
    count = 0 if x is None else len(x)
    shards = max(1, min(workers or default_workers(), count // MIN_SHARD_SAMPLES))
    bounds = np.linspace(0, count, shards + 1).astype(int)
    parts = [x[a:b] for a, b in zip(bounds[:-1], bounds[1:])] if count else [None]
    probe = probe_arena_bytes(model, live_peak)
    with ThreadPoolExecutor(max_workers=len(parts)) as pool, \
            progress(count, f"TFLM: evaluating in {len(parts)} worker(s)", log) as advance:
        first = pool.submit(call_isolated, _measure_then_evaluate, model, info, parts[0], sample, live_peak,
                            what=what, crash_hint=hint, retries=1)
        rest = [pool.submit(call_isolated, _evaluate_shard, model, info, part, probe, what=what, crash_hint=hint,
                            retries=1)
                for part in parts[1:]]
        sizes = {future: len(part) if part is not None else 0 for future, part in zip([first, *rest], parts)}
        for future in as_completed(sizes):
            future.result()
            advance(sizes[future])
        arena, head = first.result()
        outputs = [head, *(future.result() for future in rest)]
    if not count:
        return arena, None
    return arena, (np.concatenate([raw for raw, _ in outputs]), np.concatenate([deq for _, deq in outputs]))
