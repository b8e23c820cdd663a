"""int16 islands: chosen ops of a full-int8 model compute with int16 activations (int8 weights), the
rest stays int8, with a requantizing QUANTIZE op at every border. TFLite builtins only.

The pass edits the converter's int8 model instead of quantizing again, so everything outside the
islands is bit for bit the int8 candidate (same calibration, same ranges), and the effect of
promoting an op is measured against exactly the model it changes. An island tensor keeps the range
the int8 calibration found for it, with 256 times finer steps (symmetric, zero point 0, as the int16x8
kernels require); the ops whose output range is fixed by the kernel (SOFTMAX, LOGISTIC, TANH) get the
int16 output scale the kernels require (1/32768). Biases of the promoted convolutions and fully
connected layers become int64 at the new input scale, as in TFLite's 16x8 scheme
(https://www.tensorflow.org/lite/performance/post_training_integer_quant_16x8).

A promoted graph output stays int16: that is where an int8 softmax head loses most, its step of 1/256
rounds every probability below 1/512 to exactly 0.

Why not ai-edge-quantizer: it quantizes the whole model again with its own calibration, so an island
could not be compared with the int8 model it replaces, and it has no MINIMUM config, which the
attention rewrite uses (that op would become a float island). See the README's int16 islands section.
"""

from __future__ import annotations

import logging

import flatbuffers
import numpy as np

from pipeline.errors import UsageError

log = logging.getLogger("edgepipe")

# Ops whose output scale the int16 kernels fix, and what they fix it to (LiteRT and TFLM kernels:
# tensorflow/lite/kernels/activations.cc, tflite-micro/tensorflow/lite/micro/kernels/softmax_common.cc).
FIXED_OUTPUT = {"SOFTMAX": 1 / 32768, "LOGISTIC": 1 / 32768, "TANH": 1 / 32768}
# Where a weighted op keeps its int8 weights and its bias: (weight input, bias input).
WEIGHTED = {"FULLY_CONNECTED": (1, 2), "CONV_2D": (1, 2), "DEPTHWISE_CONV_2D": (1, 2), "TRANSPOSE_CONV": (1, 3),
            "BATCH_MATMUL": (None, None)}


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def _names(schema) -> dict[int, str]:
    return {value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")}


def _op_name(model, op, names) -> str:
    code = model.operatorCodes[op.opcodeIndex]
    return names[max(code.builtinCode, code.deprecatedBuiltinCode)]


def _constant(model, tensor) -> bool:
    data = model.buffers[tensor.buffer].data if tensor.buffer < len(model.buffers) else None
    return data is not None and len(data) > 0


def _range(tensor) -> tuple[float, float]:
    scale = float(tensor.quantization.scale[0])
    zero = int(tensor.quantization.zeroPoint[0]) if tensor.quantization.zeroPoint is not None else 0
    return scale * (-128 - zero), scale * (127 - zero)


def _int16_params(schema, tensor, scale: float | None = None, ranges: dict | None = None):
    params = schema.QuantizationParametersT()
    if scale is None:
        low, high = (ranges or {}).get(_name(tensor)) or _range(tensor)
        scale = max(abs(low), abs(high), 1e-12) / 32767
    params.scale = np.array([scale], dtype=np.float32)
    params.zeroPoint = np.array([0], dtype=np.int64)
    return params


def promotable(model_bytes: bytes) -> list[tuple[int, str]]:
    """(index, op name) of every op of subgraph 0 with int8 activations, the ones an island can hold."""
    schema = _schema()
    model = schema.ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
    names, graph = _names(schema), model.subgraphs[0]
    found = []
    for index, op in enumerate(graph.operators):
        name = _op_name(model, op, names)
        if name in ("QUANTIZE", "DEQUANTIZE"):
            continue
        outputs = [graph.tensors[t] for t in op.outputs if t >= 0]
        if outputs and all(t.type == schema.TensorType.INT8 and t.quantization is not None
                           and t.quantization.scale is not None for t in outputs):
            found.append((index, name))
    return found


def promote(model_bytes: bytes, ops: list[int] | tuple[int, ...], ranges: dict | None = None) -> bytes:
    """A copy of the int8 model ``model_bytes`` in which the ops at ``ops`` (indices into subgraph 0)
    compute with int16 activations, with QUANTIZE ops at the borders. ``ranges`` (tensor name ->
    (min, max) recorded by the calibration) widens an island tensor to its whole recorded range: int16
    has the steps to spare, so what an int8 calibration clipped (a hot channel) comes back; without
    it, a tensor keeps its int8 range."""
    schema = _schema()
    model = schema.ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
    names, graph = _names(schema), model.subgraphs[0]
    allowed = dict(promotable(model_bytes))
    chosen = set(ops)
    wrong = sorted(i for i in chosen if i not in allowed)
    if wrong:
        raise UsageError(f"int16 islands: op {', '.join(map(str, wrong))} has no int8 activations to widen.")
    tensors, operators = graph.tensors, list(graph.operators)
    kinds = [_op_name(model, op, names) for op in operators]
    producer = {t: i for i, op in enumerate(operators) for t in op.outputs if t >= 0}
    readers: dict[int, list[int]] = {}
    for i, op in enumerate(operators):
        for t in op.inputs:
            if t >= 0:
                readers.setdefault(t, []).append(i)
    quantize_code = _opcode(model, schema, schema.BuiltinOperator.QUANTIZE)
    before: dict[int, list] = {}  # op index -> QUANTIZE ops to insert before it
    after: dict[int, list] = {}
    widened: dict[int, int] = {}  # int8 tensor read by an island -> its int16 copy

    def requantize(source: int, target: int):
        op = schema.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = quantize_code, _indices([source]), _indices([target])
        return op

    # Outputs of island ops become int16 in place; int8 readers outside get a requantized copy.
    for index in sorted(chosen):
        op, name = operators[index], allowed[index]
        for t in op.outputs:
            if t < 0:
                continue
            tensor = tensors[t]
            int8_params = tensor.quantization
            tensor.quantization = _int16_params(schema, tensor, FIXED_OUTPUT.get(name), ranges)
            tensor.type = schema.TensorType.INT16
            # DEQUANTIZE reads int16 as well as int8 (a float output keeps the finer steps).
            outside = [r for r in readers.get(t, []) if r not in chosen and kinds[r] != "DEQUANTIZE"]
            if outside:
                copy = _add_tensor(model, schema, tensor, schema.TensorType.INT8, int8_params, "/int8")
                after.setdefault(index, []).append(requantize(t, copy))
                for r in outside:
                    operators[r].inputs = _indices([copy if x == t else x for x in operators[r].inputs])
    # Inputs of island ops produced outside (or graph inputs) get an int16 copy; constants are widened.
    for index in sorted(chosen):
        op, name = operators[index], allowed[index]
        weight, bias = WEIGHTED.get(name, (None, None))
        inputs = list(op.inputs)
        for position, t in enumerate(inputs):
            if t < 0 or position in (weight, bias):
                continue
            tensor = tensors[t]
            if tensor.type != schema.TensorType.INT8 or (t in producer and producer[t] in chosen):
                continue
            if _constant(model, tensor):
                inputs[position] = _widen_constant(model, schema, tensor)
                continue
            if t not in widened:
                widened[t] = _add_tensor(model, schema, tensor, schema.TensorType.INT16,
                                         _int16_params(schema, tensor, None, ranges), "/int16")
                before.setdefault(index, []).append(requantize(t, widened[t]))
            inputs[position] = widened[t]
        if bias is not None and bias < len(inputs) and inputs[bias] >= 0:
            inputs[bias] = _rescale_bias(model, schema, tensors, inputs, weight, bias)
        op.inputs = _indices(inputs)
    ordered = []
    for index, op in enumerate(operators):
        ordered.extend(before.get(index, []))
        ordered.append(op)
        ordered.extend(after.get(index, []))
    graph.operators = ordered
    builder = flatbuffers.Builder(max(1024, len(model_bytes) * 2))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _indices(values) -> np.ndarray:
    # The object API packs a numpy vector with its own dtype: tensor indices must be int32.
    return np.asarray(values, dtype=np.int32)


def _opcode(model, schema, code: int) -> int:
    for index, existing in enumerate(model.operatorCodes):
        if max(existing.builtinCode, existing.deprecatedBuiltinCode) == code:
            return index
    entry = schema.OperatorCodeT()
    entry.builtinCode, entry.deprecatedBuiltinCode, entry.version = code, min(code, 127), 1
    model.operatorCodes.append(entry)
    return len(model.operatorCodes) - 1


def _name(tensor) -> str:
    return tensor.name.decode() if isinstance(tensor.name, bytes) else tensor.name


def _add_tensor(model, schema, like, type_: int, params, suffix: str, values: np.ndarray | None = None) -> int:
    """A new tensor of subgraph 0 shaped like ``like``, named after it; a constant when ``values``
    are given (stored in a new buffer). Its index."""
    tensor = schema.TensorT()
    tensor.shape, tensor.shapeSignature, tensor.type, tensor.quantization = (like.shape, like.shapeSignature,
                                                                             type_, params)
    tensor.name, tensor.buffer = _name(like) + suffix, 0
    if values is not None:
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(values.tobytes(), dtype=np.uint8)
        model.buffers.append(buffer)
        tensor.buffer = len(model.buffers) - 1
    tensors = model.subgraphs[0].tensors
    tensors.append(tensor)
    return len(tensors) - 1


def _values(model, tensor, dtype) -> np.ndarray:
    return np.frombuffer(bytes(np.asarray(model.buffers[tensor.buffer].data, dtype=np.uint8)), dtype=dtype)


def _widen_constant(model, schema, tensor) -> int:
    """A new int16 constant holding ``tensor``'s int8 values at the int16 scale of its range."""
    real = tensor.quantization.scale.astype(np.float64)[0] * (
        _values(model, tensor, np.int8).astype(np.float64) - int(tensor.quantization.zeroPoint[0]))
    params = _int16_params(schema, tensor)
    values = np.clip(np.round(real / float(params.scale[0])), -32767, 32767).astype(np.int16)
    return _add_tensor(model, schema, tensor, schema.TensorType.INT16, params, "/int16", values)


def _rescale_bias(model, schema, tensors, inputs: list[int], weight: int, bias: int) -> int:
    """The op's int32 bias as a new int64 bias at (new input scale x weight scale), per channel."""
    old = tensors[inputs[bias]]
    weights, activation = tensors[inputs[weight]], tensors[inputs[0]]
    new_scale = (float(activation.quantization.scale[0]) * weights.quantization.scale.astype(np.float64))
    real = _values(model, old, np.int32).astype(np.float64) * old.quantization.scale.astype(np.float64)
    values = np.round(real / new_scale).astype(np.int64)
    params = schema.QuantizationParametersT()
    params.scale = new_scale.astype(np.float32)
    params.zeroPoint = np.zeros(len(new_scale), dtype=np.int64)
    params.quantizedDimension = old.quantization.quantizedDimension
    return _add_tensor(model, schema, old, schema.TensorType.INT64, params, "/int64", values)


# --- choosing the ops -------------------------------------------------------------------------------

# An island may cost this much over the int8 model it widens: flash (bytes) and live activations.
MAX_BYTES_RATIO = 1.15
MAX_ARENA_RATIO = 1.5
# Without --max-accuracy-drop, ``auto`` promotes until the drop is within what advice flags.
DEFAULT_BUDGET = {"accuracy": 1.0, "agreement": 1.0, "perplexity": 2.0, "relative error": 2.0}


def groups(model_bytes: bytes) -> dict[str, list[int]]:
    """The promotable ops by ``layer:OP`` (a layer's ops of one kind promote together), in graph order."""
    from edgecore.flatbuffer import read_graph

    graph = read_graph(bytes(model_bytes))
    main = [op for op in graph.ops if op.subgraph == 0]
    found: dict[str, list[int]] = {}
    for index, name in promotable(model_bytes):
        found.setdefault(f"{main[index].layer}:{name}", []).append(index)
    return found


def island(model_bytes: bytes, ops: list[int], refusal=None) -> list[int]:
    """``ops`` and the ops that read their outputs, through ops that only move data (pooling,
    reshapes): widening an op alone does nothing when its int8 readers take its output back to the
    same int8 steps (a hot channel crushed by its neighbours stays crushed). Readers a requested
    target has no int16 kernel for (``refusal(op_name)``) stay int8."""
    from edgecore.flatbuffer import read_graph

    from .islands import PASSTHROUGH

    graph = read_graph(bytes(model_bytes))
    allowed = dict(promotable(model_bytes))
    readers: dict[int, list[int]] = {}
    for index, (ins, _) in enumerate(graph.op_tensors):
        for tensor in ins:
            readers.setdefault(tensor, []).append(index)
    chosen, pending = set(ops), list(ops)
    while pending:
        index = pending.pop()
        for tensor in graph.op_tensors[index][1]:
            for reader in readers.get(tensor, []):
                name = allowed.get(reader)
                if reader in chosen or name is None or (refusal and refusal(name)):
                    continue
                chosen.add(reader)
                if name in PASSTHROUGH:
                    pending.append(reader)
    return sorted(chosen)


def resolve(model_bytes: bytes, names: tuple[str, ...], refusal=None) -> tuple[list[int], list[str]]:
    """Op indices for ``--int16-layers`` names, a layer (all its promotable ops) or ``layer:OP``, with
    the ops reading them (:func:`island`)."""
    found = groups(model_bytes)
    chosen: list[int] = []
    keys: list[str] = []
    for name in names:
        matches = [key for key in found if key == name or key.partition(":")[0] == name]
        if not matches:
            raise UsageError(f"--int16-layers: no layer or op named {name}; the model's int8 ops are: "
                             f"{', '.join(found)}.")
        for key in matches:
            keys.append(key)
            chosen.extend(found[key])
    return island(model_bytes, sorted(set(chosen)), refusal), list(dict.fromkeys(keys))


def arena_estimate(model_bytes: bytes) -> int:
    """The live-activation peak of the main subgraph (what an arena holds at least)."""
    from edgecore.flatbuffer import read_graph
    from targets import live_peak

    return live_peak(read_graph(bytes(model_bytes)))[0]


def measure_effects(int8: bytes, score, refusal=None, *, base=None, found=None, ranges=None) -> list[dict]:
    """Each ``layer:OP`` group's measured effect on the held-out drop: the int8 drop minus the drop with
    that group alone in int16, largest first (how much of the loss that op's int8 rounding causes).
    A group whose op a requested target has no int16 kernel for is listed with the reason."""
    base = base or score(int8)
    found = found or groups(int8)
    rows, refused = [], []
    for key, ops in found.items():
        reason = refusal(key.rpartition(":")[2]) if refusal else None
        if reason:
            refused.append({"group": key, "no_kernel": reason})
            continue
        widened = island(int8, ops, refusal)
        got = score(promote(int8, widened, ranges))
        rows.append({"group": key, "ops": len(widened), "effect": round(base.drop - got.drop, 4),
                     "drop": round(got.drop, 4)})
        log.debug("int16 islands: %s alone: %s drop %.3f (int8 %.3f)", key, got.measure, got.drop, base.drop)
    return sorted(rows, key=lambda row: -row["effect"]) + refused


def search(int8: bytes, score, budget: float | None, refusal, ranges: dict | None = None) -> tuple[list[str], dict]:
    """The fewest ``layer:OP`` groups to promote so that the held-out drop's 95% bound is within
    ``budget``, ranked by their measured effect on that drop (each group promoted alone), added
    greedily; a group that does not improve the model with the others already in is left out, and so
    is one that would take the model past the size or arena budget. ``score(bytes)`` measures a
    model (a :class:`pipeline.quantize.selection.Score`); ``refusal(op_name)`` says why a requested
    target has no int16 kernel for an op, or None. Returns the chosen groups and the record."""
    base = score(int8)
    budget = DEFAULT_BUDGET.get(base.measure, 1.0) if budget is None else budget
    max_bytes, max_arena = int(len(int8) * MAX_BYTES_RATIO), int(arena_estimate(int8) * MAX_ARENA_RATIO)
    record: dict = {"measure": base.measure, "budget": budget, "int8_drop": round(base.drop, 4),
                    "int8_drop_upper": round(base.drop_upper, 4), "max_bytes": max_bytes, "max_arena_bytes": max_arena,
                    "effects": [], "steps": [], "no_kernel": []}
    if base.drop_upper <= budget:
        record["note"] = "int8 is already within the budget: nothing promoted"
        return [], record
    found = groups(int8)
    effects = measure_effects(int8, score, refusal, base=base, found=found, ranges=ranges)
    record["no_kernel"] = [{"group": row["group"], "reason": row["no_kernel"]} for row in effects if "no_kernel" in row]
    record["effects"] = [row for row in effects if "effect" in row]
    chosen: list[str] = []
    current = base
    for row in record["effects"]:
        effect, key = row["effect"], row["group"]
        if effect <= 0:
            break
        trial = chosen + [key]
        blob = promote(int8, island(int8, sorted(i for k in trial for i in found[k]), refusal), ranges)
        arena = arena_estimate(blob)
        if len(blob) > max_bytes or arena > max_arena:
            record["steps"].append({"group": key, "skipped": f"{len(blob)} bytes, arena {arena} bytes: over the "
                                    f"{max_bytes}-byte or {max_arena}-byte limit"})
            continue
        got = score(blob)
        kept = got.drop < current.drop
        record["steps"].append({"group": key, "drop": round(got.drop, 4), "drop_upper": round(got.drop_upper, 4),
                                "bytes": len(blob), "arena_bytes": arena, "kept": kept})
        log.info("int16 islands: + %s: %s drop %.2f (95%% bound %.2f)%s", key, got.measure, got.drop,
                 got.drop_upper, "" if kept else ", no better: left out")
        if kept:
            chosen, current = trial, got
        if current.drop_upper <= budget:
            break
    record.update(chosen=chosen, drop=round(current.drop, 4), drop_upper=round(current.drop_upper, 4),
                  met=current.drop_upper <= budget)
    return chosen, record
