"""Will it fit? Flash and RAM of a model on a microcontroller board, statically and as measured.

The static verdict needs no interpreter, so it holds even when TensorFlow Lite Micro cannot run
the model: flash = model bytes + interpreter + kernels; RAM is at least the largest set of
activation tensors live at once (each 16-byte aligned, as TFLM's planner places them) plus the
runtime. TFLM's verified arena then refines RAM.
"""

from __future__ import annotations

import math

from edgecore.flatbuffer import Graph, OpUse
from targets.profiles import BoardProfile, shared

ALIGNMENT = 16


def _aligned(size: int) -> int:
    return ALIGNMENT * math.ceil(size / ALIGNMENT)


def live_peak(graph: Graph) -> tuple[int, str]:
    """The bytes of the largest set of non-constant tensors alive at once in the main subgraph,
    and the layer where it happens. A tensor lives from the op that writes it (graph inputs: from
    the start) to the last op that reads it (graph outputs: to the end)."""
    tensors, wiring = graph.tensors, graph.op_tensors
    if not wiring:
        return 0, "-"
    first, last = {}, {}
    for index in graph.inputs:
        first[index] = 0
    for op, (ins, outs) in enumerate(wiring):
        for t in outs:
            if t >= 0:
                first.setdefault(t, op)
                last[t] = max(last.get(t, op), op)
        for t in ins:
            if t >= 0 and not tensors[t].constant:
                first.setdefault(t, op)
                last[t] = op
    for index in graph.outputs:
        last[index] = len(wiring) - 1
    peak, where = 0, 0
    for op in range(len(wiring)):
        live = sum(_aligned(tensors[t].bytes) for t in first if first[t] <= op <= last.get(t, first[t])
                   and not tensors[t].constant)
        if live > peak:
            peak, where = live, op
    layer = graph.ops[where].layer if where < len(graph.ops) else "-"
    return peak, layer


def cmsis_scratch_bytes(ops: list[OpUse]) -> int:
    """The largest scratch buffer CMSIS-NN's int8 kernels request for any op of the model."""
    largest = 0
    for op in ops:
        if len(op.inputs) < 2 or len(op.inputs[1].shape) != 4 or not op.inputs[0].shape:
            continue
        _, kh, kw, channels = op.inputs[1].shape
        if op.name == "CONV_2D" and (kh, kw) != (1, 1):
            largest = max(largest, 2 * op.inputs[0].shape[-1] * kh * kw * 2)
        elif op.name == "DEPTHWISE_CONV_2D":
            largest = max(largest, channels * kh * kw * 2)
    return largest


def code_bytes(ops: list[OpUse]) -> int:
    """Interpreter code plus one kernel per op type (estimates from ``tflm_runtime.toml``)."""
    runtime = shared("tflm_runtime")
    kernels = runtime["kernel_flash_bytes"]
    names = sorted({op.name for op in ops})
    return runtime["interpreter_flash_bytes"]["value"] + sum(kernels.get(n, kernels["default"]) for n in names)


def _size(count: int) -> str:
    return f"{count / 1024**2:.2f} MiB" if count >= 1024**2 else f"{count / 1024:.1f} KiB"


def _over(what: str, need: int, have: int, how: str) -> str:
    return f"{what}: {how} {_size(need)}, the board has {_size(have)} (over by {_size(need - have)})"


def static_fit(profile: BoardProfile, model: bytes, ops: list[OpUse], graph: Graph) -> dict:
    """Flash, the RAM lower bound and the verdict with its reasons, before TFLM runs."""
    runtime_ram = shared("tflm_runtime")["runtime_ram_bytes"]["value"]
    code = code_bytes(ops)
    flash = len(model) + code
    peak, layer = live_peak(graph)
    ram_lower = peak + runtime_ram
    reasons = []
    if flash > profile.flash_bytes:
        reasons.append(_over("flash", flash, profile.flash_bytes, "the model and TFLM code need"))
    if ram_lower > profile.sram_bytes:
        reasons.append(_over("RAM", ram_lower, profile.sram_bytes,
                             f"the tensors live at once (at layer {layer}) and the runtime need at least"))
    return {
        "flash_bytes": flash, "code_bytes_estimate": code, "board_flash_bytes": profile.flash_bytes,
        "flash_headroom_bytes": profile.flash_bytes - flash, "ram_lower_bound_bytes": ram_lower,
        "live_tensor_peak_bytes": peak, "live_tensor_peak_layer": layer, "sram_bytes": profile.sram_bytes,
        "fits": not reasons, "fit_reasons": reasons, "fit_method": "static: model bytes + code; live tensors",
    }


def measured_fit(profile: BoardProfile, ops: list[OpUse], arena, static: dict) -> dict:
    """The verdict refined by TFLM's verified arena: device margin, RAM, headroom, reasons."""
    runtime = shared("tflm_runtime")
    margin = math.ceil(cmsis_scratch_bytes(ops) + runtime["arena_margin"]["fraction"] * arena.total)
    arena_device = _aligned(arena.total + margin)
    ram = arena_device + runtime["runtime_ram_bytes"]["value"]
    reasons = [r for r in static["fit_reasons"] if r.startswith("flash")]
    if ram > profile.sram_bytes:
        reasons.append(_over("RAM", ram, profile.sram_bytes, "the verified tensor arena, device margin and runtime need"))
    return {
        **static,
        "arena_bytes": arena.total, "arena_recorded_bytes": arena.recorded, "arena_search_attempts": arena.attempts,
        "arena_margin_bytes": arena_device - arena.total, "arena_device_bytes": arena_device, "ram_bytes": ram,
        "ram_headroom_bytes": profile.sram_bytes - ram,
        "fits": not reasons, "fit_reasons": reasons,
        "fit_method": "TFLM verified arena (smallest that allocates and invokes) + margin + runtime; flash static",
    }
