"""Validation across a fleet: the same model and data on every device of an inventory, in
parallel, each device's outcome a row (a device that fails is a row with its reason, never a
failure of the others), and a summary: latency spread, and whether every device gave the same
outputs bit for bit.

An inventory (TOML)::

    [[device]]
    name = "kitchen"              # how the report calls it
    host = "pi@10.0.0.5"          # USER@HOST
    port = 22                     # optional
    identity = "~/.ssh/id_ed25519"   # optional: the private key
    known_hosts = "~/.ssh/known_hosts"  # optional: to check the device's host key against
    target = "rpi4"               # optional: the board profile [default: --target]
    python = "python3"            # optional: the device's Python with numpy and LiteRT
"""

from __future__ import annotations

import hashlib
import logging
import statistics
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecore.progress import progress
from pipeline.core.config import read_toml
from pipeline.errors import EdgepipeError, UsageError
from targets import Capability, RunOptions, SshOptions, get_target, require

log = logging.getLogger("edgepipe")
KEYS = {"name", "host", "port", "identity", "known_hosts", "target", "python"}


@dataclass(frozen=True)
class Device:
    """One device of the inventory."""

    name: str
    host: str
    target: str
    port: int | None = None
    identity: str | None = None
    known_hosts: str | None = None
    python: str = "python3"

    def ssh(self, budget: float) -> SshOptions:
        expand = lambda p: None if p is None else str(Path(p).expanduser())  # noqa: E731
        return SshOptions(host=self.host, port=self.port, identity=expand(self.identity),
                          known_hosts=expand(self.known_hosts), python=self.python, budget=budget)


_TEXT_KEYS = ("name", "host", "identity", "known_hosts", "target", "python")
_HINT = "give a TOML file of [[device]] tables (name, host, port, identity, known_hosts, target, python)"


def read_inventory(path: str | Path, default_target: str | None) -> list[Device]:
    """The devices of an inventory file; a UsageError naming the file, the device and the key for a
    bad entry (an unknown key, a value of the wrong type, no host, a name used twice)."""
    table = read_toml(path, "the inventory", _HINT)
    extra = sorted(set(table) - {"device"})
    if extra:
        raise UsageError(f"the inventory {path} has unknown top-level keys {', '.join(extra)}; it holds only "
                         "[[device]] tables (name, host, ...): fix the spelling or remove them.")
    entries = table.get("device")
    if not entries or not isinstance(entries, list):
        raise UsageError(f"the inventory {path} lists no [[device]] tables; add one per device (name, host, ...).")
    devices, names = [], set()
    for number, entry in enumerate(entries, start=1):
        label = f"device {number}"
        if not isinstance(entry, dict):
            raise UsageError(f"inventory {path}, {label}: not a table; write it as a [[device]] table with "
                             f"{', '.join(sorted(KEYS))}.")
        if isinstance(entry.get("name"), str) and entry["name"]:
            label = entry["name"]
        unknown = sorted(set(entry) - KEYS)
        if unknown or not entry.get("host"):
            raise UsageError(f"inventory {path}, {label}: " + (f"unknown keys {', '.join(unknown)}" if unknown else
                             "no host") + f"; a device takes {', '.join(sorted(KEYS))}.")
        for key in _TEXT_KEYS:
            if key in entry and not (isinstance(entry[key], str) and entry[key].strip()):
                raise UsageError(f"inventory {path}, {label}: {key} must be a non-empty string, not "
                                 f"{entry[key]!r}; write it in quotes, e.g. {key} = \"{_EXAMPLES[key]}\".")
        port = entry.get("port")
        if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535):
            raise UsageError(f"inventory {path}, {label}: port must be a TCP port, a whole number from 1 to 65535, "
                             f"not {port!r}.")
        target = entry.get("target") or default_target
        if not target:
            raise UsageError(f"inventory {path}, {label}: no target; give target = \"rpi4\" (or pass --target).")
        try:
            chosen = get_target(target)
        except UsageError as exc:
            raise UsageError(f"inventory {path}, {label}: {exc}") from None
        require(chosen, Capability.SSH, f"--hosts (device {label})")
        name = entry.get("name") or entry["host"]
        if name in names:
            raise UsageError(f"inventory {path}: two devices are called {name}; give each a name of its own.")
        names.add(name)
        device = Device(name=name, host=entry["host"], target=target, port=port, identity=entry.get("identity"),
                        known_hosts=entry.get("known_hosts"), python=entry.get("python", "python3"))
        try:
            device.ssh(1.0)  # validates the host name now, not mid-run
        except UsageError as exc:
            raise UsageError(f"inventory {path}, {label}: {exc}") from None
        devices.append(device)
    return devices


_EXAMPLES = {"name": "kitchen", "host": "pi@10.0.0.5", "identity": "~/.ssh/id_ed25519",
             "known_hosts": "~/.ssh/known_hosts", "target": "rpi4", "python": "python3"}


def _one(device: Device, blob: bytes, x, y, options: RunOptions, budget: float) -> dict[str, Any]:
    row: dict[str, Any] = {"device": device.name, "host": device.host, "target": device.target}
    try:
        result = get_target(device.target).run(blob, x, y, RunOptions(
            threads=options.threads, warmup=options.warmup, runs=options.runs, ssh=device.ssh(budget)))
    except EdgepipeError as exc:
        return {**row, "ok": False, "reason": str(exc)}
    digest = hashlib.sha256(np.ascontiguousarray(result.outputs).tobytes()).hexdigest() \
        if result.outputs is not None else None
    return {**row, "ok": True, "runtime": result.runtime, "measured_on": result.details.get("measured_on"),
            "threads": result.threads, "accuracy": result.accuracy, "latency_ms": result.latency_ms,
            "energy_mj": result.energy_mj, "outputs_sha256": digest}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Latency spread over the devices that ran, and whether they agree bit for bit."""
    ran = [row for row in rows if row["ok"]]
    p50 = [row["latency_ms"]["p50"] for row in ran if row.get("latency_ms")]
    digests = [row["outputs_sha256"] for row in ran if row.get("outputs_sha256")]
    common = max(set(digests), key=digests.count) if digests else None
    return {
        "devices": len(rows), "ran": len(ran), "failed": [row["device"] for row in rows if not row["ok"]],
        "latency_p50_ms": ({"min": min(p50), "median": statistics.median(p50), "max": max(p50)} if p50 else None),
        "identical_outputs": (len(set(digests)) == 1) if digests else None,
        "differing": [row["device"] for row in ran if digests and row.get("outputs_sha256") != common],
    }


def run_fleet(blob: bytes, devices: list[Device], x, y, options: RunOptions, *, parallel: int,
              timeout: float) -> dict[str, Any]:
    """Every device at once (at most ``parallel`` at a time, each within ``timeout`` seconds)."""
    if parallel < 1 or timeout <= 0:
        raise UsageError("--parallel must be at least 1 and --timeout more than 0.")
    rows: list[dict[str, Any]] = []
    with ThreadPoolExecutor(max_workers=parallel) as pool, progress(len(devices), "fleet", log) as advance:
        futures = [pool.submit(_one, device, blob, x, y, options, timeout) for device in devices]
        for device, future in zip(devices, futures):
            rows.append(future.result())
            advance(1)
            log.info("%s: %s", device.name, "ran" if rows[-1]["ok"] else rows[-1]["reason"])
    return {"devices": rows, "summary": summarize(rows)}
