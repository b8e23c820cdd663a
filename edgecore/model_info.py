"""What a ``.tflite`` holds: its inputs and outputs with quantization, its ops and their MACs.

Read from the flatbuffer, so every original node is visible (no delegate has touched it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .errors import TargetError
from .flatbuffer import Tensor, read_graph

EDGE_OPS = {"QUANTIZE", "DEQUANTIZE"}


@dataclass(frozen=True)
class TensorInfo:
    """An input or output tensor: shape, type and its (per-tensor) quantization."""

    index: int
    name: str
    shape: tuple[int, ...]  # batch 1 where the signature is dynamic
    dynamic_batch: bool
    dtype: str
    scale: float
    zero_point: int

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dynamic_batch": self.dynamic_batch, "dtype": self.dtype,
                "scale": self.scale, "zero_point": self.zero_point}


@dataclass(frozen=True)
class OpInfo:
    """One operator node: its tensors, whether it computes in float, its MACs."""

    index: int
    name: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    float_io: bool
    macs: int


@dataclass(frozen=True)
class ModelInfo:
    """What a ``.tflite`` holds: I/O tensors, ops in execution order, tensor names."""

    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    ops: tuple[OpInfo, ...]
    tensor_names: dict = field(repr=False, default_factory=dict)

    @property
    def macs(self) -> int:
        return sum(op.macs for op in self.ops)

    @property
    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for op in self.ops:
            counts[op.name] = counts.get(op.name, 0) + 1
        return counts

    @property
    def ends_in_softmax(self) -> bool:
        """Whether the first output is a softmax (looking through a trailing DEQUANTIZE)."""
        producer = {t: op for op in self.ops for t in op.outputs}
        op, seen = producer.get(self.outputs[0].index), set()
        while op is not None and op.name in EDGE_OPS and op.inputs and op.index not in seen:
            seen.add(op.index)  # a tampered graph can loop back on itself
            op = producer.get(op.inputs[0])
        return op is not None and op.name == "SOFTMAX"

    def float_ops(self) -> list[str]:
        """Ops computing in float, other than QUANTIZE/DEQUANTIZE at the model's edges."""
        return [f"{op.name} ({self.tensor_names.get(op.outputs[0], '?')})"
                for op in self.ops if op.float_io and op.name not in EDGE_OPS]


_FLOAT_TYPES = {"float32", "float16"}
# Input and output types edgepipe can feed and read (numpy has them).
IO_TYPES = {"float32", "float16", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
            "bool"}


def _tensor_info(tensor: Tensor) -> TensorInfo:
    return TensorInfo(index=tensor.index, name=tensor.name, shape=tensor.shape, dynamic_batch=tensor.dynamic_batch,
                      dtype=tensor.dtype, scale=tensor.scale, zero_point=tensor.zero_point)


def inspect_model(model: bytes) -> ModelInfo:
    """Describe ``model``: I/O tensors with scale and zero point, ops with float use and MACs.

    Read from the flatbuffer alone (no interpreter), so it also works where no LiteRT is installed
    and never triggers a delegate."""
    graph = read_graph(bytes(model))
    tensors = graph.tensors
    for role, indices in (("input", graph.inputs), ("output", graph.outputs)):
        odd = [tensors[i] for i in indices if tensors[i].dtype not in IO_TYPES]
        if odd:
            raise TargetError(f"the model's {role} {odd[0].name} is of type {odd[0].dtype}, which edgepipe cannot "
                              f"feed or read (it takes {', '.join(sorted(IO_TYPES))}); give a model with numeric "
                              f"{role}s, e.g. one written by `edgepipe convert`.")
    ops = []
    for index, (use, (ins, outs)) in enumerate(zip(graph.ops, graph.op_tensors)):
        used = [tensors[t].dtype for t in ins + outs if 0 <= t < len(tensors)]
        ops.append(OpInfo(index=index, name=use.name, inputs=ins, outputs=outs,
                          float_io=any(dtype in _FLOAT_TYPES for dtype in used), macs=use.macs))
    return ModelInfo(
        inputs=tuple(_tensor_info(tensors[i]) for i in graph.inputs),
        outputs=tuple(_tensor_info(tensors[i]) for i in graph.outputs),
        ops=tuple(ops),
        tensor_names={t.index: t.name for t in tensors},
    )


_INTEGER_RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}
_TINY = float(np.finfo(np.float32).tiny)  # below the smallest normal float32: no converter writes such a scale


def quantization_problems(model: bytes) -> list[str]:
    """Quantization parameters no runtime can honour, each a sentence naming the tensor: a scale
    that is NaN, infinite, negative or subnormal anywhere; on an activation or an input/output of an
    integer type, a scale of 0 (it maps every value to the zero point) or a zero point outside the
    type; an int8/int16 activation without any quantization in a quantized model.
    LiteRT refuses some of these, TFLM runs most of them and computes garbage, so every target
    checks them before anything runs. Weights are left to the runtimes (a constant channel may have
    a scale of 0)."""
    graph = read_graph(bytes(model))
    io = {index: "input" for index in graph.inputs} | {index: "output" for index in graph.outputs}
    problems = []
    quantized_model = any(t.scales and t.dtype in _INTEGER_RANGES for t in graph.tensors)
    for tensor in graph.tensors:
        role = io.get(tensor.index, "tensor")
        name = tensor.name.split(";")[0]  # the converter joins every name a fused tensor had
        if quantized_model and not tensor.scales and not tensor.constant and tensor.dtype in ("int8", "int16") \
                and role == "tensor":
            problems.append(f"the tensor {name} is {tensor.dtype} without a scale or zero point in a quantized "
                            "model (they were lost or edited), which the int8 kernels cannot compute with; quantize "
                            "the model again, e.g. with `edgepipe convert`")
            continue
        bad = next((s for s in tensor.scales if not math.isfinite(s) or s < 0 or 0 < s < _TINY), None)
        if bad is None and not tensor.constant and tensor.scales and tensor.dtype in _INTEGER_RANGES:
            bad = next((s for s in tensor.scales if s == 0), None)
        if bad is not None:
            problems.append(f"the {role} {name} has the quantization scale {bad:g}, which maps no value to a "
                            "number (the file was edited or damaged); quantize the model again, e.g. with "
                            "`edgepipe convert`")
            continue
        low, high = _INTEGER_RANGES.get(tensor.dtype, (None, None))
        if low is not None and tensor.scales and not tensor.constant and \
                any(not low <= z <= high for z in tensor.zero_points):
            zero = next(z for z in tensor.zero_points if not low <= z <= high)
            problems.append(f"the {role} {name} has the zero point {zero}, outside {tensor.dtype} ({low} to "
                            f"{high}); quantize the model again, e.g. with `edgepipe convert`")
    return problems


def parameter_problems(model: bytes) -> list[str]:
    """Op parameters that make a model compute nothing useful, as sentences: a SOFTMAX whose beta is
    missing (read as 0), not finite, negative or subnormal (LiteRT runs it and every output is the
    same; its int8 reference kernel and TFLM abort on it)."""
    return [f"layer {op.layer} (SOFTMAX) has beta {op.options['beta']:g} (its options are missing or were edited); "
            "convert the model again (e.g. with `edgepipe convert`)"
            for op in read_graph(bytes(model)).ops
            if op.name == "SOFTMAX" and not (math.isfinite(op.options.get("beta", 1.0)) and op.options.get("beta", 1.0)
                                             >= _TINY)]


def quantize(x: np.ndarray, tensor: TensorInfo) -> np.ndarray:
    """Bring float model inputs to the tensor's type with its own scale and zero point."""
    dtype = np.dtype(tensor.dtype)
    if not tensor.quantized or dtype.kind == "f":
        return x.astype(dtype, copy=False)
    info = np.iinfo(dtype)
    # In place on one float32 buffer: this runs over whole eval sets, so passes count.
    q = np.divide(x, np.float32(tensor.scale), dtype=np.float32)
    np.rint(q, out=q)
    q += np.float32(tensor.zero_point)
    np.clip(q, info.min, info.max, out=q)
    return q.astype(dtype)


def dequantize(q: np.ndarray, tensor: TensorInfo) -> np.ndarray:
    """Model outputs back to float32 with the output tensor's scale and zero point."""
    if not tensor.quantized or np.dtype(tensor.dtype).kind == "f":
        return q.astype(np.float32, copy=False)
    return (q.astype(np.float32) - np.float32(tensor.zero_point)) * np.float32(tensor.scale)
