"""The transformer lint: patterns in a float ``.tflite`` graph that break integer quantization or
microcontroller runtimes, each named with the layer it comes from.

Measured on a character-level GPT written the stock Keras 3 way (see calibration_data/train_lm.py):
- Keras masks attention scores with ``where(mask, scores, -0.7 x float32.max)``. Per-tensor int8
  spreads that tensor over [-2.4e38, max], every real score rounds to the zero point and
  attention becomes uniform (perplexity +953%). int16x8 rescues a -1e4 mask, not -1e9.
- LayerNormalization becomes ``x * inv + (-mean * inv + beta)``: the NEG stays float in "full"
  int8, and the converter refuses 16x8 for it.
- ``square(x - mean)`` fuses into SQUARED_DIFFERENCE, which LiteRT refuses in 16x8.
- TFLite Micro has no GELU kernel and only SELECT_V2 (Keras' Embedding wraps negative ids with
  LESS/ADD/SELECT).

Only the flatbuffer is read (no TensorFlow): :func:`lint` takes the bytes and the names of the
Keras layers, if known, to say which layer each finding comes from.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Iterable

import numpy as np

from edgecore.flatbuffer import Graph, constant_values, read_graph
from pipeline.vocab import Recipe

MASK_LIMIT = -1e3  # an additive mask or fill value below this ruins a per-tensor int8 range
MASK_LIMIT_16X8 = -1e5  # int16 keeps about 16 bits: -1e4 survives, -1e9 does not (measured)
MASK_PATH_OPS = {"ADD", "SUB", "MUL", "SELECT", "SELECT_V2", "RESHAPE", "BROADCAST_TO", "EXPAND_DIMS",
                 "TRANSPOSE", "MAXIMUM", "MINIMUM", "CAST"}
MASK_DEPTH = 4  # ops walked back from a SOFTMAX's input


@dataclass(frozen=True)
class Finding:
    """One pattern found: which rule, where (layer, op, tensor), what it breaks, what fixes it."""

    rule: str
    layer: str
    op: str
    tensor: str
    breaks: tuple[str, ...]  # recipes ("int8", "int16x8"), "tflm", or "int16x8@tflm" (that recipe there)
    message: str
    rewrite: str | None = None  # the edgepipe rewrite that removes it, if any

    def to_dict(self) -> dict:
        out = asdict(self)
        out["breaks"] = list(self.breaks)
        return out

    def matters(self, recipes: Iterable[Recipe], tflm: bool) -> bool:
        """Whether this run (its recipes, whether a TFLM target is asked for) is affected; a
        ``recipe@tflm`` entry matters when both are asked for."""
        wanted = {str(r) for r in recipes} | ({"tflm"} if tflm else set())
        return any(b in wanted if "@" not in b else tflm and b.split("@")[0] in wanted for b in self.breaks)


def layer_of(tensor_name: str, layers: Iterable[str]) -> str:
    """The Keras layer a converted tensor comes from: the innermost scope that names a known
    layer (Keras adds ``_1`` suffixes when it re-traces), else the tensor's scope."""
    known = set(layers)
    scopes = [p for p in tensor_name.split(";")[0].split("/") if p]
    for part in reversed(scopes[:-1] or scopes):
        for candidate in (part, re.sub(r"_\d+$", "", part)):
            if candidate in known:
                return candidate
    return scopes[-2] if len(scopes) >= 2 else tensor_name


def lint(model: bytes, layers: Iterable[str] = ()) -> list[Finding]:
    """Every finding in the float graph ``model``, in graph order (see the module docstring)."""
    graph = read_graph(bytes(model))
    layers = tuple(layers)
    found = [*_float_ids(graph, layers), *_huge_masks(model, graph, layers)]
    for op, (_, outs) in zip(graph.ops, graph.op_tensors):
        tensor = graph.tensors[outs[0]].name if outs else "?"
        where = layer_of(tensor, layers)
        if op.name == "NEG":
            found.append(Finding("neg", where, op.name, tensor, ("int8", "int16x8"),
                                 f"{where}: NEG has no int8 kernel in a 'full' int8 model (it stays float) and "
                                 "blocks int16x8; Keras' LayerNormalization writes x*inv + (-mean*inv + beta)",
                                 rewrite="layer-norm"))
        elif op.name == "SQUARED_DIFFERENCE":
            found.append(Finding("squared-difference", where, op.name, tensor, ("int16x8",),
                                 f"{where}: SQUARED_DIFFERENCE (the converter's fusion of square(x - mean)) is "
                                 "refused by LiteRT in int16x8; compute xc = x - mean, then xc * xc",
                                 rewrite="layer-norm"))
        elif op.name == "GELU":
            found.append(Finding("gelu", where, op.name, tensor, ("tflm",),
                                 f"{where}: TFLite Micro has no GELU kernel; use ReLU in the MLP for a "
                                 "microcontroller"))
        elif op.name == "GATHER" and op.inputs and op.inputs[0].constant:
            found.append(Finding("gather-int16", where, op.name, tensor, ("int16x8@tflm",),
                                 f"{where}: TFLite Micro's GATHER has no int16 kernel, so the int16x8 model of this "
                                 "embedding lookup does not run on a microcontroller (int8 does)"))
        elif op.name == "SELECT":
            found.append(Finding("select", where, op.name, tensor, ("tflm",),
                                 f"{where}: TFLite Micro has SELECT_V2 but no SELECT; Keras' Embedding wraps "
                                 "negative ids with LESS/ADD/SELECT", rewrite="embedding"))
    found += _int_input_uses(graph, layers)
    return found


def embedding_rows(model: bytes) -> int | None:
    """How many rows the smallest embedding table the graph input's ids index has (a GATHER of a
    constant table by the ids, directly or through integer ops such as Keras' negative-id wrap
    LESS/ADD/SELECT), or None: token ids must be below it."""
    graph = read_graph(bytes(model))
    ids = set(graph.inputs[:1])
    if not ids or not graph.tensors[graph.inputs[0]].dtype.startswith("int"):
        return None
    rows = []
    for op, (ins, outs) in zip(graph.ops, graph.op_tensors):
        if op.name == "GATHER" and len(ins) > 1 and ins[1] in ids and graph.tensors[ins[0]].constant:
            rows.append(graph.tensors[ins[0]].shape[0] if graph.tensors[ins[0]].shape else None)
        elif any(t in ids for t in ins):
            ids.update(t for t in outs if graph.tensors[t].dtype.startswith(("int", "bool")))
    rows = [r for r in rows if r]
    return min(rows) if rows else None


def _int_input_uses(graph: Graph, layers: tuple[str, ...]) -> list[Finding]:
    """Integer ids that feed anything but a GATHER's indices (Keras' negative-id wrap: LESS, ADD,
    SELECT): int16x8 calibration then wants a range for the int32 input and fails with "Empty
    min/max for tensor serving_default_input:0"."""
    found = []
    for index in graph.inputs[:1]:
        tensor = graph.tensors[index]
        if not tensor.dtype.startswith("int"):
            continue
        users = [(op, outs) for op, (ins, outs) in zip(graph.ops, graph.op_tensors)
                 if index in ins and not (op.name == "GATHER" and list(ins).index(index) == 1)]
        if users:
            op, outs = users[0]
            where = layer_of(graph.tensors[outs[0]].name, layers) if outs else "?"
            names = ", ".join(sorted({u.name for u, _ in users}))
            found.append(Finding("int-input-16x8", where, op.name, tensor.name, ("int16x8",),
                                 f"{where}: the {tensor.dtype} input feeds {names}, not only a GATHER's indices: "
                                 "int16x8 calibration then wants a range for the ids and fails (Keras' Embedding "
                                 "wraps negative ids)", rewrite="embedding"))
    return found


def _float_ids(graph: Graph, layers: tuple[str, ...]) -> list[Finding]:
    """A float input cast to integers (ids into an Embedding declared without dtype='int32'):
    int8 would quantize the ids themselves."""
    found = []
    for op, (ins, outs) in zip(graph.ops, graph.op_tensors):
        if op.name == "CAST" and ins and ins[0] in graph.inputs and graph.tensors[ins[0]].dtype == "float32" \
                and outs and graph.tensors[outs[0]].dtype.startswith("int"):
            name = graph.tensors[ins[0]].name
            found.append(Finding("float-ids", layer_of(graph.tensors[outs[0]].name, layers), op.name, name,
                                 ("int8", "int16x8"),
                                 f"the float input {name!r} is cast to integer ids: quantizing it would round "
                                 "the ids; declare the input keras.Input(shape, dtype='int32')"))
    return found


def _huge_masks(model: bytes, graph: Graph, layers: tuple[str, ...]) -> list[Finding]:
    """Constants far below zero on the way into a SOFTMAX (an attention mask or fill value)."""
    producer = {t: index for index, (_, outs) in enumerate(graph.op_tensors) for t in outs}
    found, seen = [], set()
    for index, op in enumerate(graph.ops[:len(graph.op_tensors)]):
        if op.name != "SOFTMAX":
            continue
        softmax_out = graph.tensors[graph.op_tensors[index][1][0]].name
        pending = [(graph.op_tensors[index][0][0], 0)]
        while pending:
            tensor, depth = pending.pop()
            source = producer.get(tensor)
            if source is None or depth >= MASK_DEPTH or graph.ops[source].name not in MASK_PATH_OPS:
                continue
            for t in graph.op_tensors[source][0]:
                if t < 0:
                    continue
                values = constant_values(model, graph.tensors[t]) if graph.tensors[t].constant else None
                if values is None:
                    pending.append((t, depth + 1))
                    continue
                if values.dtype.kind != "f" or not values.size or (index, t) in seen:
                    continue
                low = float(np.min(values))
                if low < MASK_LIMIT:
                    seen.add((index, t))
                    where = layer_of(softmax_out, layers)
                    breaks = ("int8", "int16x8") if low < MASK_LIMIT_16X8 else ("int8",)
                    found.append(Finding(
                        "huge-mask", where, graph.ops[source].name, graph.tensors[t].name, breaks,
                        f"{where}: a mask constant of {low:.3g} feeds SOFTMAX: per-tensor "
                        f"{' and '.join(breaks)} spread the scores over that range and every real score rounds to "
                        "the zero point (attention becomes uniform); set masked scores to a bounded constant "
                        "such as -30", rewrite="attention-mask"))
    return found
