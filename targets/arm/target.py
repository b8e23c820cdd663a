"""Raspberry Pi / ARM Linux targets: on the device itself, over SSH, or emulated here under QEMU.

On the device (edgepipe installed on the Pi, no TensorFlow needed) the model runs in-process;
``--host`` runs the self-contained device runner on a Pi over SSH; ``--emulate`` runs the aarch64
build of LiteRT with XNNPACK under qemu-aarch64, checks its int8 outputs are bit-identical to the
host's, and counts guest instructions per inference, which repeat exactly run to run. Emulated
time says nothing about real speed, so latency there is an estimate from the counted instructions,
the model's op count and precision, and the thread count, with constants fitted to published
Raspberry Pi 4 measurements (``calibration_data/calibrate_arm.py``; see :class:`LatencyModel`).
"""

from __future__ import annotations

import functools
import logging
import platform
import tomllib
from dataclasses import dataclass

import numpy as np

from edgecore.flatbuffer import read_ops
from edgecore.metrics import latency_summary, step_difference
from edgecore.model_info import dequantize, inspect_model, quantize
from edgecore.vocab import Capability, Kernels
from targets.base import RunOptions, Target, TargetResult
from targets.cost_model import model_work
from targets.host.litert_runner import evaluate_raw, time_invocations
from targets.host.runtime import load_runtime
from targets.host.target import litert_problems
from targets.profiles import BOARDS_DIR, Profile

from . import emulator, ssh

log = logging.getLogger(__name__)
COUNTED_INVOKES = 4
ARM_DIR = BOARDS_DIR / "arm"
PRECISIONS = ("float32", "int8")


@dataclass(frozen=True)
class LatencyModel:
    """Instructions counted under QEMU (one thread) -> latency on the board with ``threads`` threads:

    ``t(T) = cpi[p] * I / f / S_p(T) + [T > 1] * sync * N / f``, ``S_p(T) = T / (1 + sigma[p] * (T - 1))``

    ``I`` guest instructions per inference, ``N`` ops (cost model count), ``f`` the clock, ``p`` the
    precision (float32 and int8 constants blended by the share of float MACs). ``cpi`` is cycles
    per counted instruction on one core; ``sigma`` the share of the work that does not divide over
    cores (the memory system they share); ``sync`` the cycles each op costs to hand out to and
    gather from the thread pool. Constants and their leave-one-out errors come from ``fit``, the
    data file ``calibration_data/calibrate_arm.py`` writes."""

    cpi: dict[str, float]
    sigma: dict[str, float]
    sync_cycles_per_op: float
    clock_hz: float
    cores: int
    fit: dict
    scaled_by: float | None = None  # per-instruction speedup over the fitted board, when scaled
    scale_source: str = ""

    def speedup(self, threads: int, float_share: float) -> float:
        used = max(1, min(threads, self.cores))
        sigma = float_share * self.sigma["float32"] + (1 - float_share) * self.sigma["int8"]
        return used / (1 + sigma * (used - 1))

    def estimate_ms(self, instructions: int, ops: int, float_share: float, threads: int) -> float:
        cpi = float_share * self.cpi["float32"] + (1 - float_share) * self.cpi["int8"]
        work = cpi * instructions / self.speedup(threads, float_share)
        sync = self.sync_cycles_per_op * ops if threads > 1 else 0.0
        return (work + sync) / self.clock_hz * 1e3

    def uncertainty(self, threads: int, float_share: float) -> dict:
        """Leave-one-out errors behind an estimate at ``threads`` threads (see calibrate_arm.py)."""
        loo, precision = self.fit["loo"], "float32" if float_share >= 0.5 else "int8"
        figures = ", ".join(f"{f['id']} {f['latency_ms']:g} ms" for f in self.fit["figures"])
        if min(threads, self.cores) == 4:  # the thread count of every level figure
            errors, worst = dict(loo["level"]), loo["max_abs_pct"]["threads_n"]
            note = (f"leave-one-out error of the 4-thread estimate across the published figures the fit uses "
                    f"(each left out in turn and predicted from the others): {figures}")
        else:
            errors, worst = dict(loo["threads"][precision]), loo["max_abs_pct"]["threads_1"][precision]
            note = (f"no published {threads}-thread figure is fitted (see not_fitted_error_pct): this estimate is the "
                    f"fitted 4-thread level carried to {threads} thread(s) by the fitted {precision} thread scaling, "
                    f"so its error combines the 4-thread leave-one-out errors with these: each {precision} thread "
                    f"sweep left out in turn and its 1-thread time predicted from its own 4-thread time. The bound "
                    f"is for 1 thread. Level figures: {figures}")
        result = {"loo_max_abs_error_pct": worst, "loo_error_pct": errors, "scaled": self.scaled_by is not None,
                  "method": note, "not_fitted_error_pct": dict(self.fit.get("not_fitted", {}))}
        if self.scaled_by is not None:
            result["method"] = (f"scaled from the {self.fit['board']} fit by {self.scaled_by:g}x per instruction "
                                f"({self.scale_source}); not validated against a published figure for this board; "
                                f"the errors are those of the {self.fit['board']} fit: " + note)
        return result


@functools.lru_cache(maxsize=None)
def fitted_data(name: str) -> dict:
    """A fitted-constants file under ``targets/boards/arm`` (written by calibrate_arm.py)."""
    return tomllib.loads((ARM_DIR / f"{name}.toml").read_text())


@dataclass(frozen=True)
class ArmProfile(Profile):
    """A Raspberry Pi / ARM Linux board profile (clock, cores, power, QEMU CPU, latency model)."""

    qemu_cpu: str = "cortex-a72"

    def power_w(self, threads: int) -> float:
        """Board power with ``threads`` cores busy: idle plus that share of the load increase."""
        busy = min(threads, int(self.value("cores"))) / self.value("cores")
        return self.value("idle_power_w") + busy * (self.value("load_power_w") - self.value("idle_power_w"))

    def latency_model(self) -> LatencyModel:
        """The fitted model (``fitted = FILE``) or one scaled from another board's fit
        (``base = FILE``, ``per_instruction_speedup``)."""
        spec = self.data["latency_model"]
        data = fitted_data(spec.get("fitted") or spec["base"])
        constants, speedup = data["constants"], 1.0 if "fitted" in spec else float(spec["per_instruction_speedup"])
        return LatencyModel(cpi={p: constants["cycles_per_instruction"][p] / speedup for p in PRECISIONS},
                            sigma=dict(constants["thread_sigma"]), sync_cycles_per_op=constants["sync_cycles_per_op"],
                            clock_hz=self.value("clock_hz"), cores=int(self.value("cores")), fit=data,
                            scaled_by=None if "fitted" in spec else speedup, scale_source=spec.get("source", ""))


@functools.lru_cache(maxsize=None)
def arm_profiles() -> dict[str, ArmProfile]:
    """Every ARM board profile under ``targets/boards/arm``, by name (fitted-constant files skipped)."""
    profiles = {}
    for path in sorted(ARM_DIR.glob("*.toml")):
        data = tomllib.loads(path.read_text())
        if "name" not in data:  # a fitted-constants file, not a board
            continue
        profiles[data["name"]] = ArmProfile(name=data["name"], title=data["title"], core=data["core"], data=data,
                                            qemu_cpu=data["qemu_cpu"])
    return profiles


class ArmTarget(Target):
    """An ARM Linux board: on the device, over SSH, or emulated here under QEMU."""

    kernel_runtime = "litert"
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
        threads = options.threads or int(self.profile.value("threads"))
        estimates = self.estimates(model, instructions, threads)
        result.details.update({
            "emulated": True, "qemu_cpu": cpu, "xnnpack": runner["delegation"],
            "instructions_per_inference": instructions, "instruction_counts": counts,
            "instruction_spread_within_run": round((max(counts) - min(counts)) / max(min(counts), 1), 6),
            **estimates, "emulated_wall_ms_p50": round(float(np.median(runner["latency_ns"])) / 1e6, 3),
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
        power = self.profile.power_w(threads)
        result.energy_mj = {"value": round(estimates["estimated_latency_ms"] * power, 5),
                            "method": "estimated-latency x board-power", "board_power_w": round(power, 3)}
        return result

    def estimates(self, model: bytes, instructions: int, threads: int) -> dict:
        """Latency estimates for one and ``threads`` threads from the instructions counted per
        inference (one thread, under QEMU), with their leave-one-out errors."""
        latency = self.profile.latency_model()
        work = model_work(read_ops(model))
        share = work.float_macs / work.total_macs if work.total_macs else 1.0
        by_threads = {str(t): round(latency.estimate_ms(instructions, work.ops, share, t), 4)
                      for t in sorted({1, threads})}
        scaled = f", scaled from the {latency.fit['board']} fit" if latency.scaled_by is not None else ""
        return {
            "estimated_latency_ms": by_threads[str(threads)], "estimated_threads": threads,
            "estimated_latency_ms_by_threads": by_threads,
            "latency_method": (f"{threads} threads: guest instructions x fitted cycles per instruction (float share "
                               f"{share:.2f}), divided over threads by the fitted scaling, plus a per-op thread-pool "
                               f"cost ({work.ops} ops), at {latency.clock_hz / 1e9:g} GHz; fitted to published "
                               f"Raspberry Pi 4 XNNPACK figures{scaled}; an estimate"),
            "latency_uncertainty": latency.uncertainty(threads, share),
            "latency_uncertainty_by_threads": {t: latency.uncertainty(int(t), share) for t in by_threads},
        }

    @staticmethod
    def _outputs(result: TargetResult, info, raw, y) -> None:
        if raw is None:
            return
        result.score(dequantize(raw, info.outputs[0]), y, softmax=info.ends_in_softmax)


def arm_targets() -> list[ArmTarget]:
    """One target per ARM board profile; registered under the ``edgepipe.targets`` group."""
    return [ArmTarget(profile) for profile in arm_profiles().values()]
