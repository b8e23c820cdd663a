"""Raspberry Pi / ARM Linux targets: on the device itself, over SSH, or emulated here under QEMU.

On the device (edgepipe installed on the Pi, no TensorFlow needed) the model runs in-process;
``--host`` runs the self-contained device runner on a Pi over SSH; ``--emulate`` runs the aarch64
build of LiteRT with XNNPACK under qemu-aarch64, checks its int8 outputs are bit-identical to the
host's, and counts guest instructions per inference, which repeat exactly run to run. Emulated
time says nothing about real speed, so latency there is an estimate: instructions / (IPC x clock).
"""

from __future__ import annotations

import functools
import logging
import platform
import tomllib
from dataclasses import dataclass

import numpy as np

from edgecore.metrics import latency_summary, step_difference, top1_accuracy
from edgecore.model_info import dequantize, inspect_model, quantize
from edgecore.vocab import Capability, Kernels

from . import emulator, ssh
from .base import RunOptions, Target, TargetResult
from .host import litert_problems
from .litert_runner import evaluate_raw, time_invocations
from .mcu_profiles import BOARDS_DIR, Profile
from .runtime import load_runtime

log = logging.getLogger(__name__)
COUNTED_INVOKES = 4


@dataclass(frozen=True)
class ArmProfile(Profile):
    """A Raspberry Pi / ARM Linux board profile (clock, cores, power, QEMU CPU)."""

    qemu_cpu: str = "cortex-a72"

    def power_w(self, threads: int) -> float:
        """Board power with ``threads`` cores busy: idle plus that share of the load increase."""
        busy = min(threads, int(self.value("cores"))) / self.value("cores")
        return self.value("idle_power_w") + busy * (self.value("load_power_w") - self.value("idle_power_w"))


@functools.lru_cache(maxsize=None)
def arm_profiles() -> dict[str, ArmProfile]:
    """Every ARM board profile under ``targets/boards/arm``, by name."""
    profiles = {}
    for path in sorted((BOARDS_DIR / "arm").glob("*.toml")):
        data = tomllib.loads(path.read_text())
        profiles[data["name"]] = ArmProfile(name=data["name"], title=data["title"], core=data["core"], data=data,
                                            qemu_cpu=data["qemu_cpu"])
    return profiles


class ArmTarget(Target):
    """An ARM Linux board: on the device, over SSH, or emulated here under QEMU."""

    capabilities = frozenset({Capability.RUN, Capability.ACCURACY, Capability.LATENCY, Capability.ENERGY,
                              Capability.SSH, Capability.EMULATE, Capability.INSTRUCTION_COUNT, Capability.FLOAT_OPS})

    def __init__(self, profile: ArmProfile) -> None:
        self.profile = profile
        self.name = profile.name
        self.description = (f"{profile.title}: {profile.core} x{int(profile.value('cores'))}; on the device, "
                            "over SSH (--host) or emulated here (--emulate)")

    def summary(self) -> dict:
        return {**super().summary(), "clock_mhz": self.profile.value("clock_hz") / 1e6, "core": self.profile.core}

    def check(self, model: bytes) -> list[str]:
        return litert_problems(model)  # the same LiteRT runtime as the host, on another CPU

    def run(self, model: bytes, x: np.ndarray | None, y: np.ndarray | None, options: RunOptions) -> TargetResult:
        info = inspect_model(model)
        q = quantize(x, info.inputs[0]) if x is not None and len(x) else None
        if options.emulate:
            return self._emulated(model, info, q, y, options)
        threads = options.threads or int(self.profile.value("threads"))
        if options.ssh is not None:
            log.info("%s: running on %s over SSH with %d threads", self.name, options.ssh.host, threads)
            runner, raw = ssh.run(options.ssh, model, q, threads=threads, warmup=options.warmup, runs=options.runs)
            latency, measured_on = latency_summary(runner["latency_ns"]), f"{options.ssh.host} ({runner['machine']})"
            runtime, delegated = f"{runner['runtime']} {runner['version']}", runner["delegation"]
        else:
            machine = platform.machine()
            if machine not in ("aarch64", "arm64"):
                log.warning("%s: running on this %s machine, so the figures are this machine's; use --emulate, "
                            "or --host USER@PI to run on the board", self.name, machine)
            raw = evaluate_raw(model, info, q, kernels=Kernels.XNNPACK, threads=threads, batch_size=1)[0] if q is not None else None
            sample = x[:1] if x is not None and len(x) else np.zeros((1, *info.inputs[0].shape[1:]), np.float32)
            latency, delegated = time_invocations(model, info, sample, kernels=Kernels.XNNPACK, threads=threads,
                                                  warmup=options.warmup, runs=options.runs)
            runtime, measured_on = load_runtime().describe(), f"this machine ({machine})"
        result = TargetResult(target=self.name, runtime=runtime, delegate="XNNPACK" if delegated["partitions"] else None,
                              threads=threads, latency_ms=latency)
        self._outputs(result, info, raw, y)
        result.details.update({"emulated": False, "measured_on": measured_on, "xnnpack": delegated})
        power = self.profile.power_w(threads)
        result.energy_mj = {"value": round(latency["p50"] * power, 5), "method": "measured-latency x board-power",
                            "board_power_w": round(power, 3)}
        return result

    def _emulated(self, model: bytes, info, q, y, options: RunOptions) -> TargetResult:
        cpu = self.profile.qemu_cpu
        log.info("%s: emulating %s under qemu-aarch64 (1 thread, instruction counting on)", self.name, cpu)
        runner, raw, counts = emulator.run(model, q, cpu=cpu, threads=1, warmup=2, runs=3, count=COUNTED_INVOKES)
        result = TargetResult(target=self.name, runtime=f"{runner['runtime']} {runner['version']} (aarch64, QEMU {cpu})",
                              delegate="XNNPACK" if runner["delegation"]["partitions"] else None, threads=1)
        self._outputs(result, info, raw, y)
        # Every count repeats exactly run to run; within a run they differ by ~0.03 % (Python's
        # allocator around the call), so the steady state is the smallest.
        instructions = int(min(counts))
        clock, ipc = self.profile.value("clock_hz"), self.profile.value("ipc")
        estimate_ms = instructions / (ipc * clock) * 1e3
        power = self.profile.power_w(1)
        result.details.update({
            "emulated": True, "qemu_cpu": cpu, "xnnpack": runner["delegation"],
            "instructions_per_inference": instructions, "instruction_counts": counts,
            "instruction_spread_within_run": round((max(counts) - min(counts)) / max(min(counts), 1), 6),
            "estimated_latency_ms": round(estimate_ms, 4),
            "latency_method": f"guest instructions / (IPC {ipc} x {clock / 1e9:g} GHz), one thread; an estimate",
            "emulated_wall_ms_p50": round(float(np.median(runner["latency_ns"])) / 1e6, 3),
        })
        if raw is not None:
            host_raw, _ = evaluate_raw(model, info, q, kernels=Kernels.XNNPACK, threads=1, batch_size=1)
            same = raw.shape == host_raw.shape and bool(np.array_equal(raw, host_raw))
            result.details["bit_exact_vs_host"] = same
            if raw.shape == host_raw.shape:
                steps = step_difference(raw, host_raw)
                result.details["differing_outputs_vs_host"] = int(np.count_nonzero(steps))
                result.details["max_diff_steps_vs_host"] = int(steps.max())
            cpu_ops = runner["delegation"]["cpu_ops"]
            if not same and cpu_ops:
                result.details["bit_exact_note"] = (
                    f"ops outside XNNPACK ({', '.join(cpu_ops)}) run LiteRT's builtin kernels, whose aarch64 (NEON) "
                    "and x86 code paths may round differently; the XNNPACK part is the same code on both")
        result.energy_mj = {"value": round(estimate_ms * power, 5), "method": "estimated-latency x board-power",
                            "board_power_w": round(power, 3)}
        return result

    @staticmethod
    def _outputs(result: TargetResult, info, raw, y) -> None:
        if raw is None:
            return
        outputs = dequantize(raw, info.outputs[0])
        result.outputs, result.samples = outputs, len(outputs)
        result.accuracy = top1_accuracy(outputs, y)


def arm_targets() -> list[ArmTarget]:
    """One target per ARM board profile; registered under the ``edgepipe.targets`` group."""
    return [ArmTarget(profile) for profile in arm_profiles().values()]
