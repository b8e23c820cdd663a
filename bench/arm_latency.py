"""Raspberry Pi latency estimates against the published figures they were fitted to.

The refit uses the instruction counts cached in targets/boards/arm/rpi4_fitted.toml (seconds); one
network (MobileNetV3-Small, the quickest) is counted again under QEMU when the emulator is built,
to show the cache still matches the LiteRT build the emulator runs.
"""

from __future__ import annotations

import time
import tomllib

from calibration_data import calibrate_arm
from targets.arm import emulator

RECOUNT = ("mobilenet_v3_small_1.0_224", "float32")


def arm_latency() -> dict:
    """Published figure, estimate and leave-one-out error per figure; held-out networks; count drift."""
    started = time.perf_counter()
    data = tomllib.loads(calibrate_arm.PUBLISHED.read_text())
    published = {key: [e for e in data[key] if e["board"] == calibrate_arm.BOARD] for key in ("figure", "sweep")}
    fitted = tomllib.loads(calibrate_arm.OUTPUT.read_text())
    counts = {(r["network"], r["precision"]): r for r in fitted["network"]}
    model = calibrate_arm.fit(published, counts)
    found = calibrate_arm.errors(published, counts)
    refit_seconds = time.perf_counter() - started
    figures = []
    for fig in (f for f in published["figure"] if f["use"] == "level"):
        c = counts[fig["network"], fig["precision"]]
        estimate = calibrate_arm.estimate(model, c, fig["threads"])
        figures.append({"id": fig["id"], "threads": fig["threads"], "published_ms": fig["latency_ms"],
                        "estimate_ms": round(estimate, 2), "estimate_1_thread_ms": round(calibrate_arm.estimate(model, c, 1), 2),
                        "error_pct": calibrate_arm.pct(estimate, fig["latency_ms"]), "loo_pct": found["level"][fig["id"]]})
    result = {"figures": figures, "loo_max_abs_pct": found["max_abs_pct"], "thread_loo_pct": found["threads"],
              "heldout": found["heldout"], "not_fitted_pct": found["not_fitted"], "backbone_bounds_pct": found["bounds"],
              "refit_seconds": round(refit_seconds, 3), "goal_heldout_abs_pct": 35}
    if (emulator.cache_dir() / ".complete").exists():
        started = time.perf_counter()
        again = calibrate_arm.count(*RECOUNT)
        cached = counts[RECOUNT]["instructions"]
        result["recount"] = {"network": "/".join(RECOUNT), "cached": cached, "counted": again["instructions"],
                             "drift_pct": round(100 * (again["instructions"] / cached - 1), 4),
                             "litert": again["litert"], "seconds": round(time.perf_counter() - started, 1)}
    return result


if __name__ == "__main__":
    import json

    print(json.dumps(arm_latency(), indent=2))
