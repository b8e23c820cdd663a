"""Read ops, versions, shapes and constant data straight from a ``.tflite`` flatbuffer.

One place computes per-op work (MACs, elements, bytes): the MCU cost model, the op-energy model
and ``model.macs`` in reports all read it from here.
"""

from __future__ import annotations

import functools
import importlib
import re
from dataclasses import dataclass

import numpy as np

from pipeline.errors import TargetError

_SCHEMAS = ("ai_edge_litert.schema_py_generated",
            "tflite_micro.tensorflow.lite.micro.python.schema_py_generated",
            "tensorflow.lite.python.schema_py_generated")

# TensorType enum value -> bytes per element (TFLite schema order).
_TYPE_BYTES = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 5: 8, 6: 1, 7: 2, 8: 8, 9: 1, 10: 8, 11: 16, 12: 8,
               13: 4, 14: 2, 15: 4, 16: 4, 17: 1}
_TYPE_NAMES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 6: "bool", 7: "int16",
               9: "int8", 10: "float64", 17: "int4"}


@functools.lru_cache(maxsize=1)
def _schema():
    for name in _SCHEMAS:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise TargetError("no TFLite flatbuffer schema module found; install ai-edge-litert.")


@functools.lru_cache(maxsize=1)
def _builtin_names() -> dict[int, str]:
    enum = _schema().BuiltinOperator
    return {value: name for name, value in vars(enum).items() if not name.startswith("_")}


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: str
    itemsize: int
    constant: bool

    @property
    def elements(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    @property
    def bytes(self) -> int:
        return self.elements * self.itemsize


@dataclass(frozen=True)
class OpUse:
    """One operator node: op name (builtin, or ``CUSTOM:name``), version, its tensors."""

    name: str
    version: int
    subgraph: int
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]

    @property
    def is_custom(self) -> bool:
        return self.name.startswith("CUSTOM:")

    @property
    def output(self) -> str:
        return self.outputs[0].name if self.outputs else "?"

    @property
    def layer(self) -> str:
        """A readable layer name from the output tensor name (Keras scopes, converter suffixes off)."""
        first = self.output.split(";")[0]
        parts = [p for p in first.split("/") if p]
        name = parts[-2] if len(parts) >= 2 else first
        return re.sub(r"_\d+$", "", name)

    @property
    def weights(self) -> tuple[Tensor, ...]:
        return tuple(t for t in self.inputs if t.constant)

    @property
    def activations(self) -> tuple[Tensor, ...]:
        return tuple(t for t in self.inputs if not t.constant)

    @property
    def macs(self) -> int:
        """Multiply-accumulates of this op (0 for ops without a weight product)."""
        if not self.outputs or len(self.inputs) < 2:
            return 0
        out, weight = self.outputs[0], self.inputs[1].shape
        if self.name in ("CONV_2D", "TRANSPOSE_CONV") and len(weight) == 4:
            return out.elements * weight[1] * weight[2] * weight[3]
        if self.name == "DEPTHWISE_CONV_2D" and len(weight) == 4:
            return out.elements * weight[1] * weight[2]
        if self.name == "FULLY_CONNECTED" and len(weight) == 2:
            return out.elements * weight[1]
        if self.name == "BATCH_MATMUL" and len(weight) >= 2:
            return out.elements * weight[-2]
        return 0

    @property
    def bytes_moved(self) -> int:
        """Activations read and written plus weights read, once each."""
        return sum(t.bytes for t in self.inputs) + sum(t.bytes for t in self.outputs)


def read_ops(model: bytes) -> list[OpUse]:
    """Every operator of every subgraph, in execution order."""
    schema = _schema()
    try:
        root = schema.Model.GetRootAs(model, 0)
        codes = []
        for i in range(root.OperatorCodesLength()):
            code = root.OperatorCodes(i)
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            name = _builtin_names().get(builtin, f"BUILTIN_{builtin}")
            if name == "CUSTOM":
                name = f"CUSTOM:{(code.CustomCode() or b'?').decode()}"
            codes.append((name, code.Version()))
        uses = []
        for s in range(root.SubgraphsLength()):
            graph = root.Subgraphs(s)
            tensors = [_tensor(root, graph.Tensors(t)) for t in range(graph.TensorsLength())]
            for o in range(graph.OperatorsLength()):
                op = graph.Operators(o)
                name, version = codes[op.OpcodeIndex()]
                ins = tuple(tensors[i] for i in op.InputsAsNumpy() if i >= 0) if op.InputsLength() else ()
                outs = tuple(tensors[i] for i in op.OutputsAsNumpy() if i >= 0) if op.OutputsLength() else ()
                uses.append(OpUse(name=name, version=version, subgraph=s, inputs=ins, outputs=outs))
        return uses
    except (IndexError, ValueError, AttributeError, UnicodeDecodeError, TypeError) as exc:
        raise TargetError(
            f"the model is not a readable .tflite flatbuffer ({exc}); re-export it with the TFLite converter."
        ) from exc


def _tensor(root, tensor) -> Tensor:
    shape = tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
    shape = tuple(1 if d < 0 else d for d in shape)
    buffer = root.Buffers(tensor.Buffer()) if tensor.Buffer() < root.BuffersLength() else None
    constant = buffer is not None and (buffer.DataLength() > 0 or buffer.Size() > 0)
    kind = tensor.Type()
    return Tensor(name=tensor.Name().decode(), shape=shape, dtype=_TYPE_NAMES.get(kind, f"type{kind}"),
                  itemsize=_TYPE_BYTES.get(kind, 1), constant=constant)


def op_versions(model: bytes) -> dict[str, int]:
    """Highest version used per op name."""
    versions: dict[str, int] = {}
    for use in read_ops(model):
        versions[use.name] = max(versions.get(use.name, 0), use.version)
    return versions
