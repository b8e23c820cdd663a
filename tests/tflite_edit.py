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
