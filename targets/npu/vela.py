"""Arm Ethos-U compilation through Vela (``ethos-u-vela``, Apache-2.0), run isolated in a subprocess.

Vela is never imported in this process: a truncated .tflite makes its C++ core segfault, so it runs
as ``python -m ethosu.vela`` in a child process, with a time limit, and every failure becomes one
sentence (a :class:`VelaError`, a TargetError).

    result = compile_tflite(model_bytes, VelaConfig("ethos-u55-128", "Alif_E7_HE_SRAM_MRAM",
                                                   "Shared_Sram", config_file=VELA_INI))
    result.compiled      # bytes of <name>_vela.tflite (NPU subgraphs are one ``ethos-u`` custom op each)
    result.summary       # dict: npu_ops, cpu_ops [{op, reason, tensor}], sram_bytes, flash_bytes, ...

Every number in ``summary`` is a Vela compiler estimate (see ``METHOD``); nothing runs on an NPU.
Failures raise ``VelaError`` whose message is one sentence.
"""

from __future__ import annotations

import csv
import functools
import io
import os
import re
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from edgecore.errors import TargetError
from edgecore.flatbuffer import read_ops

METHOD = ("Vela compiler estimates (ethos-u-vela {version}, {accelerator}, system config {system_config}, "
          "memory mode {memory_mode}): cycles and memory come from Vela's static performance model of the "
          "NPU and its AXI memories, not from running the model; CPU fallback ops are not timed by Vela")

ACCELERATORS = ("ethos-u55-32", "ethos-u55-64", "ethos-u55-128", "ethos-u55-256", "ethos-u65-256",
                "ethos-u65-512", "ethos-u85-128", "ethos-u85-256", "ethos-u85-512", "ethos-u85-1024",
                "ethos-u85-2048")
DEFAULT_TIMEOUT_S = 300.0
ETHOS_U_OP = "CUSTOM:ethos-u"  # how the compiled model names the NPU op (edgecore.flatbuffer)
VELA_INI = Path(__file__).resolve().parents[1] / "boards" / "npu" / "vela.ini"  # every section with its source


class VelaError(TargetError):
    """Vela could not compile the model; ``str(error)`` is one sentence."""


@dataclass(frozen=True)
class VelaConfig:
    """What Vela compiles for: accelerator, and a system config + memory mode from ``config_file``."""

    accelerator: str
    system_config: str
    memory_mode: str
    config_file: str | os.PathLike = VELA_INI
    optimise: str = "Performance"  # or "Size"
    arena_cache_size: int | None = None  # bytes; overrides the memory mode's arena_cache_size

    def args(self) -> list[str]:
        if self.accelerator not in ACCELERATORS:
            raise VelaError(f"Unknown Ethos-U accelerator config {self.accelerator!r}; "
                            f"Vela knows {', '.join(ACCELERATORS)}.")
        out = ["--accelerator-config", self.accelerator, "--config", str(self.config_file),
               "--system-config", self.system_config, "--memory-mode", self.memory_mode,
               "--optimise", self.optimise]
        if self.arena_cache_size is not None:
            out += ["--arena-cache-size", str(int(self.arena_cache_size))]
        return out


@dataclass
class VelaResult:
    compiled: bytes
    summary: dict
    per_op: list[dict] = field(default_factory=list)  # one row per Vela (lowered) op, from --verbose-performance
    stdout: str = ""


def vela_command(python: str | None = None) -> list[str]:
    """``python -m ethosu.vela`` (works wherever the wheel is installed; no console script needed)."""
    return [python or sys.executable, "-m", "ethosu.vela"]


@functools.lru_cache(maxsize=8)
def vela_version(python: str | None = None) -> str:
    """The installed ethos-u-vela version, asked of the interpreter that will run it."""
    try:
        done = subprocess.run(vela_command(python) + ["--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise VelaError(f"Vela could not be started ({exc}).") from None
    if done.returncode != 0:
        raise VelaError("Vela (ethos-u-vela) is not installed for this Python; run `make venv`, or `pip install ethos-u-vela==5.2.0`.")
    return done.stdout.strip()


def compile_tflite(model: bytes, config: VelaConfig, *, name: str = "model", python: str | None = None,
                   timeout_s: float = DEFAULT_TIMEOUT_S) -> VelaResult:
    """Compile ``model`` (.tflite bytes) with Vela in a subprocess and parse what it wrote."""
    version = vela_version(python)
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "model"
    where = f"for {config.accelerator} ({config.system_config}, {config.memory_mode})"
    with tempfile.TemporaryDirectory(prefix="edgepipe-vela-") as tmp:
        src, out = Path(tmp) / f"{name}.tflite", Path(tmp) / "out"
        src.write_bytes(model)
        cmd = vela_command(python) + [str(src), *config.args(), "--output-dir", str(out), "--verbose-performance"]
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONHASHSEED="0")
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=tmp, env=env)
        except subprocess.TimeoutExpired:
            raise VelaError(f"Vela {version} did not finish within {timeout_s:g} s {where}.") from None
        if done.returncode != 0:
            raise VelaError(f"Vela {version} failed {where}: {failure_reason(done.returncode, done.stdout, done.stderr)}.")
        compiled_path = out / f"{name}_vela.tflite"
        summaries = sorted(out.glob(f"{name}_summary_*.csv"))
        if not compiled_path.exists() or not summaries:
            raise VelaError(f"Vela {version} exited without writing its compiled model and summary {where}.")
        compiled = compiled_path.read_bytes()
        summary_row = _read_csv(summaries[0].read_text())[0]
        per_layer = out / f"{name}_per-layer.csv"
        per_op = _read_csv(per_layer.read_text()) if per_layer.exists() else []
    summary = parse_outputs(summary_row, done.stdout, per_op, compiled)
    summary.update(vela_version=version, accelerator=config.accelerator, system_config=config.system_config,
                   memory_mode=config.memory_mode,
                   method=METHOD.format(version=version, accelerator=config.accelerator,
                                        system_config=config.system_config, memory_mode=config.memory_mode))
    return VelaResult(compiled=compiled, summary=summary, per_op=[_per_op_row(r) for r in per_op],
                      stdout=done.stdout)


# --- failures -------------------------------------------------------------------------------------------

_KNOWN = (
    (re.compile(r"Failed to load TfLite model"), "the file is not a readable TFLite flatbuffer"),
    (re.compile(r"No networks defined via GraphAPI"), "the file is not a TFLite or TOSA network Vela can read"),
    (re.compile(r"cannot mmap an empty file"), "the model file is empty"),
    (re.compile(r"Section System_Config\.(\S+) not found"), "the config file has no system config {0}"),
    (re.compile(r"Section Memory_Mode\.(\S+) not found"), "the config file has no memory mode {0}"),
    (re.compile(r"Reading input file '([^']*)'"), "the Vela config file {0} cannot be read"),
)


def failure_reason(returncode: int, stdout: str, stderr: str) -> str:
    """The cause of a failed Vela run, as one clause (no trailing period)."""
    text = f"{stdout}\n{stderr}"
    reason = None
    for pattern, template in _KNOWN:
        found = pattern.search(text)
        if found:
            reason = template.format(*found.groups())
            break
    if reason is None:
        argparse_error = re.search(r"^vela: error: (.+)$", stderr, re.M)
        if argparse_error:
            reason = argparse_error.group(1)
        else:
            lines = [line.strip() for line in stderr.splitlines() if line.strip()]
            last = lines[-1] if lines else (stdout.strip().splitlines() or ["no message"])[-1]
            reason = re.sub(r"^[\w.]+(Error|Exception): ", "", last).strip("'\" ")
    if returncode < 0:
        try:
            sig = signal.Signals(-returncode).name
        except ValueError:
            sig = f"signal {-returncode}"
        reason = f"Vela crashed ({sig}); {reason}"
    reason = re.sub(r"\s+", " ", reason).rstrip(".")
    return reason[:300]


# --- parsing --------------------------------------------------------------------------------------------

_WARNING = re.compile(r"^Warning \(supported operators\) operator: (\S+), ofm: '(.*)'$")
_COUNT = re.compile(r"^(CPU|NPU) operators = (\d+) \(")

# Vela's per-layer "Original Operator" names -> TFLite builtin names where a plain CamelCase split is wrong.
_BUILTIN = {"Conv2D": "CONV_2D", "DepthwiseConv2D": "DEPTHWISE_CONV_2D", "TransposeConv2D": "TRANSPOSE_CONV",
            "MaxPool": "MAX_POOL_2D", "AvgPool": "AVERAGE_POOL_2D", "GatherV2": "GATHER", "Select": "SELECT_V2",
            "SelectV2": "SELECT_V2", "Sigmoid": "LOGISTIC", "ResizeBilinear": "RESIZE_BILINEAR",
            "BatchMatMul": "BATCH_MATMUL", "LeakyRelu": "LEAKY_RELU", "HardSwish": "HARD_SWISH",
            "Relu6": "RELU6", "Relu0To1": "RELU_0_TO_1", "ReluN1To1": "RELU_N1_TO_1"}


def builtin_name(vela_name: str) -> str:
    if vela_name in _BUILTIN:
        return _BUILTIN[vela_name]
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", vela_name).upper()


def parse_fallback_warnings(stdout: str) -> list[dict]:
    """Vela's stdout blocks ``Warning (supported operators) operator: OP, ofm: 'T'`` / ``Reason: ...``
    (and detail lines up to the next blank line), in the order printed."""
    found: list[dict] = []
    lines = stdout.splitlines()
    for i, line in enumerate(lines):
        head = _WARNING.match(line.strip())
        if not head:
            continue
        detail = []
        for nxt in lines[i + 1:]:
            if not nxt.strip() or _WARNING.match(nxt.strip()):
                break
            detail.append(nxt.strip())
        reason = " ".join(d[len("Reason: "):] if d.startswith("Reason: ") else d for d in detail)
        found.append({"op": head.group(1), "tensor": head.group(2), "reason": reason or "no reason given"})
    return found


def parse_outputs(summary: dict, stdout: str, per_layer: list[dict], compiled: bytes) -> dict:
    """One dict from Vela's summary CSV row, its stdout and its per-layer CSV."""
    counts = {}
    for line in stdout.splitlines():
        hit = _COUNT.match(line.strip())
        if hit:
            counts[hit.group(1)] = int(hit.group(2))
    warnings = parse_fallback_warnings(stdout)
    reasons = {w["tensor"]: w for w in warnings}
    cpu_ops = []
    for row in per_layer:
        if row.get("Target") != "CPU":
            continue
        tensor = row.get("Name", "").strip()
        warning = reasons.get(tensor)
        cpu_ops.append({"op": builtin_name(row.get("Original Operator", "?")), "tensor": tensor,
                        "reason": warning["reason"] if warning else
                        "not supported on the NPU (Vela printed no reason for this op)"})
    if not per_layer:  # no per-layer CSV: fall back to the warnings alone
        cpu_ops = [{"op": w["op"], "tensor": w["tensor"], "reason": w["reason"]} for w in warnings]

    def num(key: str) -> float:
        try:
            return float(summary.get(key, 0) or 0)
        except ValueError:
            return 0.0

    kib = lambda key: int(round(num(key) * 1024))  # Vela writes *_memory_used in KiB  # noqa: E731
    compiled_ops = [op.name for op in read_ops(compiled)]
    return {
        "npu_ops": counts.get("NPU", 0),  # Vela's count, after its own lowering (a SOFTMAX becomes ~25 NPU ops)
        "cpu_op_count": counts.get("CPU", len(cpu_ops)),
        "cpu_ops": cpu_ops,
        "npu_subgraphs": compiled_ops.count(ETHOS_U_OP),  # one ethos-u custom op per NPU partition
        "cpu_ops_in_compiled_model": sum(name != ETHOS_U_OP for name in compiled_ops),
        "sram_bytes": kib("sram_memory_used"),
        "flash_bytes": kib("off_chip_flash_memory_used"),
        "on_chip_flash_bytes": kib("on_chip_flash_memory_used"),  # where Sram_Only puts weights
        "dram_bytes": kib("dram_memory_used"),  # where Ethos-U65/U85 DRAM systems put weights
        "weights_area": summary.get("weights_storage_area", ""),
        "feature_map_area": summary.get("feature_map_storage_area", ""),
        "core_clock_hz": num("core_clock"),
        "arena_cache_size_bytes": int(num("arena_cache_size")),
        "cycles_npu": int(num("cycles_npu")),
        "cycles_total": int(num("cycles_total")),
        "cycles_sram_access": int(num("cycles_sram_access")),
        "cycles_dram_access": int(num("cycles_dram_access")),
        "cycles_on_chip_flash_access": int(num("cycles_on_chip_flash_access")),
        "cycles_off_chip_flash_access": int(num("cycles_off_chip_flash_access")),
        "inference_time_s": num("inference_time"),
        "nn_macs": int(num("nn_macs")),
        # bytes Vela expects each memory to move per inference (feature maps + weights, read + write)
        "bytes_moved": {"sram": int(num("sram_total_bytes")), "dram": int(num("dram_total_bytes")),
                        "on_chip_flash": int(num("on_chip_flash_total_bytes")),
                        "off_chip_flash": int(num("off_chip_flash_total_bytes"))},
        "total_original_weights": int(num("total_original_weights")),
        "total_npu_encoded_weights": int(num("total_npu_encoded_weights")),
    }


def _per_op_row(row: dict) -> dict:
    def as_int(key):
        try:
            return int(float(row.get(key) or 0))
        except ValueError:
            return 0
    return {"op": row.get("Original Operator", ""), "npu_op": row.get("NNG Operator", ""),
            "target": row.get("Target", ""), "cycles": as_int("Op Cycles"), "npu_cycles": as_int("NPU"),
            "macs": as_int("MAC Count"), "staging_bytes": as_int("Staging Usage"), "tensor": row.get("Name", "").strip()}


def _read_csv(text: str) -> list[dict]:
    return [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in csv.DictReader(io.StringIO(text))]


