"""Edit a .tflite in tests: change a tensor's quantization, move a buffer after the flatbuffer.

Uses the flatbuffer object API that ships with LiteRT (no TensorFlow), so fast tests can plant
the quantization parameters that make TensorFlow Lite Micro abort.
"""

from __future__ import annotations

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema


def load(blob: bytes):
    return schema.ModelT.InitFromPackedBuf(bytearray(blob), 0)


def save(model) -> bytes:
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def op_tensors(model, op_name: str, index: int = 0) -> tuple[list[int], list[int]]:
    """Input and output tensor indices of the ``index``-th op called ``op_name`` in subgraph 0."""
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    found = [op for op in model.subgraphs[0].operators
             if names[max(model.operatorCodes[op.opcodeIndex].builtinCode,
                           model.operatorCodes[op.opcodeIndex].deprecatedBuiltinCode)] == op_name]
    op = found[index]
    return list(op.inputs), list(op.outputs)


def set_scale(blob: bytes, op_name: str, which: str, position: int, scale: float, index: int = 0) -> bytes:
    """A copy of ``blob`` with tensor ``position`` of the op's ``which`` ('inputs' or 'outputs') rescaled."""
    model = load(blob)
    tensor = model.subgraphs[0].tensors[op_tensors(model, op_name, index)[0 if which == "inputs" else 1][position]]
    tensor.quantization.scale = np.array([scale], dtype=np.float32)
    return save(model)


def scale_of(blob: bytes, op_name: str, which: str, position: int, index: int = 0) -> float:
    model = load(blob)
    tensor = model.subgraphs[0].tensors[op_tensors(model, op_name, index)[0 if which == "inputs" else 1][position]]
    return float(tensor.quantization.scale[0])


def move_buffer_after(blob: bytes, op_name: str, position: int) -> bytes:
    """A copy of ``blob`` whose constant input ``position`` of ``op_name`` is stored after the
    flatbuffer (``Buffer.offset``/``size``), as some quantizers write large weights."""
    model = load(blob)
    tensor = model.subgraphs[0].tensors[op_tensors(model, op_name)[0][position]]
    buffer = model.buffers[tensor.buffer]
    data = bytes(np.asarray(buffer.data, dtype=np.uint8))
    buffer.data, buffer.offset, buffer.size = None, 1, len(data)
    packed = save(model)  # the offset field has a fixed width, so packing again keeps the size
    buffer.offset = (len(packed) + 15) // 16 * 16 + 16
    packed = save(model)
    return packed + b"\0" * (buffer.offset - len(packed)) + data


def _weights(model, op_name: str, position: int):
    return model.subgraphs[0].tensors[op_tensors(model, op_name)[0][position]]


def hybrid_weights(blob: bytes, op_name: str, position: int = 1) -> bytes:
    """A copy of a float32 ``blob`` whose constant input ``position`` of ``op_name`` is int8 with one
    scale, float activations kept: what the dynamic-range recipe writes."""
    model = load(blob)
    tensor = _weights(model, op_name, position)
    values = np.frombuffer(bytes(np.asarray(model.buffers[tensor.buffer].data, dtype=np.uint8)), np.float32)
    scale = float(np.abs(values).max() / 127) or 1.0
    model.buffers[tensor.buffer].data = np.round(values / scale).astype(np.int8).view(np.uint8)
    tensor.type = schema.TensorType.INT8
    tensor.quantization = schema.QuantizationParametersT()
    tensor.quantization.scale, tensor.quantization.zeroPoint = [scale], [0]
    return save(model)


def float16_weights(blob: bytes, op_name: str, position: int = 1) -> bytes:
    """A copy of a float32 ``blob`` whose constant input ``position`` of ``op_name`` is stored as
    float16 and expanded by a DEQUANTIZE op first: what the float16 recipe writes."""
    model = load(blob)
    graph = model.subgraphs[0]
    index = op_tensors(model, op_name)[0][position]
    tensor = graph.tensors[index]
    values = np.frombuffer(bytes(np.asarray(model.buffers[tensor.buffer].data, dtype=np.uint8)), np.float32)
    half = schema.TensorT()
    half.shape, half.type, half.name = list(tensor.shape), schema.TensorType.FLOAT16, f"{tensor.name}_float16"
    half.buffer = len(model.buffers)
    model.buffers.append(schema.BufferT())
    model.buffers[-1].data = values.astype(np.float16).view(np.uint8)
    tensor.buffer = 0  # the float32 weights are now DEQUANTIZE's output
    graph.tensors.append(half)
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.DEQUANTIZE
    code.version = 3
    model.operatorCodes.append(code)
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = len(model.operatorCodes) - 1, [len(graph.tensors) - 1], [index]
    graph.operators.insert(0, op)
    return save(model)
