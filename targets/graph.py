"""What a ``.tflite`` holds: its inputs and outputs with quantization, its ops and their MACs.

Read through an interpreter built without delegates, so every original node is visible.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .flatbuffer import read_ops
from .runtime import make_interpreter

EDGE_OPS = {"QUANTIZE", "DEQUANTIZE"}


@dataclass(frozen=True)
class TensorInfo:
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
    index: int
    name: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    float_io: bool
    macs: int


@dataclass(frozen=True)
class ModelInfo:
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
        op = producer.get(self.outputs[0].index)
        while op is not None and op.name in EDGE_OPS:
            op = producer.get(op.inputs[0])
        return op is not None and op.name == "SOFTMAX"

    def float_ops(self) -> list[str]:
        """Ops computing in float, other than QUANTIZE/DEQUANTIZE at the model's edges."""
        return [f"{op.name} ({self.tensor_names.get(op.outputs[0], '?')})"
                for op in self.ops if op.float_io and op.name not in EDGE_OPS]


def _tensor(detail: dict) -> TensorInfo:
    signature = tuple(int(d) for d in detail.get("shape_signature", detail["shape"]))
    shape = tuple(int(d) for d in detail["shape"])
    scale, zero_point = detail["quantization"]
    return TensorInfo(
        index=int(detail["index"]), name=detail["name"], shape=shape,
        dynamic_batch=bool(signature) and signature[0] == -1,
        dtype=np.dtype(detail["dtype"]).name, scale=float(scale), zero_point=int(zero_point),
    )


def inspect_model(model: bytes) -> ModelInfo:
    """Describe ``model``: I/O tensors with scale and zero point, ops with float use and MACs."""
    interpreter = make_interpreter(model, kernels="builtin")
    interpreter.allocate_tensors()
    work = [use.macs for use in read_ops(model) if use.subgraph == 0]
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    float_types = {np.dtype(np.float32), np.dtype(np.float16)}
    ops = []
    for op in interpreter._get_ops_details():
        inputs = tuple(int(t) for t in op["inputs"])
        outputs = tuple(int(t) for t in op["outputs"])
        used = [details[t]["dtype"] for t in inputs + outputs if t >= 0 and t in details]
        ops.append(OpInfo(
            index=int(op["index"]), name=op["op_name"], inputs=inputs, outputs=outputs,
            float_io=any(np.dtype(t) in float_types for t in used),
            macs=work[int(op["index"])] if int(op["index"]) < len(work) else 0,
        ))
    return ModelInfo(
        inputs=tuple(_tensor(d) for d in interpreter.get_input_details()),
        outputs=tuple(_tensor(d) for d in interpreter.get_output_details()),
        ops=tuple(ops),
        tensor_names={i: d["name"] for i, d in details.items()},
    )


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
