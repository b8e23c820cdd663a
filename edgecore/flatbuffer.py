"""Read a ``.tflite`` flatbuffer directly: tensors with quantization, ops, versions, work per op.

One place computes per-op work (MACs, elements, bytes): the MCU cost model, the op-energy model
and ``model.macs`` in reports all read it from here. Only numpy and the flatbuffer schema module
that ships with LiteRT (or TFLM, or TensorFlow) are needed.
"""

from __future__ import annotations

import functools
import importlib
import math
import re
import struct
from dataclasses import dataclass, field

import numpy as np

from .errors import TargetError, first_line

_SCHEMAS = ("ai_edge_litert.schema_py_generated",
            "tflite_micro.tensorflow.lite.micro.python.schema_py_generated",
            "tensorflow.lite.python.schema_py_generated")
IDENTIFIER = b"TFL3"

# TensorType enum value -> bytes per element (TFLite schema order; sub-byte types count as 1; string,
# resource and variant tensors hold references, counted as they always were).
_TYPE_BYTES = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 5: 8, 6: 1, 7: 2, 8: 8, 9: 1, 10: 8, 11: 16, 12: 8,
               13: 4, 14: 2, 15: 4, 16: 2, 17: 1, 18: 2, 19: 1, 20: 1, 21: 1, 22: 1}
_TYPE_NAMES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string", 6: "bool", 7: "int16",
               8: "complex64", 9: "int8", 10: "float64", 11: "complex128", 12: "uint64", 13: "resource",
               14: "variant", 15: "uint32", 16: "uint16", 17: "int4", 18: "bfloat16", 19: "int2", 20: "uint4",
               21: "float8_e4m3fn", 22: "float8_e5m2"}
# No tensor of a model edgepipe reads may claim more than this (a tampered shape, not a model).
MAX_TENSOR_BYTES = 1 << 34
# Shared by every "this is not a model" sentence: what to do about it.
_REEXPORT = "re-export it with the TFLite converter (e.g. `edgepipe convert`)"


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
        return math.prod(self.shape)  # Python ints: a large shape never wraps around

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


class _Malformed(ValueError):
    """A structural fault found while reading; becomes the TargetError of :func:`read_graph`."""


def _check_identifier(model: bytes) -> None:
    if len(model) < 8 or bytes(model[4:8]) != IDENTIFIER:
        raise TargetError("cannot load this model: it is not a .tflite flatbuffer (no TFL3 identifier); give the "
                          ".tflite file written by the TFLite converter (e.g. by `edgepipe convert`).")
    root = struct.unpack_from("<I", model, 0)[0]
    if not 8 <= root <= len(model) - 4:
        raise TargetError(f"the model is cut short or damaged: its root table points to byte {root} of a "
                          f"{len(model)}-byte file; {_REEXPORT}, or copy the file again.")


class _Budget:
    """Vector entries read so far. Every entry of a real model's vectors takes 4 bytes of its own, so a
    file cannot hold more than len/4 of them; more means tables are aliased (a crafted file that would
    make the reader loop for minutes)."""

    def __init__(self, size: int) -> None:
        self.left = size // 4

    def take(self, count: int, what: str) -> int:
        if count < 0 or count > self.left:
            raise _Malformed(f"{what} claims {count} entries, more than the file can hold")
        self.left -= count
        return count


def _index(value: int, length: int, what: str, *, optional: bool = False) -> int:
    if (optional and value == -1) or 0 <= value < length:
        return value
    raise _Malformed(f"{what} refers to index {value}, but there are {length}")


@functools.lru_cache(maxsize=8)
def read_graph(model: bytes) -> Graph:
    """Parse ``model`` once (cached per bytes object value); raise TargetError if unreadable.

    Every count, index and offset is checked against the file before it is used, so a truncated,
    tampered or crafted file is a TargetError saying so, never another exception or a long loop."""
    _check_identifier(model)
    schema = _schema()
    budget = _Budget(len(model))
    try:
        root = schema.Model.GetRootAs(model, 0)
        codes = []
        for i in range(budget.take(root.OperatorCodesLength(), "the operator code list")):
            code = root.OperatorCodes(i)
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            name = _builtin_names().get(builtin, f"BUILTIN_{builtin}")
            if name == "CUSTOM":
                name = f"CUSTOM:{(code.CustomCode() or b'?').decode()}"
            codes.append((name, code.Version()))
        buffers = budget.take(root.BuffersLength(), "the buffer list")
        uses, first = [], None
        for s in range(budget.take(root.SubgraphsLength(), "the subgraph list")):
            graph = root.Subgraphs(s)
            tensors = [_tensor(root, graph.Tensors(t), t, buffers, len(model))
                       for t in range(budget.take(graph.TensorsLength(), f"subgraph {s}'s tensor list"))]
            wiring = []
            for o in range(budget.take(graph.OperatorsLength(), f"subgraph {s}'s operator list")):
                op = graph.Operators(o)
                name, version = codes[_index(op.OpcodeIndex(), len(codes), f"operator {o} of subgraph {s}")]
                what = f"operator {o} ({name}) of subgraph {s}"
                ins = _indices(op.InputsAsNumpy() if budget.take(op.InputsLength(), what) else (), tensors, what,
                               optional=_optional_inputs(name))
                outs = _indices(op.OutputsAsNumpy() if budget.take(op.OutputsLength(), what) else (), tensors, what,
                                optional=_optional_inputs(name) if _many_optional(name) else ())
                wiring.append((ins, outs))
                uses.append(OpUse(name=name, version=version, subgraph=s,
                                  inputs=tuple(tensors[i] for i in ins if i >= 0),
                                  outputs=tuple(tensors[i] for i in outs if i >= 0),
                                  options=_options(schema, op, name)))
            if s == 0:
                io = (_indices(graph.InputsAsNumpy() if graph.InputsLength() else (), tensors, "the model's inputs"),
                      _indices(graph.OutputsAsNumpy() if graph.OutputsLength() else (), tensors, "the model's outputs"))
                if not io[0] or not io[1]:
                    raise _Malformed("its main subgraph has no " + ("inputs" if not io[0] else "outputs"))
                constant = next((i for i in io[0] if tensors[i].constant), None)
                if constant is not None:
                    raise _Malformed(f"its input {constant} is a constant (stored weights), not an input")
                made = {t for _, outs in wiring for t in outs} | set(io[0])
                orphan = next((i for i in io[1] if i not in made and not tensors[i].constant), None)
                if orphan is not None:
                    raise _Malformed(f"no operator computes its output {orphan} ({len(wiring)} operators)")
                first = (tuple(tensors), io, tuple(wiring))
        if first is None:
            raise _Malformed("the model has no subgraph")
        # Every other table too (signatures, metadata, operator options): TFLM's Python wrapper unpacks
        # the whole file before its C++ side, which verifies nothing, gets a pointer into it.
        schema.ModelT.InitFromObj(root)
        tensors, (inputs, outputs), wiring = first
        return Graph(ops=tuple(uses), tensors=tensors, inputs=inputs, outputs=outputs, op_tensors=wiring)
    except (IndexError, ValueError, AttributeError, UnicodeDecodeError, TypeError, KeyError, struct.error,
            OverflowError) as exc:
        if isinstance(exc, _Malformed):
            cause = str(exc)
        elif isinstance(exc, struct.error):
            cause = f"a table or list runs past the end of the {len(model)}-byte file"
        else:
            cause = f"{type(exc).__name__}: {first_line(exc, 120)}"
        raise TargetError(
            f"the model is not a readable .tflite flatbuffer: it is cut short or damaged ({cause}); {_REEXPORT}, "
            "or copy the file again."
        ) from exc


# Where an op may leave an input out (index -1, "no tensor"). LiteRT's kernels do not all check: a RESHAPE
# whose shape input is -1 crashes the process (SIGSEGV), so -1 is accepted only where the schema allows it.
_OPTIONAL_INPUTS = {"CONV_2D": (2,), "DEPTHWISE_CONV_2D": (2,), "FULLY_CONNECTED": (2,), "TRANSPOSE_CONV": (3,),
                    "CONV_3D": (2,), "CONV_3D_TRANSPOSE": (3,)}
_RECURRENT = ("LSTM", "RNN", "SVDF", "GRU")  # peepholes, projections, layer norms: many optional inputs


def _many_optional(name: str) -> bool:
    return name.startswith("CUSTOM:") or any(word in name for word in _RECURRENT)


def _optional_inputs(name: str) -> range | tuple[int, ...]:
    return range(1, 1 << 16) if _many_optional(name) else _OPTIONAL_INPUTS.get(name, ())


def _indices(values, tensors: list, what: str, *, optional=()) -> tuple[int, ...]:
    """Tensor indices checked against the subgraph; -1 ("no tensor") only at the positions in ``optional``."""
    checked = []
    for position, value in enumerate(values):
        value = int(value)
        if value == -1 and position not in optional:
            raise _Malformed(f"{what} leaves out its tensor {position}, which it needs")
        checked.append(_index(value, len(tensors), what, optional=True))
    return tuple(checked)


def _options(schema, op, name: str) -> dict:
    """The builtin options edgepipe's checks read (SOFTMAX's beta, 0 when its options are missing, as
    the runtimes read it); empty for other ops."""
    if name == "SOFTMAX":
        table = op.BuiltinOptions() if op.BuiltinOptionsType() == schema.BuiltinOptions.SoftmaxOptions else None
        if table is None:  # the runtimes then read the schema default, 0
            return {"beta": 0.0}
        options = schema.SoftmaxOptions()
        options.Init(table.Bytes, table.Pos)
        return {"beta": float(options.Beta())}
    return {}


def read_ops(model: bytes) -> list[OpUse]:
    """Every operator of every subgraph, in execution order."""
    return list(read_graph(bytes(model)).ops)


def _shape_text(shape: tuple[int, ...]) -> str:
    return str(list(shape)) if len(shape) <= 8 else f"[{', '.join(map(str, shape[:6]))}, ... ({len(shape)} sizes)]"


def _tensor(root, tensor, index: int, buffers: int, size: int) -> Tensor:
    what = f"tensor {index}"
    raw = tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
    signature = tuple(int(d) for d in tensor.ShapeSignatureAsNumpy()) if tensor.ShapeSignatureLength() else raw
    if any(d < -1 for d in raw + signature):
        raise _Malformed(f"{what} has the shape {_shape_text(raw)}")
    shape = tuple(1 if d < 0 else d for d in raw)
    kind = tensor.Type()
    if math.prod(shape) * _TYPE_BYTES.get(kind, 1) > MAX_TENSOR_BYTES:
        raise _Malformed(f"{what} claims the shape {_shape_text(raw)}, over {MAX_TENSOR_BYTES >> 30} GiB")
    buffer_index = _index(tensor.Buffer(), max(buffers, 1), f"{what}'s buffer")
    buffer = root.Buffers(buffer_index) if buffer_index < buffers else None
    offset = buffer is not None and buffer.Offset() > 1
    if offset and buffer.Offset() + buffer.Size() > size:
        raise _Malformed(f"{what}'s data lies at bytes {buffer.Offset()} to {buffer.Offset() + buffer.Size()} of a "
                         f"{size}-byte file")
    constant = buffer is not None and (buffer.DataLength() > 0 or buffer.Size() > 0)
    if buffer is not None and buffer.DataLength() > 0:
        buffer.DataAsNumpy()  # a view: raises if the data runs past the end of the file
    quant = tensor.Quantization()
    scales = tuple(float(v) for v in quant.ScaleAsNumpy()) if quant is not None and quant.ScaleLength() else ()
    zeros = tuple(int(v) for v in quant.ZeroPointAsNumpy()) if quant is not None and quant.ZeroPointLength() else ()
    name = tensor.Name()
    return Tensor(name=name.decode() if name is not None else f"tensor_{index}", shape=shape,
                  dtype=_TYPE_NAMES.get(kind, f"type{kind}"), itemsize=_TYPE_BYTES.get(kind, 1), constant=constant,
                  index=index, dynamic_batch=bool(signature) and signature[0] == -1, scales=scales,
                  zero_points=zeros, quantized_dimension=quant.QuantizedDimension() if quant is not None else 0,
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
    itemsize = np.dtype(tensor.dtype).itemsize
    if len(raw) % itemsize:
        raise TargetError(f"the data of tensor {tensor.name} is {len(raw)} bytes, not a whole number of "
                          f"{tensor.dtype} values: the file is damaged; {_REEXPORT}.")
    values = np.frombuffer(raw, dtype=np.dtype(tensor.dtype))
    return values.reshape(tensor.shape) if values.size == tensor.elements else values
