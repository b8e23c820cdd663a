"""Emulated microcontroller targets: the model runs in TensorFlow Lite Micro here, and a board
profile turns its measured memory and per-op work into fit verdicts, latency and energy."""

from __future__ import annotations

import logging

import numpy as np

from edgecore.errors import TargetError, sentence
from edgecore.flatbuffer import read_graph, read_ops
from edgecore.metrics import step_difference, top1_accuracy
from edgecore.model_info import dequantize, inspect_model, quantization_problems, quantize
from edgecore.vocab import Capability, Kernels
from targets.base import DeployBundle, RunOptions, Target, TargetResult
from targets.cost_model import cycle_breakdown, dominant_class, int8_share, model_work, op_energy_mj
from targets.host.litert_runner import evaluate_raw
from targets.kernels import describe as describe_kernels
from targets.kernels import type_problems
from targets.profiles import BoardProfile, load_profiles, shared

from . import tflm
from .deploy import build_bundle
from .memory import measured_fit, static_fit
from .tflm_checks import preflight
from .trace import first_divergence

log = logging.getLogger(__name__)


class McuTarget(Target):
    """A microcontroller board: TFLM runs the model here, the board profile gives the answers."""

    kernel_runtime = "tflm"
    capabilities = frozenset({Capability.RUN, Capability.ACCURACY, Capability.ARENA, Capability.FIT,
                              Capability.ESTIMATED_LATENCY, Capability.ENERGY, Capability.DEPLOY})

    def __init__(self, profile: BoardProfile) -> None:
        self.profile = profile
        self.name = profile.name
        self.description = f"{profile.core}, {profile.title}: TFLM here, board-model estimates"

    def summary(self) -> dict:
        return {**super().summary(), **self.profile.summary()}

    def check(self, model: bytes) -> list[str]:
        """Ops TFLM has no kernel for, and quantization or storage that would abort or fool TFLM; none
        for a model the board cannot hold, whose fit verdict (with the numbers) ``run`` gives instead."""
        ops = read_ops(model)
        if not static_fit(self.profile, model, ops, read_graph(bytes(model)))["fits"]:
            return []
        return self.tflm_problems(model, ops)

    @staticmethod
    def tflm_problems(model: bytes, ops) -> list[str]:
        """What stops TFLM from running the model at all (pre-flight, no interpreter)."""
        problems = []
        missing = tflm.unsupported_ops(ops)
        if missing:
            problems.append(f"TensorFlow Lite Micro has no kernel for {tflm.describe_unsupported(missing)}; "
                            "replace those layers or pick a target that runs them")
        # A broken scale makes the preflight's own messages (about the same tensors) misleading: it goes first.
        specific = quantization_problems(model) or preflight(ops)[0]
        if specific:  # they name the same ops the kernel table would, with the cause and the fix
            return problems + specific
        wrong_type = type_problems(ops, "tflm")
        if wrong_type:
            problems.append(f"{describe_kernels(wrong_type, 'tflm')}; keep those layers int8 (--int16-layers "
                            "leaves them out) or pick a target that runs them")
        return problems

    def run(self, model: bytes, x: np.ndarray | None, y: np.ndarray | None, options: RunOptions) -> TargetResult:
        """Static fit first, then TFLM: verified arena, accuracy, agreement with the reference kernels."""
        info, ops, graph = inspect_model(model), read_ops(model), read_graph(bytes(model))
        result = TargetResult(target=self.name, runtime=f"tflite-micro {tflm.tflm_version()}", delegate=None,
                              threads=1)
        result.details["unsupported_ops"] = [p["op"] for p in tflm.unsupported_ops(ops)]
        warnings = preflight(ops)[1]
        if warnings:
            result.details["tflm_warnings"] = warnings
            for warning in warnings:
                log.warning("%s: %s", self.name, warning)
        static = static_fit(self.profile, model, ops, graph)
        result.details.update(static)
        problems = [] if static["fits"] else self.tflm_problems(model, ops)
        if problems:  # too big, and TFLM would abort or refuse it too: the verdict, and why TFLM was not started
            result.details["tflm_error"] = sentence(f"pre-flight, TFLM not started: {'; '.join(problems)}")
            log.warning("%s: %s", self.name, result.details["tflm_error"])
        else:
            self.run_tflm(result, model, info, ops, static, x, y)
        if not result.details["fits"]:
            log.warning("%s: does not fit: %s", self.name, "; ".join(result.details["fit_reasons"]))
        result.details.update(self.estimates(model, ops, info))
        result.energy_mj = result.details.pop("energy_mj")
        return result

    def run_tflm(self, result: TargetResult, model: bytes, info, ops, static: dict, x, y) -> None:
        """TFLM's verified arena and outputs into ``result``; when the board cannot hold the model
        anyway, a TFLM failure is noted (``tflm_error``) and the static verdict stands."""
        if x is not None and len(x):
            log.info("%s: running %d samples in TensorFlow Lite Micro", self.name, len(x))
        try:
            arena, evaluated = tflm.run_isolated(model, info, x, live_peak=static["live_tensor_peak_bytes"])
        except TargetError as exc:
            if static["fits"]:
                raise
            result.details["tflm_error"] = str(exc)
            log.warning("%s: %s", self.name, exc)
            return
        result.details.update(measured_fit(self.profile, ops, arena, static))
        if evaluated is not None:
            raw, outputs = evaluated
            result.score(outputs, y, softmax=info.ends_in_softmax)
            reference = self.compare_with_reference(model, info, x, raw, y)
            if reference.pop("worst_sample", None) is not None and reference["max_diff_steps"] > 1:
                worst = int(reference["worst_row"])
                try:
                    reference["first_divergence"] = first_divergence(
                        model, quantize(x[worst:worst + 1], info.inputs[0]), arena.total)
                except TargetError as exc:  # the trace is extra: its failure never costs the run
                    reference["first_divergence"] = {"error": str(exc)}
            reference.pop("worst_row", None)
            result.details["reference"] = reference

    def deploy(self, model: bytes, *, tool_version: str) -> DeployBundle:
        """The TFLM firmware bundle, with ``kTensorArenaSize`` from the verified arena plus margin.

        Only for a model whose header can say how to feed it and read it: one input and one output,
        each integer (quantized with a positive scale, or token ids taken as they are); a float
        model is refused, since its header's scale and zero point would mean nothing."""
        info, ops = inspect_model(model), read_ops(model)
        problems = self.tflm_problems(model, ops)  # check() lets these through for a model too big for the board
        if problems:
            raise TargetError(f"cannot write a {self.name} bundle: {'; '.join(problems)}.")
        if len(info.inputs) != 1 or len(info.outputs) != 1:
            raise TargetError(f"the deploy bundle describes one input and one output, and this model has "
                              f"{len(info.inputs)} inputs and {len(info.outputs)} outputs; export a model with one of "
                              "each for the firmware.")
        for role, tensor in (("input", info.inputs[0]), ("output", info.outputs[0])):
            if np.dtype(tensor.dtype).kind not in "iu":
                raise TargetError(f"the model's {role} is {tensor.dtype}, and the deploy bundle is for integer "
                                  f"models (its header gives the {role}'s int8 scale and zero point); convert the "
                                  "model to full int8 first (`edgepipe convert MODEL --calib DATA`, the default "
                                  "recipe, without --float-io) and deploy that .tflite.")
        static = static_fit(self.profile, model, ops, read_graph(bytes(model)))
        arena, _ = tflm.run_isolated(model, info, None, live_peak=static["live_tensor_peak_bytes"])
        memory = measured_fit(self.profile, ops, arena, static)
        return build_bundle(model, info, target=self.name, arena_bytes=memory["arena_device_bytes"],
                            arena_measured=arena.total, tool_version=tool_version,
                            facts={key: memory[key] for key in ("fits", "fit_reasons", "ram_bytes", "flash_bytes",
                                                                "arena_recorded_bytes")})

    def estimates(self, model: bytes, ops, info) -> dict:
        work = model_work(ops)
        table, method = self.profile.cycle_model()
        by_class = cycle_breakdown(work, table)
        cycles = sum(by_class.values())
        dominant, share = dominant_class(work, table)
        latency_ms = cycles / self.profile.clock_hz * 1e3
        int8 = info.inputs[0].dtype in ("int8", "int16") or work.float_macs == 0
        board_mj = latency_ms * self.profile.active_power_mw * 1e-3
        return {
            "estimated_cycles": round(cycles),
            "estimated_latency_ms": round(latency_ms, 3),
            "estimated_cycles_by_class": {kind: round(c) for kind, c in by_class.items() if c},
            "latency_method": f"cycle model per op class, {method}",
            "latency_uncertainty": self.profile.latency_uncertainty(dominant, share, int8_share(work, table)),
            "energy_mj": {
                "value": round(board_mj, 5),
                "method": "estimated-latency x board-power",
                "board_power_mw": self.profile.active_power_mw,
                "op_energy_model_mj": round(op_energy_mj(work, shared("energy"), int8=int8), 6),
                "op_energy_method": "op-energy-model (Horowitz 45 nm: MACs x (mult+add) + bytes moved x SRAM access)",
            },
            "work": work.to_dict(),
        }

    @staticmethod
    def compare_with_reference(model: bytes, info, x: np.ndarray, raw: np.ndarray, y) -> dict:
        """TFLM vs LiteRT's reference kernels on the same quantized inputs, in quantization steps
        (float outputs: relative to the largest reference output)."""
        reference, _ = evaluate_raw(model, info, quantize(x, info.inputs[0]), kernels=Kernels.REFERENCE, threads=1,
                                    batch_size=64)
        steps = step_difference(raw, reference)
        target = info.outputs[0]
        if not target.quantized or np.dtype(target.dtype).kind == "f":
            steps /= max(float(np.max(np.abs(reference))), 1e-12)
        if raw.ndim == 3:  # a sequence model: per token
            agree = np.argmax(raw, axis=-1) == np.argmax(reference, axis=-1)
        else:
            agree = np.argmax(raw.reshape(len(raw), -1), axis=1) == np.argmax(reference.reshape(len(reference), -1), axis=1)
        per_sample = steps.reshape(len(steps), -1).max(axis=1)
        return {
            "runtime": "litert reference kernels",
            "worst_sample": target.quantized and np.dtype(target.dtype).kind != "f",  # traceable in steps
            "worst_row": int(np.argmax(per_sample)),
            "max_diff_steps": float(steps.max()),
            "identical_outputs": float(np.mean(steps.reshape(len(steps), -1).max(axis=1) == 0)),
            "top1_agreement": float(np.mean(agree)),
            "accuracy": top1_accuracy(dequantize(reference, target), y),
        }


def mcu_targets() -> list[McuTarget]:
    """One target per board profile; registered under the ``edgepipe.targets`` entry point group."""
    return [McuTarget(profile) for profile in load_profiles().values()]
