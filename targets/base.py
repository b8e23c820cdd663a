"""The target interface: ``check``, ``run`` and ``capabilities``, and what a run returns."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SshOptions:
    """Where a device target runs over SSH: ``host`` is ``[USER@]HOST``."""

    host: str
    port: int | None = None
    identity: str | None = None
    known_hosts: str | None = None
    python: str = "python3"
    timeout: int = 15


@dataclass(frozen=True)
class RunOptions:
    """How to run: threads (None = the target's default), warm-up and timed runs, eval batch,
    and for ARM targets whether to emulate here or which device to reach over SSH."""

    threads: int | None = None
    warmup: int = 5
    runs: int = 50
    batch_size: int = 64
    emulate: bool = False
    ssh: SshOptions | None = None


@dataclass
class TargetResult:
    """What a target reports. ``outputs`` (dequantized, one row per eval sample) stays in memory."""

    target: str
    runtime: str
    delegate: str | None
    threads: int | None
    accuracy: float | None = None
    samples: int = 0
    latency_ms: dict[str, float] | None = None
    energy_mj: dict[str, Any] | None = None
    details: dict[str, Any] = field(default_factory=dict)
    outputs: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "runtime": self.runtime, "delegate": self.delegate, "threads": self.threads,
            "accuracy": self.accuracy, "samples": self.samples, "latency_ms": self.latency_ms,
            "energy_mj": self.energy_mj,
        }
        out.update(self.details)
        return out


class Target(abc.ABC):
    """A place a ``.tflite`` runs. Implementations register under the ``edgepipe.targets`` group."""

    name: str = ""
    description: str = ""
    capabilities: frozenset[str] = frozenset()

    def summary(self) -> dict[str, Any]:
        """One row for ``edgepipe targets``."""
        return {"name": self.name, "description": self.description,
                "capabilities": sorted(self.capabilities)}

    @abc.abstractmethod
    def check(self, model: bytes) -> list[str]:
        """Problems that stop ``model`` from running here (empty when it can run)."""

    @abc.abstractmethod
    def run(self, model: bytes, x: np.ndarray | None, y: np.ndarray | None,
            options: RunOptions) -> TargetResult:
        """Run ``model`` on preprocessed float inputs ``x`` (labels ``y``) and time it."""
