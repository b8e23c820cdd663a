"""Run the device runner under qemu-aarch64 with the aarch64 sysroot built by
``emulation/build-arm64.sh`` (``make arm-emulator``), optionally counting instructions."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from edgecore.errors import TargetError
from targets.host import device_runner

SITE = "/opt/edgepipe/site-packages"  # inside the sysroot


def cache_dir() -> Path:
    """Where ``make arm-emulator`` puts the sysroot, wheels and plugin."""
    return Path(os.environ.get("EDGEPIPE_ARM_CACHE", Path.home() / ".cache" / "edgepipe" / "arm64"))


def ensure_ready() -> Path:
    """The emulator cache, or a TargetError naming the make target that builds it."""
    cache = cache_dir()
    if not (cache / ".complete").exists() or shutil.which("qemu-aarch64") is None:
        raise TargetError(
            f"the arm64 emulator is not built in {cache}; run `make arm-emulator` once "
            "(it installs qemu-user and builds the aarch64 sysroot and the instruction-count plugin)."
        )
    return cache


def run(model: bytes, inputs: np.ndarray | None, *, cpu: str, threads: int, warmup: int, runs: int,
        count: int, timeout: float = 1800) -> tuple[dict, np.ndarray | None, list[int]]:
    """The runner's JSON, the raw outputs (when ``inputs``), and the instructions counted for each
    of ``count`` marked invokes. Never ``-cpu max``: its SME emulation makes XNNPACK int8 wrong."""
    cache = ensure_ready()
    sysroot = cache / "sysroot"
    with tempfile.TemporaryDirectory(prefix="edgepipe-qemu-") as folder:
        work = Path(folder)
        (work / "model.tflite").write_bytes(model)
        shutil.copy(device_runner.__file__, work / "device_runner.py")
        args = ["--model", str(work / "model.tflite"), "--threads", str(threads), "--warmup", str(warmup),
                "--runs", str(runs), "--count", str(count)]
        if inputs is not None:
            np.save(work / "inputs.npy", inputs)
            args += ["--inputs", str(work / "inputs.npy"), "--outputs", str(work / "outputs.npy")]
        command = ["qemu-aarch64", "-L", str(sysroot), "-cpu", cpu]
        if count:
            command += ["-plugin", f"{cache / 'insn_count.so'},out={work / 'counts.txt'}"]
        command += [str(sysroot / "usr" / "bin" / "python3.11"), str(work / "device_runner.py"), *args]
        # A fixed, minimal environment: instruction counts must repeat exactly run to run.
        env = {"PYTHONHASHSEED": "0", "PYTHONPATH": SITE, "PYTHONDONTWRITEBYTECODE": "1", "LC_ALL": "C",
               "PATH": "/usr/bin:/bin"}
        try:
            done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise TargetError(f"the emulated run took longer than {timeout:.0f} s; use a smaller --eval set.") from exc
        if done.returncode != 0:
            detail = (done.stdout.strip() + " " + done.stderr.strip())[-600:]
            raise TargetError(f"the emulated aarch64 run failed (exit {done.returncode}): {detail}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        raw = np.load(work / "outputs.npy") if inputs is not None else None
        counts = [int(line) for line in (work / "counts.txt").read_text().split()] if count else []
    return result, raw, counts
