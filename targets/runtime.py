"""Find a LiteRT interpreter and build interpreters with an explicit kernel choice."""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
from dataclasses import dataclass
from typing import Any

from pipeline.errors import TargetError

# (module holding Interpreter and OpResolverType, distribution name for the version)
_CANDIDATES = (
    ("ai_edge_litert.interpreter", "ai-edge-litert", "litert"),
    ("tflite_runtime.interpreter", "tflite-runtime", "tflite_runtime"),
    ("tensorflow.lite", "tensorflow", "tf.lite"),
)

KERNELS = ("xnnpack", "builtin", "reference")


@dataclass(frozen=True)
class Runtime:
    name: str
    version: str
    interpreter_class: Any
    resolver_types: Any

    def describe(self) -> str:
        return f"{self.name} {self.version}"


@functools.lru_cache(maxsize=1)
def load_runtime() -> Runtime:
    """The first LiteRT interpreter that imports, in order of preference."""
    tried = []
    for module_name, dist, label in _CANDIDATES:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            tried.append(f"{module_name} ({exc})")
            continue
        resolvers = getattr(module, "OpResolverType", None)
        if resolvers is None:
            resolvers = module.experimental.OpResolverType
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
        return Runtime(label, version, module.Interpreter, resolvers)
    raise TargetError(
        "no LiteRT interpreter could be imported; install one with `pip install ai-edge-litert` "
        f"(tried {'; '.join(tried)})."
    )


def make_interpreter(model: bytes, *, kernels: str = "xnnpack", threads: int | None = None):
    """Build an interpreter over ``model`` bytes.

    ``kernels``: ``xnnpack`` (optimized kernels with the XNNPACK delegate applied, asked for
    explicitly and checked afterwards by :func:`delegation`), ``builtin`` (optimized kernels, no
    delegate) or ``reference`` (the reference kernels, the ground truth for other runtimes).
    """
    runtime = load_runtime()
    resolver = {
        "xnnpack": runtime.resolver_types.BUILTIN,
        "builtin": runtime.resolver_types.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        "reference": runtime.resolver_types.BUILTIN_REF,
    }[kernels]
    try:
        return runtime.interpreter_class(
            model_content=bytes(model), num_threads=threads, experimental_op_resolver_type=resolver
        )
    except (ValueError, RuntimeError) as exc:
        raise TargetError(
            f"{runtime.describe()} cannot load this model ({str(exc).strip().splitlines()[0]}); "
            "check that the file is a .tflite flatbuffer written by the TFLite converter."
        ) from exc


def delegation(interpreter) -> dict:
    """Which ops a delegate took: counts, the ops left to the CPU kernels, and whether all went.

    ``_get_ops_details`` lists the original nodes followed by one ``DELEGATE`` node per delegated
    partition. An original node belongs to a partition when it lies on a path from the partition's
    inputs to its outputs.
    """
    ops = interpreter._get_ops_details()
    delegates = [op for op in ops if op["op_name"] == "DELEGATE"]
    original = [op for op in ops if op["op_name"] != "DELEGATE"]
    producer = {int(t): op for op in original for t in op["outputs"]}
    taken: set[int] = set()
    for node in delegates:
        boundary = {int(t) for t in node["inputs"]}
        pending = [int(t) for t in node["outputs"]]
        while pending:
            tensor = pending.pop()
            op = producer.get(tensor)
            if op is None or tensor in boundary or op["index"] in taken:
                continue
            taken.add(op["index"])
            pending.extend(int(t) for t in op["inputs"] if t >= 0)
    left = [op["op_name"] for op in original if op["index"] not in taken]
    return {
        "partitions": len(delegates),
        "delegated_ops": len(taken),
        "total_ops": len(original),
        "cpu_ops": left,
        "full_graph": bool(delegates) and not left,
    }
