"""The host target: this machine's CPU through LiteRT with the XNNPACK delegate."""

from __future__ import annotations

import logging
import os

import numpy as np

from edgecore.model_info import inspect_model, parameter_problems, quantization_problems
from edgecore.vocab import Capability, Kernels
from targets.base import RunOptions, Target, TargetResult
from targets.kernels import describe as describe_kernels
from targets.kernels import type_problems

from .litert_runner import evaluate, time_invocations
from .runtime import load_runtime

log = logging.getLogger(__name__)


def litert_problems(model: bytes) -> list[str]:
    """What LiteRT alone cannot run: its builtin kernels cover every op the converter emits
    without select TensorFlow (Flex) ops or custom ops."""
    info = inspect_model(model)
    flex = list(dict.fromkeys(op.name.removeprefix("CUSTOM:") for op in info.ops
                              if op.name.removeprefix("CUSTOM:").startswith("Flex")))
    problems = [f"it uses TensorFlow (Flex) ops ({', '.join(flex)}), which LiteRT alone does not run; convert the "
                "model without select TensorFlow ops (edgepipe's converter never adds them)"] if flex else []
    missing = type_problems(model, "litert")
    if missing:
        problems.append(f"{describe_kernels(missing, 'litert')}; choose another recipe or keep those layers int8")
    return problems + quantization_problems(model) + parameter_problems(model)


class HostTarget(Target):
    """This machine's CPU through LiteRT with the XNNPACK delegate."""

    name = "host"
    kernel_runtime = "litert"
    description = "this machine's CPU: LiteRT with the XNNPACK delegate"
    capabilities = frozenset({Capability.RUN, Capability.LATENCY, Capability.ACCURACY, Capability.XNNPACK,
                              Capability.FLOAT_OPS})

    def check(self, model: bytes) -> list[str]:
        return litert_problems(model)

    def run(self, model: bytes, x: np.ndarray | None, y: np.ndarray | None,
            options: RunOptions) -> TargetResult:
        info = inspect_model(model)
        threads = options.threads or os.cpu_count() or 1
        runtime = load_runtime()
        result = TargetResult(target=self.name, runtime=runtime.describe(), delegate=None, threads=threads)
        if x is not None and len(x):
            log.info("host: evaluating %d samples", len(x))
            outputs, batch = evaluate(model, info, x, kernels=Kernels.XNNPACK, threads=threads,
                                      batch_size=options.batch_size, label="host: evaluating")
            result.score(outputs, y, softmax=info.ends_in_softmax)
            result.details["eval_batch"] = batch
            sample = x[:1]
        else:
            sample = np.zeros((1, *info.inputs[0].shape[1:]), dtype=np.float32)
        log.info("host: timing %d runs after %d warm-up", options.runs, options.warmup)
        latency, delegated = time_invocations(model, info, sample, kernels=Kernels.XNNPACK, threads=threads,
                                              warmup=options.warmup, runs=options.runs)
        result.latency_ms = latency
        result.delegate = "XNNPACK" if delegated["partitions"] else None
        result.details["xnnpack"] = delegated
        return result
