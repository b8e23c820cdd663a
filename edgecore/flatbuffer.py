"""Read a ``.tflite`` flatbuffer directly: tensors with quantization, ops, versions, work per op.

One place computes per-op work (MACs, elements, bytes): the MCU cost model, the op-energy model
and ``model.macs`` in reports all read it from here. Only numpy and the flatbuffer schema module
that ships with LiteRT (or TFLM, or TensorFlow) are needed.
"""

from __future__ import annotations

import functools
import importlib
import re
from dataclasses import dataclass, field

import numpy as np

from .errors import TargetError

_SCHEMAS = ("ai_edge_litert.schema_py_generated",
            "tflite_micro.tensorflow.lite.micro.python.schema_py_generated",
            "tensorflow.lite.python.schema_py_generated")
IDENTIFIER = b"TFL3"

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
    """One tensor of a subgraph: shape (batch 1 where dynamic), type, quantization, storage."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    itemsize: int
    constant: bool
    index: int = -1
    dynamic_batch: bool = False
    scales: tuple[float, ...] = ()
    zero_points: tuple[int, ...] = ()
    quantized_dimension: int = 0
    buffer: int = 0
    offset_buffer: bool = False  # data stored after the flatbuffer (Buffer.offset/size)

    @property
    def elements(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    @property
    def bytes(self) -> int:
        return self.elements * self.itemsize

    @property
    def scale(self) -> float:
        """The first (per-tensor) scale; 0.0 for a tensor without quantization."""
        return self.scales[0] if self.scales else 0.0

    @property
    def zero_point(self) -> int:
        return self.zero_points[0] if self.zero_points else 0


@dataclass(frozen=True)
class OpUse:
    """One operator node: op name (builtin, or ``CUSTOM:name``), version, its tensors."""

    name: str
    version: int
    subgraph: int
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    options: dict = field(default_factory=dict, compare=False)  # the few builtin options checks need

    @property
    def is_custom(self) -> bool:
        return self.name.startswith("CUSTOM:")

    @property
    def output(self) -> str:
        return self.outputs[0].name if self.outputs else "?"

    @property
    def layer(self) -> str:
        """A readable layer name from the output tensor name (Keras scopes, converter suffixes off).

        A graph output is often named after the signature (``StatefulPartitionedCall:0``); the
        layer is then read from the input, e.g. the Dense layer whose softmax activation this is."""
        named = self.outputs[0].name if self.outputs else "?"
        if "/" not in named and self.inputs and "/" in self.inputs[0].name:
            named = self.inputs[0].name
        first = named.split(";")[0]
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


@dataclass(frozen=True)
class Graph:
    """Every op of every subgraph in execution order, and subgraph 0's tensors and I/O."""

    ops: tuple[OpUse, ...]
    tensors: tuple[Tensor, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    op_tensors: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]  # subgraph 0: (inputs, outputs) per op


def _check_identifier(model: bytes) -> None:
    if len(model) < 8 or bytes(model[4:8]) != IDENTIFIER:
        raise TargetError("cannot load this model: it is not a .tflite flatbuffer (no TFL3 identifier); give the "
                          ".tflite file written by the TFLite converter (e.g. by `edgepipe convert`).")


@functools.lru_cache(maxsize=8)
def read_graph(model: bytes) -> Graph:
    """Parse ``model`` once (cached per bytes object value); raise TargetError if unreadable."""
    _check_identifier(model)
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
        uses, first = [], None
        for s in range(root.SubgraphsLength()):
            graph = root.Subgraphs(s)
            tensors = [_tensor(root, graph.Tensors(t), t) for t in range(graph.TensorsLength())]
            wiring = []
            for o in range(graph.OperatorsLength()):
                op = graph.Operators(o)
                name, version = codes[op.OpcodeIndex()]
                ins = tuple(int(i) for i in op.InputsAsNumpy()) if op.InputsLength() else ()
                outs = tuple(int(i) for i in op.OutputsAsNumpy()) if op.OutputsLength() else ()
                wiring.append((ins, outs))
                uses.append(OpUse(name=name, version=version, subgraph=s,
                                  inputs=tuple(tensors[i] for i in ins if i >= 0),
                                  outputs=tuple(tensors[i] for i in outs if i >= 0),
                                  options=_options(schema, op, name)))
            if s == 0:
                io = (tuple(int(i) for i in graph.InputsAsNumpy()) if graph.InputsLength() else (),
                      tuple(int(i) for i in graph.OutputsAsNumpy()) if graph.OutputsLength() else ())
                first = (tuple(tensors), io, tuple(wiring))
        if first is None:
            raise ValueError("the model has no subgraph")
        tensors, (inputs, outputs), wiring = first
        return Graph(ops=tuple(uses), tensors=tensors, inputs=inputs, outputs=outputs, op_tensors=wiring)
    except (IndexError, ValueError, AttributeError, UnicodeDecodeError, TypeError, KeyError) as exc:
        raise TargetError(
            f"the model is not a readable .tflite flatbuffer ({exc}); re-export it with the TFLite converter."
        ) from exc


def _options(schema, op, name: str) -> dict:
    """The builtin options edgepipe's checks read (SOFTMAX's beta); empty for other ops."""
    if name == "SOFTMAX" and op.BuiltinOptionsType() == schema.BuiltinOptions.SoftmaxOptions:
        table = op.BuiltinOptions()
        options = schema.SoftmaxOptions()
        options.Init(table.Bytes, table.Pos)
        return {"beta": float(options.Beta())}
    return {}


def read_ops(model: bytes) -> list[OpUse]:
    """Every operator of every subgraph, in execution order."""
    return list(read_graph(bytes(model)).ops)


def _tensor(root, tensor, index: int) -> Tensor:
    raw = tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
    signature = tuple(int(d) for d in tensor.ShapeSignatureAsNumpy()) if tensor.ShapeSignatureLength() else raw
    shape = tuple(1 if d < 0 else d for d in raw)
    buffer_index = tensor.Buffer()
    buffer = root.Buffers(buffer_index) if buffer_index < root.BuffersLength() else None
    offset = buffer is not None and buffer.Offset() > 1
    constant = buffer is not None and (buffer.DataLength() > 0 or buffer.Size() > 0)
    quant = tensor.Quantization()
    scales = tuple(float(v) for v in quant.ScaleAsNumpy()) if quant is not None and quant.ScaleLength() else ()
    zeros = tuple(int(v) for v in quant.ZeroPointAsNumpy()) if quant is not None and quant.ZeroPointLength() else ()
    kind = tensor.Type()
    return Tensor(name=tensor.Name().decode(), shape=shape, dtype=_TYPE_NAMES.get(kind, f"type{kind}"),
                  itemsize=_TYPE_BYTES.get(kind, 1), constant=constant, index=index,
                  dynamic_batch=bool(signature) and signature[0] == -1, scales=scales, zero_points=zeros,
                  quantized_dimension=quant.QuantizedDimension() if quant is not None else 0,
                  buffer=buffer_index, offset_buffer=offset)


def op_versions(model: bytes) -> dict[str, int]:
    """Highest version used per op name."""
    versions: dict[str, int] = {}
    for use in read_ops(model):
        versions[use.name] = max(versions.get(use.name, 0), use.version)
    return versions


def constant_values(model: bytes, tensor: Tensor) -> np.ndarray | None:
    """The stored values of a constant tensor (None for activations and types numpy lacks)."""
    if not tensor.constant or tensor.dtype not in ("float32", "float16", "int32", "int64", "int16", "int8",
                                                   "uint8", "bool", "float64"):
        return None
    buffer = _schema().Model.GetRootAs(model, 0).Buffers(tensor.buffer)
    if tensor.offset_buffer:
        raw = bytes(model[buffer.Offset():buffer.Offset() + buffer.Size()])
    else:
        raw = buffer.DataAsNumpy().tobytes()
    values = np.frombuffer(raw, dtype=np.dtype(tensor.dtype))
    return values.reshape(tensor.shape) if values.size == tensor.elements else values
