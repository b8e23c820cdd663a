"""Fit the MCU cycle model to the published MLPerf Tiny figures and write the constants.

For each board with published results (``targets/boards/mlperf_tiny.toml``) two constants are
fitted from its two figures, everything else being fixed priors (``tflm_runtime.toml``):
``a`` = cycles per MAC of k x k convolutions (ResNet-8 is almost all 3x3 convolutions) and
``b`` = cycles per MAC of 1x1 convolutions (DS-CNN is mostly pointwise), with depthwise and fully
connected MACs tied to ``b`` by the priors. Two figures, two unknowns: the fit is exact on the
calibration models, so the script also prints the cross-model error of the simplest alternative
(one cycles-per-MAC constant fitted on one model, applied to the other), which is the size of
error to expect on models unlike both.

It also measures the fit's leave-one-out error, which is what edgepipe reports next to every MCU
latency estimate: each published figure is left out in turn and predicted from the board's other
figure, with the conv-to-pointwise cost ratio taken from the other board's fit (one figure cannot
fix two constants).

Run: ``python calibration_data/calibrate_mcu.py`` (rewrites targets/boards/cycles_fitted.toml).
"""

from __future__ import annotations

import contextlib
import io
import tomllib

import numpy as np

from calibration_data.mlperf_tiny import int8_tflite
from edgecore.flatbuffer import read_ops
from targets.cost_model import model_work
from targets.profiles import BOARDS_DIR, cycle_table

OUTPUT = BOARDS_DIR / "cycles_fitted.toml"


def main() -> None:
    published = tomllib.loads((BOARDS_DIR / "mlperf_tiny.toml").read_text())["result"]
    priors = tomllib.loads((BOARDS_DIR / "tflm_runtime.toml").read_text())["cycle_priors"]
    clocks = {name: tomllib.loads((BOARDS_DIR / f"{name}.toml").read_text())["clock_hz"]["value"]
              for name in {r["board"] for r in published}}
    works = {}
    for model in sorted({r["model"] for r in published}):
        with contextlib.redirect_stdout(io.StringIO()):
            works[model] = model_work(read_ops(int8_tflite(model)))
    lines = ["# Cycle-model constants fitted by calibration_data/calibrate_mcu.py; do not edit by hand.",
             "# Fitted to the published MLPerf Tiny figures in mlperf_tiny.toml, priors in tflm_runtime.toml.",
             "# loo_*: leave-one-out error of the fit (each figure predicted from the board's other figure,",
             "# conv/pointwise cost ratio from the other board), in percent of the published latency.", ""]
    # cycles = a * A + b * B + fixed: unit tables isolate A, B and the fixed part per model.
    fixed = {m: _cycles(works[m], priors, 0.0, 0.0) for m in works}
    coef_a = {m: _cycles(works[m], priors, 1.0, 0.0) - fixed[m] for m in works}
    coef_b = {m: _cycles(works[m], priors, 0.0, 1.0) - fixed[m] for m in works}
    fits = {}
    for board in sorted(clocks):
        rows = [r for r in published if r["board"] == board]
        matrix = np.array([[coef_a[r["model"]], coef_b[r["model"]]] for r in rows])
        target = np.array([r["latency_ms"] * 1e-3 * clocks[board] - fixed[r["model"]] for r in rows])
        fits[board] = tuple(np.linalg.solve(matrix, target))
    for board in sorted(clocks):
        rows = [r for r in published if r["board"] == board]
        a, b = fits[board]
        others = [fits[other] for other in fits if other != board]
        ratio = float(np.mean([oa / ob for oa, ob in others]))
        loo = {}
        for left in rows:
            kept = next(r for r in rows if r is not left)
            cycles = kept["latency_ms"] * 1e-3 * clocks[board] - fixed[kept["model"]]
            scale = cycles / (ratio * coef_a[kept["model"]] + coef_b[kept["model"]])
            guess = (fixed[left["model"]] + scale * (ratio * coef_a[left["model"]] + coef_b[left["model"]]))
            loo[left["model"]] = 100 * (guess / clocks[board] * 1e3 / left["latency_ms"] - 1)
        figures = ", ".join(f"{r['model']} {r['latency_ms']} ms" for r in rows)
        lines += [f"[{board}]", f"conv_cycles_per_mac = {a:.4f}", f"pointwise_cycles_per_mac = {b:.4f}",
                  f'source = "MLPerf Tiny {figures}, {rows[0]["system"]}"',
                  "loo_error_pct = { " + ", ".join(f"{m} = {e:.1f}" for m, e in loo.items()) + " }",
                  f"loo_max_abs_error_pct = {max(abs(e) for e in loo.values()):.1f}", ""]
        print(f"{board}: conv {a:.3f} cycles/MAC, pointwise {b:.3f} cycles/MAC; leave-one-out errors "
              + ", ".join(f"{m} {e:+.1f}%" for m, e in loo.items()))
        for r in rows:
            estimate = _cycles(works[r["model"]], priors, a, b) / clocks[board] * 1e3
            print(f"  {r['model']}: estimated {estimate:.1f} ms, published {r['latency_ms']} ms "
                  f"({100 * (estimate / r['latency_ms'] - 1):+.1f}%)")
        for fit, other in (rows, rows[::-1]):
            per_mac = fit["latency_ms"] * 1e-3 * clocks[board] / works[fit["model"]].total_macs
            guess = per_mac * works[other["model"]].total_macs / clocks[board] * 1e3
            print(f"  baseline: one constant from {fit['model']} predicts {other['model']} "
                  f"{guess:.1f} ms ({100 * (guess / other['latency_ms'] - 1):+.1f}%)")
    OUTPUT.write_text("\n".join(lines))
    print(f"wrote {OUTPUT}")


def _cycles(work, priors, a: float, b: float) -> float:
    from targets.cost_model import estimate_cycles

    return estimate_cycles(work, cycle_table(priors, conv=a, pointwise=b))


if __name__ == "__main__":
    main()
