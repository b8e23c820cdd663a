"""Where TFLM and LiteRT's reference kernels part: the first op whose output differs by more than one
quantization step, for the sample whose final outputs differ most.

Both runtimes run a copy of the model in which every op's output is also a graph output, so each
intermediate tensor can be read; ops are compared in execution order, so the op named is where the
difference appears, not where it is largest.
"""

from __future__ import annotations

import numpy as np

from edgecore.flatbuffer import read_graph
from targets.worker import call_isolated


def _every_output(model: bytes) -> tuple[bytes, list[int]]:
    """A copy of ``model`` whose graph outputs are its own plus every op output of subgraph 0."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    tree = schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
    graph = tree.subgraphs[0]
    outputs = [int(t) for t in graph.outputs]
    for op in graph.operators:
        outputs.extend(int(t) for t in op.outputs if t >= 0 and int(t) not in outputs)
    graph.outputs = np.asarray(outputs, dtype=np.int32)
    builder = flatbuffers.Builder(max(1024, 2 * len(model)))
    builder.Finish(tree.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output()), outputs


def _tflm_outputs(model: bytes, sample: np.ndarray, arena_bytes: int) -> list[np.ndarray]:
    from .tflm import _interpreter

    interpreter = _interpreter(model, arena_bytes)
    interpreter.set_input(sample, 0)
    interpreter.invoke()
    return [np.array(interpreter.get_output(i)) for i in range(len(read_graph(model).outputs))]


def _reference_outputs(model: bytes, sample: np.ndarray) -> list[np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_content=model, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], sample)
    interpreter.invoke()
    return [np.array(interpreter.get_tensor(detail["index"])) for detail in interpreter.get_output_details()]


def first_divergence(model: bytes, sample: np.ndarray, arena_bytes: int) -> dict | None:
    """The first op (in execution order) whose output TFLM and the reference kernels compute more than
    one step apart on ``sample`` (one quantized input row, batch 1): ``{op, layer, index, tensor,
    max_diff_steps, dtype}``; None when every op agrees within a step, or for float outputs."""
    wide, order = _every_output(model)
    graph = read_graph(wide)
    tensors = graph.tensors
    spare = sum(tensors[t].bytes for t in order)
    tflm = call_isolated(_tflm_outputs, wide, sample, int(arena_bytes + 2 * spare + 65536),
                         what="TensorFlow Lite Micro crashed while tracing where it differs from the reference")
    reference = _reference_outputs(wide, sample)
    position = {tensor: index for index, tensor in enumerate(order)}
    main = [op for op in graph.ops if op.subgraph == 0]
    for index, op in enumerate(main):
        for tensor in graph.op_tensors[index][1]:
            if tensor < 0 or tensor not in position or np.dtype(tensors[tensor].dtype).kind == "f":
                continue
            a, b = tflm[position[tensor]], reference[position[tensor]]
            if a.shape != b.shape or a.size == 0:
                continue
            steps = float(np.max(np.abs(a.astype(np.int64) - b.astype(np.int64))))
            if steps > 1:
                return {"op": op.name, "layer": op.layer, "index": index, "tensor": tensors[tensor].name,
                        "max_diff_steps": steps, "dtype": tensors[tensor].dtype}
    return None
