"""The target interface: ``check``, ``run``, ``capabilities`` (and ``deploy`` where offered),
the options a run takes and what it returns."""

from __future__ import annotations

import abc
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from edgecore.errors import UsageError
from edgecore.metrics import perplexity, top1_accuracy
from edgecore.vocab import Capability


def _known(cls, data: dict[str, Any], what: str) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UsageError(f"{what} has unknown keys {', '.join(unknown)}; known keys: {', '.join(sorted(names))}.")
    return dict(data)


# LiteRT takes any thread count, but XNNPACK's thread pool starts that many threads without checking
# that each started, and the process dies by SIGSEGV when the system cannot make them (32,768 on a
# 2-core test machine); no host or board has use for more than this.
MAX_THREADS = 1024

_HOST = re.compile(r"(?:[A-Za-z0-9_][A-Za-z0-9._-]*@)?(?:[A-Za-z0-9][A-Za-z0-9._-]*|\[[0-9A-Fa-f:.]+\])")


@dataclass(frozen=True)
class SshOptions:
    """Where a device target runs over SSH: ``host`` is ``[USER@]HOST``."""

    host: str
    port: int | None = None
    identity: str | None = None
    known_hosts: str | None = None
    python: str = "python3"
    timeout: int = 15  # seconds to connect
    budget: float = 3600.0  # seconds for the whole run on the device (copy, run, fetch, clean up)

    def __post_init__(self) -> None:
        # ssh is called with a list of arguments and "--" before the host, but the host also must not
        # smuggle an option or a shell word: letters, digits and . _ - only (IPv6 in brackets).
        if not isinstance(self.host, str) or not _HOST.fullmatch(self.host):
            raise UsageError(f"--host {self.host!r} is not a host name; give USER@HOST (letters, digits, '.', '_' "
                             "and '-', not starting with '-').")
        if self.port is not None and not 1 <= int(self.port) <= 65535:
            raise UsageError(f"--port {self.port} is not a TCP port; give a number from 1 to 65535.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SshOptions":
        return cls(**_known(cls, data, "ssh options"))


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

    def __post_init__(self) -> None:
        for name, low in (("threads", 1), ("warmup", 0), ("runs", 1), ("batch_size", 1)):
            value = getattr(self, name)
            if value is None and name == "threads":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise UsageError(f"run option {name} must be a whole number of at least {low}, not {value!r}.")
        if self.threads is not None and self.threads > MAX_THREADS:
            raise UsageError(f"run option threads must be a whole number from 1 to {MAX_THREADS}, not {self.threads}; "
                             "more threads than cores gains nothing.")
        if isinstance(self.ssh, dict):
            object.__setattr__(self, "ssh", SshOptions.from_dict(self.ssh))
        if self.emulate and self.ssh is not None:
            raise UsageError("choose either --emulate or --host, not both.")

    @property
    def needs(self) -> dict[Capability, str]:
        """The capabilities these options ask of a target, with the option that asks."""
        wanted = {}
        if self.emulate:
            wanted[Capability.EMULATE] = "--emulate"
        if self.ssh is not None:
            wanted[Capability.SSH] = "--host"
        return wanted

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ssh"] = self.ssh.to_dict() if self.ssh else None
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunOptions":
        return cls(**_known(cls, data, "run options"))


@dataclass
class TargetResult:
    """What a target reports. ``outputs`` (dequantized, one row per eval sample) stays in memory."""

    target: str
    runtime: str
    delegate: str | None
    threads: int | None
    accuracy: float | None = None  # top-1 (per token for sequence outputs)
    samples: int = 0
    latency_ms: dict[str, float] | None = None
    energy_mj: dict[str, Any] | None = None
    details: dict[str, Any] = field(default_factory=dict)
    outputs: np.ndarray | None = field(default=None, repr=False)
    perplexity: float | None = None  # sequence models: outputs [N, T, V] with labels [N, T]

    def score(self, outputs: np.ndarray, labels: np.ndarray | None, *, softmax: bool | None = None) -> None:
        """Keep the dequantized ``outputs`` and judge them: accuracy, and perplexity where it
        applies (``softmax``: the model ends in a softmax, so outputs are probabilities; an int8
        softmax's do not sum to exactly 1, so this is read from the graph, not guessed)."""
        self.outputs, self.samples = outputs, len(outputs)
        self.accuracy = top1_accuracy(outputs, labels)
        self.perplexity = perplexity(outputs, labels, probabilities=True if softmax else None)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "runtime": self.runtime, "delegate": self.delegate, "threads": self.threads,
            "accuracy": self.accuracy, "samples": self.samples, "latency_ms": self.latency_ms,
            "energy_mj": self.energy_mj,
        }
        if self.perplexity is not None:
            out["perplexity"] = self.perplexity
        out.update(self.details)
        return out


@dataclass(frozen=True)
class DeployBundle:
    """Files a firmware project includes as they are, and a manifest of the facts behind them."""

    files: dict[str, bytes]
    manifest: dict[str, Any]


class Target(abc.ABC):
    """A place a ``.tflite`` runs. Register instances with :func:`targets.register_target` (or the
    ``edgepipe.targets`` entry point group, for plugins)."""

    name: str = ""
    description: str = ""
    capabilities: frozenset[Capability] = frozenset()
    kernel_runtime: str | None = None  # whose kernels run the ops: a [section] of targets/kernels.toml

    def summary(self) -> dict[str, Any]:
        """One row for ``edgepipe targets``."""
        return {"name": self.name, "description": self.description,
                "capabilities": sorted(str(c) for c in self.capabilities)}

    @abc.abstractmethod
    def check(self, model: bytes) -> list[str]:
        """Problems that stop ``model`` from running here (empty when it can run)."""

    @abc.abstractmethod
    def run(self, model: bytes, x: np.ndarray | None, y: np.ndarray | None,
            options: RunOptions) -> TargetResult:
        """Run ``model`` on preprocessed float inputs ``x`` (labels ``y``) and time it."""

    def deploy(self, model: bytes, *, tool_version: str) -> DeployBundle:
        """The firmware bundle for ``model`` (targets with :attr:`Capability.DEPLOY` only)."""
        raise UsageError(f"target {self.name} has no deploy bundle.")
