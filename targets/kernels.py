"""Which kernels each runtime registers, by op and activation type, from ``kernels.toml`` (a table
kept as data, each entry citing the source file it was read from, checked against the installed
runtimes by tests/target/test_kernels.py).

A target names its runtime (:attr:`targets.base.Target.kernel_runtime`); before a candidate runs
there, every op's activation type is looked up, so "TFLM has no int16 GATHER" is said before the
interpreter is built, with the op and its layers, and the ladder and compare skip the candidate.
"""

from __future__ import annotations

import functools
import tomllib
from pathlib import Path

from edgecore.flatbuffer import OpUse, read_ops

TABLE = Path(__file__).with_name("kernels.toml")
_LABEL = {"tflm": "TensorFlow Lite Micro", "litert": "LiteRT", "xnnpack": "XNNPACK"}


@functools.lru_cache(maxsize=1)
def table() -> dict:
    with TABLE.open("rb") as handle:
        return tomllib.load(handle)


def activation_type(op: OpUse) -> str | None:
    """The type an op's kernel computes in: its output's (GATHER of an int16 table with int32 indices
    is an int16 kernel); QUANTIZE and DEQUANTIZE: ``in->out``."""
    if not op.outputs:
        return None
    if op.name in ("QUANTIZE", "DEQUANTIZE") and op.inputs:
        return f"{op.inputs[0].dtype}->{op.outputs[0].dtype}"
    return op.outputs[0].dtype


def supports(runtime: str, op: str, dtype: str) -> bool | None:
    """Whether ``runtime`` has a kernel for ``op`` computing in ``dtype`` (None: the table does not say,
    or the runtime registers no kernel for the op at all, which the runtime's op check reports)."""
    entry = table().get(runtime, {}).get("ops", {}).get(op)
    if entry is None or not entry["types"]:
        return None
    return dtype in entry["types"]


def source_of(runtime: str, op: str) -> str:
    entry = table().get(runtime, {}).get("ops", {}).get(op, {})
    return entry.get("source", "")


def type_problems(model: bytes | list[OpUse], runtime: str) -> list[dict]:
    """Ops whose activation type ``runtime`` has no kernel for: ``{op, type, layers, source}``."""
    ops = read_ops(bytes(model)) if isinstance(model, (bytes, bytearray)) else model
    found: dict[tuple[str, str], dict] = {}
    for op in ops:
        if op.is_custom:
            continue
        dtype = activation_type(op)
        if dtype is None or supports(runtime, op.name, dtype) is not False:
            continue
        entry = found.setdefault((op.name, dtype), {"op": op.name, "type": dtype, "layers": [],
                                                    "source": source_of(runtime, op.name)})
        if op.layer not in entry["layers"]:
            entry["layers"].append(op.layer)
    return list(found.values())


def describe(problems: list[dict], runtime: str) -> str:
    """One phrase: ``TensorFlow Lite Micro has no int16 kernel for GATHER (layer tokens; gather.cc)``."""
    parts = [f"{p['op']} (layer {', '.join(p['layers'][:3])}; {p['source']})" for p in problems]
    kinds = sorted({p["type"] for p in problems})
    return f"{_LABEL.get(runtime, runtime)} has no {'/'.join(kinds)} kernel for {', '.join(parts)}"


def int16_refusal(runtimes: list[str], op: str) -> str | None:
    """Why an op cannot compute in int16 on one of ``runtimes`` (None when every one has the kernel)."""
    for runtime in runtimes:
        if supports(runtime, op, "int16") is False:
            return f"{_LABEL.get(runtime, runtime)} has no int16 kernel for {op} ({source_of(runtime, op)})"
    return None
