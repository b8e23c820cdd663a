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
SHARED_FILES = {"energy", "mlperf_tiny", "tflm_ops", "tflm_runtime", "cycles_fitted", "cycle_constants"}


def _read(name: str) -> dict[str, Any]:
    return tomllib.loads((BOARDS_DIR / f"{name}.toml").read_text())


@functools.lru_cache(maxsize=None)
def shared(name: str) -> dict[str, Any]:
    """One of the shared data files (energy, tflm_ops, tflm_runtime, mlperf_tiny, cycles_fitted,
    cycle_constants)."""
    return _read(name)


def _values(section: dict[str, Any]) -> dict[str, float]:
    return {key: entry["value"] for key, entry in section.items() if isinstance(entry, dict) and "value" in entry}


def cycle_table(constants: dict[str, Any], *, pointwise: float, fc_weight_byte: float, conv_ratio: float,
                kernels: str = "dsp", int16_kernels: str | None = None) -> dict[str, Any]:
    """The cycle table of ``targets.cost_model`` for one system: ``pointwise`` cycles per 1x1 MAC
    (the system's speed g), ``fc_weight_byte`` cycles per fully connected weight byte streamed
    (b), ``conv_ratio`` k x k conv over pointwise cost per MAC; the other kernel costs keep their
    measured ratio to the pointwise kernel (``constants``: cycle_constants.toml), the interpreter
    costs are absolute."""
    kernel, tflm = _values(constants["kernels"][kernels]), _values(constants["tflm"])
    unit = pointwise / kernel["pointwise_cycles_per_mac"]  # this system's cycles per benchmark cycle
    # cycles per MAC relative to a pointwise MAC
    relative = {"pointwise": 1.0, "conv": conv_ratio, "transpose_conv": conv_ratio,
                "depthwise": kernel["depthwise_cycles_per_mac"] / kernel["pointwise_cycles_per_mac"]}
    per_mac = {kind: pointwise * ratio for kind, ratio in relative.items()}
    multipliers = {"float": _values(constants["float"])}
    int16 = constants["int16"][int16_kernels or kernels]
    # "priced_as": the int16 kernel is another class's (CMSIS-NN runs 1x1 s16 convolutions as k x k ones)
    multipliers["int16"] = {kind: entry["value"] * (relative[entry["priced_as"]] / relative[kind]
                                                    if "priced_as" in entry else 1.0)
                            for kind, entry in int16.items()}
    return {
        "cycles_per_mac": per_mac,
        "cycles_per_mac_output": unit * kernel["cycles_per_output"],
        "cycles_per_conv_tap": pointwise * tflm["conv_tap_pointwise_macs"],
        "cycles_per_weight_byte": {"fully_connected": fc_weight_byte, "recurrent": fc_weight_byte},
        "cycles_per_fc_output": tflm["cycles_per_fc_output"],
        "cycles_per_element": {kind: unit * kernel[f"{kind}_cycles_per_element"]
                               for kind in ("elementwise", "pool", "softmax", "movement")},
        "cycles_per_softmax_node": tflm["softmax_node_cycles"],
        "op_overhead_cycles": tflm["op_overhead_cycles"],
        "invoke_cycles": tflm["invoke_cycles"],
        "format_multipliers": multipliers,
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

    def _system(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The fitted system behind this board's constants (cycles_fitted.toml) and its spec."""
        spec = self.data["cycle_model"]
        return shared("cycles_fitted")["system"][spec.get("fitted") or spec["base"]], spec

    def cycle_model(self) -> tuple[dict[str, Any], str]:
        """The cycle table for this board and how it was obtained (fitted or scaled)."""
        system, spec = self._system()
        fitted = shared("cycles_fitted")["fit"]
        speedup = spec.get("mac_speedup", 1.0)
        table = cycle_table(shared("cycle_constants"), pointwise=system["cycles_per_pointwise_mac"] / speedup,
                            fc_weight_byte=system["cycles_per_fc_weight_byte"] / speedup,
                            conv_ratio=system.get("conv_over_pointwise", fitted["conv_over_pointwise"]),
                            kernels=system["kernels"], int16_kernels=spec.get("int16_kernels"))
        if "fitted" in spec:
            return table, f"fitted: {system['title']}, {system['software']} ({system['source']})"
        return table, (f"scaled from {spec['base']} ({system['title']}, {system['software']}) by {speedup}x per MHz "
                       f"on kernel work: {spec['source']}")

    def latency_uncertainty(self, dominant: str | None = None, share: float | None = None,
                            int8_share: float = 1.0) -> dict[str, Any]:
        """The held-out (leave-one-out) error of published figures of models like this one: those
        whose cycles are dominated by the same op class (``dominant``); without a class, the error
        over every published figure. "Not validated" when no published model is dominated by
        that class, or when most of the cycles are in int16 or float ops."""
        system, spec = self._system()
        fitted = shared("cycles_fitted")
        scaled = "fitted" not in spec
        band = fitted["band"].get(dominant) if dominant else fitted["band_all"]
        result: dict[str, Any] = {"dominant_class": dominant, "scaled": scaled}
        if share is not None:
            result["dominant_share"] = round(share, 3)
        figures = f"{fitted['fit']['figures']} published MLPerf Tiny figures of {fitted['fit']['systems']} systems"
        if band is None or int8_share < 0.5:
            why = (f"no published figure of a model dominated by {dominant} ops" if band is None else
                   f"{100 * (1 - int8_share):.0f}% of the cycles are in int16 or float ops, whose multipliers "
                   "come from kernel benchmarks, not from whole-model figures")
            result.update({"validated": False, "loo_max_abs_error_pct": None,
                           "method": f"not validated: {why}; the cycle model is fitted to {figures}",
                           "summary": (f"{dominant} ops dominate the estimate; " if dominant else "")
                           + f"not validated: {why}"})
            return result
        kind = f"models dominated by {dominant} ops ({', '.join(band['models'])})" if dominant else "every model"
        note = (f"held-out error of the published figures of {kind}, each predicted by the model refitted "
                f"without it ({figures}); {band['model_unseen_note']}")
        if scaled:
            note += (f"; this board is scaled from {spec['base']} ({system['title']}), and the per-MHz scaling "
                     "itself is not validated against a published figure")
        summary = (f"{dominant} ops dominate the estimate; " if dominant else "") + (
            f"± is the held-out error of published models like it ({', '.join(band['models'])}): "
            f"{band['min_error_pct']:+.1f}% to {band['max_error_pct']:+.1f}%")
        if scaled:
            summary += f", before the per-MHz scaling from {spec['base']}, which no published figure validates"
        result.update({"validated": not scaled, "loo_max_abs_error_pct": band["max_abs_error_pct"],
                       "loo_error_range_pct": [band["min_error_pct"], band["max_error_pct"]],
                       "loo_error_pct": dict(band["errors_pct"]), "method": note, "summary": summary})
        return result

    def summary(self) -> dict[str, Any]:
        return {"board": self.title, "core": self.core, "kernels": self.kernels,
                "clock_mhz": self.clock_hz / 1e6, "sram_kib": self.sram_bytes / 1024,
                "flash_kib": self.flash_bytes / 1024, "active_power_mw": self.active_power_mw}


REQUIRED_KEYS = ("clock_hz", "sram_bytes", "flash_bytes", "active_power_mw", "cycle_model")


def read_board_files(folder: Path, cls: type[BoardProfile], *, required: tuple[str, ...] = REQUIRED_KEYS,
                     skip: frozenset[str] | set[str] = frozenset()) -> dict[str, BoardProfile]:
    """Every board profile file in ``folder`` (not its sub-folders) as ``cls``, by name; a file that
    lacks a required key is a UsageError naming it."""
    profiles = {}
    for path in sorted(folder.glob("*.toml")):
        if path.stem in skip:
            continue
        data = tomllib.loads(path.read_text())
        missing = [k for k in required if k not in data]
        if missing:
            raise UsageError(f"board profile {path} lacks {', '.join(missing)}; add them with their sources.")
        profiles[data["name"]] = cls(name=data["name"], title=data["title"], core=data["core"],
                                     kernels=data["kernels"], data=data)
    return profiles


@functools.lru_cache(maxsize=None)
def load_profiles() -> dict[str, BoardProfile]:
    """Every MCU board profile under ``targets/boards``, by name."""
    return read_board_files(BOARDS_DIR, BoardProfile, skip=SHARED_FILES)
