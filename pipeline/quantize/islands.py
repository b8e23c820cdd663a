"""Float islands: the layers that stay float in an otherwise int8 model, chosen so that it helps.

Keeping only the worst layer in float does nothing: its output is re-quantized, with the same bad
range, for its int8 consumers. So an island is the layer *and every op that reads its output*,
walking through ops that only move data (pooling, reshapes), which keep their input's range.
"""

from __future__ import annotations

from edgecore.flatbuffer import read_graph
from pipeline.errors import UsageError

PASSTHROUGH = {"MAX_POOL_2D", "AVERAGE_POOL_2D", "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "TRANSPOSE", "PAD",
               "STRIDED_SLICE", "SLICE", "GATHER", "SPACE_TO_DEPTH", "DEPTH_TO_SPACE"}


def island_nodes(model: bytes, layers: tuple[str, ...]) -> tuple[tuple[str, ...], list[str]]:
    """The converter node names (op output tensors) to keep in float for ``layers``, and a
    readable ``OP (layer)`` list of the ops they are."""
    graph = read_graph(bytes(model))
    ops = [(index, op) for index, op in enumerate(graph.ops) if op.subgraph == 0]
    known = list(dict.fromkeys(op.layer for _, op in ops))
    unknown = [name for name in layers if name not in known]
    if unknown:
        raise UsageError(f"--float-layers: no layer named {', '.join(unknown)}; the model's layers are: "
                         f"{', '.join(known)}.")
    readers: dict[int, list[int]] = {}
    for index, (ins, _) in enumerate(graph.op_tensors):
        for tensor in ins:
            readers.setdefault(tensor, []).append(index)
    chosen: list[int] = []
    pending = [index for index, op in ops if op.layer in layers]
    while pending:
        index = pending.pop(0)
        if index in chosen:
            continue
        chosen.append(index)
        op = graph.ops[index]
        if op.layer in layers or op.name in PASSTHROUGH:
            for tensor in graph.op_tensors[index][1]:
                pending.extend(readers.get(tensor, []))
    chosen.sort()
    nodes = tuple(graph.ops[i].outputs[0].name for i in chosen if graph.ops[i].outputs)
    return nodes, [f"{graph.ops[i].name} ({graph.ops[i].layer})" for i in chosen]
