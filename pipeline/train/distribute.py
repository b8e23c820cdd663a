"""Quantization-aware training on more than one device or machine, on TensorFlow's own engine.

* ``default``: one device.
* ``mirrored``: ``tf.distribute.MirroredStrategy`` over the local GPUs; with none, the CPU is
  split into two logical devices (``tf.config.set_logical_device_configuration``), so the same
  code path runs, and is tested, on a CPU-only machine.
* ``multi-worker``: ``tf.distribute.MultiWorkerMirroredStrategy`` configured by ``TF_CONFIG``,
  the way a cluster manager (Kubernetes, a TF job operator) launches workers: every worker runs
  the same command with its own ``TF_CONFIG``; the chief (task ``chief``, else ``worker`` 0)
  writes the checkpoints, the artifacts and the report; the other workers train and leave.

The batch size is the global batch: each step splits it across all replicas.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import UsageError
from pipeline.frontend.keras_compat import CPU_REPLICAS, MULTI_WORKER, started_strategy
from pipeline.vocab import Strategy


def tf_config() -> dict | None:
    """The parsed ``TF_CONFIG``, if set; a UsageError if it is not valid JSON."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        config = json.loads(raw)
        config["cluster"], config["task"]["type"], config["task"]["index"]
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"TF_CONFIG is not a cluster description ({exc}); set it to JSON such as "
                         '{"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", "index": 0}}.'
                         ) from exc
    return config


def is_chief(strategy: Strategy) -> bool:
    """Whether this process writes: always, unless it is a non-chief worker of a multi-worker run."""
    if strategy is not Strategy.MULTI_WORKER:
        return True
    config = tf_config()
    if config is None:
        raise UsageError("--strategy multi-worker is configured by TF_CONFIG; set it in every worker's environment "
                         "(see the README: Quantization-aware training on several machines).")
    task = config["task"]
    return task["type"] == "chief" or (task["type"] == "worker" and int(task["index"]) == 0
                                       and "chief" not in config["cluster"])


@contextlib.contextmanager
def prepared(strategy: Strategy | None) -> Iterator[None]:
    """Before TensorFlow starts: ask for two logical CPUs when mirroring without GPUs, or for the
    collective ops multi-worker training needs (TensorFlow sets both up only at start-up). The
    request is made through the environment of the worker started inside the block, and taken back
    when the block ends, so later workers of the same process start as usual."""
    saved = {name: os.environ.get(name) for name in (CPU_REPLICAS, MULTI_WORKER)}
    try:
        if strategy is Strategy.MIRRORED:
            os.environ.setdefault(CPU_REPLICAS, "2")
        if strategy is Strategy.MULTI_WORKER:
            is_chief(strategy)  # TF_CONFIG must be there
            os.environ[MULTI_WORKER] = "1"
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def make_strategy(tf, strategy: Strategy):
    """The ``tf.distribute`` strategy for ``strategy``."""
    if strategy is Strategy.MIRRORED:
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices=devices)
    if strategy is Strategy.MULTI_WORKER:
        started = started_strategy()
        if started is None:
            raise UsageError("multi-worker training must be set up before TensorFlow starts; run it through "
                             "`edgepipe qat` or api.convert, which do, with TF_CONFIG set.")
        return started
    return tf.distribute.get_strategy()


def checkpoint_folder(folder: Path, strategy: Strategy) -> tuple[Path, bool]:
    """Where this process saves a checkpoint, and whether it is the real one: every worker of a
    multi-worker run must save (saving runs collective ops), but only the chief into ``folder``;
    the others save into a temporary folder that is removed."""
    if is_chief(strategy):
        return folder, True
    return Path(tempfile.mkdtemp(prefix="edgepipe-worker-checkpoint-")), False


def discard(folder: Path, real: bool) -> None:
    if not real:
        shutil.rmtree(folder, ignore_errors=True)
