"""Board profiles for microcontroller targets: data files under ``targets/boards``, each number
with its source. This module only reads them."""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecore.errors import UsageError

BOARDS_DIR = Path(__file__).resolve().parent / "boards"
SHARED_FILES = {"energy", "mlperf_tiny", "tflm_ops", "tflm_runtime", "cycles_fitted"}


def _read(name: str) -> dict[str, Any]:
    return tomllib.loads((BOARDS_DIR / f"{name}.toml").read_text())


@functools.lru_cache(maxsize=None)
def shared(name: str) -> dict[str, Any]:
    """One of the shared data files (energy, tflm_ops, tflm_runtime, mlperf_tiny, cycles_fitted)."""
    return _read(name)


def cycle_table(priors: dict[str, Any], *, conv: float, pointwise: float) -> dict[str, Any]:
    """The full cycle-model table from the two fitted constants and the priors."""
    return {
        "cycles_per_mac": {
            "conv": conv,
            "pointwise": pointwise,
            "depthwise": pointwise * priors["depthwise_over_pointwise"],
            "fully_connected": pointwise * priors["fully_connected_over_pointwise"],
        },
        "cycles_per_mac_output": priors["cycles_per_mac_output"],
        "cycles_per_element": {k: priors[k] for k in ("elementwise", "pool", "softmax", "movement")},
        "op_overhead_cycles": priors["op_overhead_cycles"],
        "float_mac_penalty": priors["float_mac_penalty"],
    }


@dataclass(frozen=True)
class Profile:
    """A board described by a data file: ``data[key] = {"value": ..., "source": ...}``."""

    name: str
    title: str
    core: str
    data: dict[str, Any]

    def value(self, key: str) -> float:
        return self.data[key]["value"]


@dataclass(frozen=True)
class BoardProfile(Profile):
    """A microcontroller board: clock, SRAM, flash, power and its cycle model."""

    kernels: str = ""

    @property
    def clock_hz(self) -> int:
        return int(self.value("clock_hz"))

    @property
    def sram_bytes(self) -> int:
        return int(self.value("sram_bytes"))

    @property
    def flash_bytes(self) -> int:
        return int(self.value("flash_bytes"))

    @property
    def active_power_mw(self) -> float:
        return float(self.value("active_power_mw"))

    def cycle_model(self) -> tuple[dict[str, Any], str]:
        """The cycle table for this board and how it was obtained (fitted or scaled)."""
        spec = self.data["cycle_model"]
        priors = shared("tflm_runtime")["cycle_priors"]
        if "fitted" in spec:
            fitted = shared("cycles_fitted")[spec["fitted"]]
            return (cycle_table(priors, conv=fitted["conv_cycles_per_mac"],
                                pointwise=fitted["pointwise_cycles_per_mac"]), f"fitted: {fitted['source']}")
        base = shared("cycles_fitted")[spec["base"]]
        speedup = spec["mac_speedup"]
        table = cycle_table(priors, conv=base["conv_cycles_per_mac"] / speedup,
                            pointwise=base["pointwise_cycles_per_mac"] / speedup)
        return table, f"scaled from {spec['base']} by {speedup}x per MHz on MAC kernels: {spec['source']}"

    def latency_uncertainty(self) -> dict[str, Any]:
        """The leave-one-out error of the fit behind this board's estimates, and what it covers."""
        spec = self.data["cycle_model"]
        fitted = shared("cycles_fitted")[spec.get("fitted") or spec["base"]]
        figures = fitted["source"]
        if "fitted" in spec:
            note = f"leave-one-out error across the published figures the fit uses ({figures})"
        else:
            note = (f"leave-one-out error of the {spec['base']} fit it is scaled from ({figures}); the per-MHz "
                    "scaling itself is not validated against a published figure")
        return {"loo_max_abs_error_pct": fitted["loo_max_abs_error_pct"],
                "loo_error_pct": dict(fitted["loo_error_pct"]), "scaled": "fitted" not in spec, "method": note}

    def summary(self) -> dict[str, Any]:
        return {"board": self.title, "core": self.core, "kernels": self.kernels,
                "clock_mhz": self.clock_hz / 1e6, "sram_kib": self.sram_bytes / 1024,
                "flash_kib": self.flash_bytes / 1024, "active_power_mw": self.active_power_mw}


@functools.lru_cache(maxsize=None)
def load_profiles() -> dict[str, BoardProfile]:
    """Every MCU board profile under ``targets/boards``, by name."""
    profiles = {}
    for path in sorted(BOARDS_DIR.glob("*.toml")):
        if path.stem in SHARED_FILES:
            continue
        data = _read(path.stem)
        missing = [k for k in ("clock_hz", "sram_bytes", "flash_bytes", "active_power_mw", "cycle_model")
                   if k not in data]
        if missing:
            raise UsageError(f"board profile {path} lacks {', '.join(missing)}; add them with their sources.")
        profiles[data["name"]] = BoardProfile(name=data["name"], title=data["title"], core=data["core"],
                                              kernels=data["kernels"], data=data)
    return profiles
