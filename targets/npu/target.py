"""Arm Ethos-U NPU targets: Vela compiles the int8 model offline, and its compiler estimates give the
op split, SRAM, flash and NPU cycles; the ops Vela leaves to the CPU are priced by the board's CPU
cycle model; TensorFlow Lite Micro runs the pre-Vela int8 model here for accuracy. Nothing runs on an
NPU here (LiteRT and TFLM have no ``ethos-u`` kernel; that needs Arm's FVP or the silicon)."""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass

import numpy as np

from edgecore.errors import TargetError
from edgecore.flatbuffer import OpUse, read_graph, read_ops
from edgecore.model_info import inspect_model
from edgecore.vocab import Capability
from targets.base import DeployBundle, RunOptions, Target, TargetResult
from targets.cost_model import estimate_cycles, model_work
from targets.mcu import tflm
from targets.mcu.deploy import build_bundle
from targets.mcu.memory import live_peak
from targets.mcu.target import McuTarget
from targets.profiles import BOARDS_DIR, REQUIRED_KEYS, BoardProfile, read_board_files, shared

from .vela import ETHOS_U_OP, VelaConfig, VelaResult, compile_tflite

log = logging.getLogger(__name__)
NPU_DIR = BOARDS_DIR / "npu"
NUMERICS = ("accuracy is TFLM running the pre-Vela int8 model on this machine; the NPU's own numerics "
            "(its rounding in requantization and in lowered ops such as SOFTMAX) are not run here")
# Horowitz, ISSCC 2014 (45 nm): int8 multiply 0.2 pJ + add 0.03 pJ; SRAM about 10 pJ per 64-bit read, so
# 1.25 pJ per byte (as boards/energy.toml); LPDDR about 2.6 nJ per 64-bit access, 325 pJ per byte. Flash
# and MRAM reads have no figure there and are counted at the SRAM rate.
ENERGY_PJ = {"int8_mac": 0.23, "sram_byte": 1.25, "dram_byte": 325.0}
ANCHORS = {"estimate_over_measured": [0.11, 1.17], "method": (
    "Vela's estimate against three published measurements of whole inferences on Ethos-U boards (MobileNetV2 on a "
    "Cortex-M55 + U55 board, SSD-MobileNetV2 on an i.MX 93): 0.11x to 1.17x; Vela sees the NPU's share, not "
    "driver set-up, input copies or CPU post-processing (BENCHMARKS.md, bench/npu_anchors.py)")}


@dataclass(frozen=True)
class NpuProfile(BoardProfile):
    """A board with an Ethos-U: the NPU's Vela configuration plus its CPU, as a microcontroller board."""

    def npu(self, key: str):
        return self.data["npu"][key]["value"]

    @property
    def accelerator(self) -> str:
        return self.npu("accelerator_config")

    @property
    def npu_clock_hz(self) -> int:
        return int(self.npu("clock_hz"))

    def vela_config(self) -> VelaConfig:
        return VelaConfig(self.accelerator, self.npu("system_config"), self.npu("memory_mode"))

    @property
    def model_storage(self) -> str:
        """Where the weights live: "flash" (on-chip MRAM or off-chip flash) or "dram"."""
        return self.data.get("model_storage", {}).get("value", "flash")

    @property
    def arena_memory(self) -> str:
        """Where the tensor arena lives: "sram", or "dram" (Dedicated_Sram: SRAM is the NPU's cache)."""
        return self.data.get("fallback_arena_memory", {}).get("value", "sram")

    def summary(self) -> dict:
        return {**super().summary(), "npu": self.accelerator, "npu_clock_mhz": self.npu_clock_hz / 1e6,
                "vela_system_config": self.npu("system_config"), "vela_memory_mode": self.npu("memory_mode")}


@functools.lru_cache(maxsize=None)
def load_npu_profiles() -> dict[str, NpuProfile]:
    """Every Ethos-U board profile under ``targets/boards/npu``, by target name."""
    return read_board_files(NPU_DIR, NpuProfile, required=(*REQUIRED_KEYS, "npu"))


def _quantized_compute(ops: list[OpUse]) -> bool:
    """Whether any op computes on integer tensors (Ethos-U runs int8 and some int16x8, no float)."""
    return any(op.outputs and op.outputs[0].dtype in ("int8", "int16") for op in ops
               if op.name not in ("QUANTIZE", "DEQUANTIZE"))


class NpuTarget(Target):
    """A Cortex-M (or i.MX) board with an Arm Ethos-U NPU: Vela's estimates, TFLM's accuracy."""

    capabilities = frozenset({Capability.RUN, Capability.ACCURACY, Capability.ARENA, Capability.FIT,
                              Capability.ESTIMATED_LATENCY, Capability.ENERGY, Capability.DEPLOY})

    def __init__(self, profile: NpuProfile) -> None:
        self.profile = profile
        self.name = profile.name
        self.description = (f"{profile.accelerator} NPU, {profile.title}: Vela compiler estimates, "
                            "TFLM accuracy here")

    def summary(self) -> dict:
        return {**super().summary(), **self.profile.summary()}

    def check(self, model: bytes) -> list[str]:
        """A model with no integer compute would run entirely on the CPU: refused, with the count."""
        ops = read_ops(model)
        if not _quantized_compute(ops):
            return [f"0 of {len(ops)} ops would run on the {self.profile.accelerator} NPU: Ethos-U runs int8 "
                    "(and some int16x8) ops, never float; quantize the model (edgepipe convert --recipe int8)"]
        return []

    def compile(self, model: bytes) -> VelaResult:
        """The model compiled by Vela for this board (in a subprocess; failures are one sentence)."""
        return compile_tflite(model, self.profile.vela_config())

    def run(self, model: bytes, x: np.ndarray | None, y: np.ndarray | None, options: RunOptions) -> TargetResult:
        """Vela first (op split, memory, cycles), then TFLM on the pre-Vela model for accuracy."""
        problems = self.check(model)
        if problems:
            raise TargetError(f"{self.name}: {problems[0]}.")
        info, ops = inspect_model(model), read_ops(model)
        compiled = self.compile(model)
        result = TargetResult(target=self.name, runtime=f"ethos-u-vela {compiled.summary['vela_version']} "
                              f"(compiler estimates) + tflite-micro {tflm.tflm_version()}", delegate=None, threads=1)
        result.details.update(self.estimates(model, ops, compiled))
        if x is not None and len(x):
            log.info("%s: running %d samples of the pre-Vela model in TensorFlow Lite Micro", self.name, len(x))
            try:
                _, evaluated = tflm.run_isolated(model, info, x, live_peak=live_peak(read_graph(bytes(model)))[0])
            except TargetError as exc:  # the NPU verdict stands without TFLM's accuracy
                result.details["tflm_error"] = str(exc)
                log.warning("%s: %s", self.name, exc)
            else:
                raw, outputs = evaluated
                result.score(outputs, y, softmax=info.ends_in_softmax)
                result.details["reference"] = McuTarget.compare_with_reference(model, info, x, raw, y)
        result.details["numerics"] = NUMERICS
        if not result.details["fits"]:
            log.warning("%s: does not fit: %s", self.name, "; ".join(result.details["fit_reasons"]))
        result.energy_mj = result.details.pop("energy_mj")
        return result

    def estimates(self, model: bytes, ops: list[OpUse], compiled: VelaResult) -> dict:
        """Op split, memory and fit, latency and energy of ``model`` compiled for this board."""
        summary, profile = compiled.summary, self.profile
        fallback = self.fallback(model, compiled, ops)
        table, cycle_method = profile.cycle_model()
        cpu_cycles = estimate_cycles(model_work(fallback), table) if fallback else 0.0
        npu_ms = summary["cycles_total"] / profile.npu_clock_hz * 1e3
        cpu_ms = cpu_cycles / profile.clock_hz * 1e3
        memory = self.memory(compiled, fallback)
        latency_ms = npu_ms + cpu_ms
        moved = summary["bytes_moved"]
        op_pj = (summary["nn_macs"] * ENERGY_PJ["int8_mac"] + moved["dram"] * ENERGY_PJ["dram_byte"]
                 + (moved["sram"] + moved["on_chip_flash"] + moved["off_chip_flash"]) * ENERGY_PJ["sram_byte"])
        return {
            "npu": profile.accelerator,
            "unsupported_ops": [p["op"] for p in tflm.unsupported_ops(fallback)],  # CPU ops TFLM cannot run
            "npu_ops": len(ops) - len(fallback),
            "total_ops": len(ops),
            "cpu_ops": [{"op": op["op"], "reason": op["reason"]} for op in summary["cpu_ops"]],
            "vela_npu_operations": summary["npu_ops"],  # Vela's own count, after it lowers ops (a SOFTMAX: ~25)
            "npu_subgraphs": summary["npu_subgraphs"],
            **memory,
            "estimated_cycles": round(summary["cycles_total"] * profile.clock_hz / profile.npu_clock_hz + cpu_cycles),
            "estimated_cycles_split": {"npu": summary["cycles_total"], "npu_clock_hz": profile.npu_clock_hz,
                                       "cpu_fallback": round(cpu_cycles), "cpu_clock_hz": profile.clock_hz},
            "estimated_latency_ms": round(latency_ms, 4),
            "latency_uncertainty": ANCHORS,
            "latency_split_ms": {"npu": round(npu_ms, 4), "cpu_fallback": round(cpu_ms, 4)},
            "latency_method": (summary["method"] + f"; {len(fallback)} CPU fallback ops priced by the "
                               f"{profile.core} cycle model ({cycle_method}); NPU and CPU parts run one after "
                               "the other"),
            "energy_mj": {
                "value": round(latency_ms * profile.active_power_mw * 1e-3, 6),
                "method": "estimated-latency x board-power",
                "board_power_mw": profile.active_power_mw,
                "op_energy_model_mj": round(op_pj * 1e-9, 6),
                "op_energy_method": ("op-energy-model: NPU MACs x int8 (mult+add) + bytes Vela moves per memory "
                                     "x energy per byte (Horowitz 45 nm; flash at the SRAM rate); CPU fallback "
                                     "ops not included"),
            },
            "vela_version": summary["vela_version"],
            "vela_config": {"accelerator": profile.accelerator, "system_config": summary["system_config"],
                            "memory_mode": summary["memory_mode"]},
            "method": summary["method"],
        }

    @staticmethod
    def fallback(model: bytes, compiled: VelaResult, ops: list[OpUse] | None = None) -> list[OpUse]:
        """The ops of ``model`` that Vela leaves to the CPU (matched by output tensor name)."""
        cpu_tensors = {op["tensor"] for op in compiled.summary["cpu_ops"]}
        return [op for op in (ops or read_ops(model)) if op.outputs and op.outputs[0].name in cpu_tensors]

    def memory(self, compiled: VelaResult, fallback: list[OpUse]) -> dict:
        """RAM, storage and the fit verdict. The arena is the largest set of tensors live at once in the
        compiled model (Vela's scratch, where the NPU keeps its feature maps, included) plus the device
        margin: estimated, not verified, since TFLM here cannot run the ``ethos-u`` op."""
        summary, profile = compiled.summary, self.profile
        runtime = shared("tflm_runtime")
        peak, _ = live_peak(read_graph(compiled.compiled))
        arena = 16 * math.ceil(peak * (1 + runtime["arena_margin"]["fraction"]) / 16)
        ram = arena + runtime["runtime_ram_bytes"]["value"]
        code = runtime["interpreter_flash_bytes"]["value"] + sum(
            runtime["kernel_flash_bytes"].get(op, runtime["kernel_flash_bytes"]["default"])
            for op in {op.name for op in read_ops(compiled.compiled)} if op != ETHOS_U_OP)
        stored = summary["dram_bytes"] if profile.model_storage == "dram" else (
            summary["flash_bytes"] + summary["on_chip_flash_bytes"])
        storage_bytes = int(profile.value("dram_bytes" if profile.model_storage == "dram" else "flash_bytes"))
        flash = stored + code
        reasons = []
        missing = tflm.unsupported_ops(fallback)
        if missing:
            reasons.append(f"TensorFlow Lite Micro has no kernel for {tflm.describe_unsupported(missing)}, which "
                           "Vela leaves to the CPU")
        sram_need = ram if profile.arena_memory == "sram" else summary["sram_bytes"]
        if sram_need > profile.sram_bytes:
            reasons.append(f"SRAM: needs {sram_need:,} B (Vela's {summary['sram_bytes']:,} B of NPU SRAM"
                           + (" with the CPU's tensors, runtime and margin" if profile.arena_memory == "sram" else "")
                           + f"), the board has {profile.sram_bytes:,} B")
        if profile.arena_memory == "dram" and ram > int(profile.value("dram_bytes")):
            reasons.append(f"DRAM: the tensor arena needs {ram:,} B, the board has {int(profile.value('dram_bytes')):,} B")
        if flash > storage_bytes:
            reasons.append(f"{profile.model_storage}: the compiled model and TFLM code need {flash:,} B, the board "
                           f"has {storage_bytes:,} B")
        return {
            "npu_sram_bytes": summary["sram_bytes"], "arena_live_tensor_bytes": peak, "arena_bytes": arena,
            "arena_method":
                "estimated: live tensors of the Vela-compiled model (NPU scratch included) + "
                f"{runtime['arena_margin']['fraction']:.0%} margin; not verified (no ethos-u kernel here)",
            "ram_bytes": ram, "flash_bytes": flash, "model_storage": profile.model_storage,
            "compiled_model_bytes": len(compiled.compiled), "sram_bytes": profile.sram_bytes,
            "ram_headroom_bytes": profile.sram_bytes - sram_need, "fits": not reasons, "fit_reasons": reasons,
            "fit_method": "Vela's SRAM and storage use + the compiled model's live tensors + TFLM runtime and code",
        }

    def deploy(self, model: bytes, *, tool_version: str) -> DeployBundle:
        """The TFLM bundle of the Vela-compiled model: the Ethos-U op plus the fallback ops registered, the
        arena estimated from the compiled model's live tensors (Vela's scratch included) plus margin."""
        problems = self.check(model)
        if problems:
            raise TargetError(f"{self.name}: {problems[0]}.")
        compiled = self.compile(model)
        memory = self.memory(compiled, self.fallback(model, compiled))
        return build_bundle(compiled.compiled, inspect_model(compiled.compiled), target=self.name,
                            arena_bytes=memory["arena_bytes"], arena_measured=memory["arena_live_tensor_bytes"],
                            tool_version=tool_version,
                            arena_note=("the largest set of tensors live at once in the Vela-compiled model (Vela's "
                                        "scratch for the NPU included), estimated: TFLM on the build machine cannot "
                                        "run the ethos-u op"),
                            facts={"fits": memory["fits"], "fit_reasons": memory["fit_reasons"],
                                   "ram_bytes": memory["ram_bytes"], "flash_bytes": memory["flash_bytes"],
                                   "npu": self.profile.accelerator, "vela": compiled.summary["method"],
                                   "source_model_bytes": len(model)})


def npu_targets() -> list[NpuTarget]:
    """One target per Ethos-U board profile."""
    return [NpuTarget(profile) for profile in load_npu_profiles().values()]
