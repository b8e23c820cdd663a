"""Fit the Raspberry Pi latency model to published figures and write the constants.

edgepipe estimates ARM latency from the guest instructions LiteRT + XNNPACK executes per inference
under qemu-aarch64 (one thread, ``-cpu cortex-a72``), the model's op count and its precision
(targets/arm.py, ``LatencyModel``)::

    t(T) = cpi[p] * I / f / S_p(T) + [T > 1] * sync * N / f,   S_p(T) = T / (1 + sigma[p] * (T - 1))

Five constants, fitted in two stages to the figures in ``calibration_data/published_rpi.toml``:

1. ``sigma`` (float32, int8): from the published thread sweeps (``use = "threads"``), least squares
   on log(t(T) / t(1)) for T = 2..4. Only ratios are used, so a sweep's board speed does not matter.
2. ``cpi`` (float32, int8) and ``sync``: from the absolute figures (``use = "level"``, XNNPACK on a
   64-bit Pi 4), linear least squares in relative error, given ``sigma``.

The networks are built in code (keras.applications, weights=None: latency does not depend on the
weights), converted (float32; full-int8 with per-channel weights calibrated on random samples) and
their instructions counted once under QEMU; the counts are cached in the output file with the QEMU
CPU and LiteRT version, so a refit takes seconds (``--recount`` counts again).

Errors reported: each level figure left out in turn and predicted from the rest (4-thread error);
each thread sweep left out in turn, its 1-thread time predicted from its own 4-thread time (the
thread-scaling error); every published figure not fitted, next to its estimate; detector backbones
(``part = "backbone"``) against the whole published detector, which bounds them from above; and
each network held out entirely (all its figures and sweeps), refitted and predicted at 1 and 4 threads.

Run: ``python calibration_data/calibrate_arm.py`` (rewrites targets/boards/arm/rpi4_fitted.toml).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import sys
import tomllib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edgecore.flatbuffer import read_ops  # noqa: E402
from targets.arm.target import ARM_DIR, PRECISIONS, LatencyModel  # noqa: E402
from targets.cost_model import model_work  # noqa: E402

PUBLISHED = Path(__file__).with_name("published_rpi.toml")
OUTPUT = ARM_DIR / "rpi4_fitted.toml"
BOARD, QEMU_CPU, CLOCK_HZ, CORES = "rpi4", "cortex-a72", 1_500_000_000, 4
CALIBRATION_SAMPLES = 200
SEED = 2021


def build(network: str):
    """``mobilenet_v1_1.0_224``-style names (``_notop``: without the classifier) -> a
    keras.applications model with random weights."""
    from pipeline.frontend.keras_compat import keras3

    keras = keras3()
    keras.utils.set_random_seed(SEED)
    top = not network.endswith("_notop")  # _notop: the feature extractor only (a detector's backbone)
    *family, alpha, size = network.removesuffix("_notop").split("_")
    apps, alpha = keras.applications, float(alpha)
    common = {"input_shape": (int(size), int(size), 3), "alpha": alpha, "weights": None, "include_top": top}
    builders = {"mobilenet_v1": lambda: apps.MobileNet(**common),
                "mobilenet_v2": lambda: apps.MobileNetV2(**common),
                "mobilenet_v3_large": lambda: apps.MobileNetV3Large(**common, include_preprocessing=False),
                "mobilenet_v3_small": lambda: apps.MobileNetV3Small(**common, include_preprocessing=False)}
    return builders["_".join(family)]()


def tflite(network: str, precision: str) -> bytes:
    """The network as a batch-1 .tflite: float32, or full int8 (int8 input and output)."""
    from pipeline.frontend.keras_compat import keras3, tensorflow

    keras, tf = keras3(), tensorflow()
    model = build(network)
    inputs = keras.Input(model.inputs[0].shape[1:], batch_size=1, name="input")
    converter = tf.lite.TFLiteConverter.from_keras_model(keras.Model(inputs, model(inputs)))
    if precision == "int8":
        rng, shape = np.random.default_rng(SEED), (1, *model.inputs[0].shape[1:])

        def representative():
            for _ in range(CALIBRATION_SAMPLES):
                yield [rng.uniform(-1, 1, size=shape).astype(np.float32)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int8
    with contextlib.redirect_stdout(io.StringIO()):
        return bytes(converter.convert())


def count(network: str, precision: str) -> dict:
    """Build, convert and count one network under QEMU (a minute or two at 224x224)."""
    from targets.arm import emulator

    blob = tflite(network, precision)
    runner, _, counts = emulator.run(blob, None, cpu=QEMU_CPU, threads=1, warmup=0, runs=0, count=2)
    work = model_work(read_ops(blob))
    return {"network": network, "precision": precision, "instructions": int(min(counts)), "ops": work.ops,
            "float_mac_share": round(work.float_macs / work.total_macs, 6), "total_macs": work.total_macs,
            "qemu_cpu": QEMU_CPU, "litert": f"{runner['runtime']} {runner['version']}"}


def emulator_litert() -> str | None:
    """The LiteRT version in the emulator's sysroot (None when the emulator is not built)."""
    from targets.arm import emulator

    found = sorted((emulator.cache_dir() / "sysroot" / emulator.SITE.lstrip("/")).glob("ai_edge_litert-*.dist-info"))
    return found[-1].name.removeprefix("ai_edge_litert-").removesuffix(".dist-info") if found else None


def load_counts(published: dict, recount: bool) -> dict[tuple[str, str], dict]:
    """Instruction counts for every network named in the published figures (cached in OUTPUT; a
    count made with another QEMU CPU or another LiteRT than the emulator's is made again)."""
    cached, litert = {}, emulator_litert()
    if OUTPUT.exists() and not recount:
        cached = {(r["network"], r["precision"]): r for r in tomllib.loads(OUTPUT.read_text()).get("network", [])
                  if r["qemu_cpu"] == QEMU_CPU and (litert is None or r["litert"].endswith(f" {litert}"))}
    wanted = sorted({(e["network"], e["precision"]) for e in published["figure"] + published["sweep"] if e["network"]})
    for key in wanted:
        if key not in cached:
            print(f"counting {key[0]} {key[1]} under qemu-aarch64 -cpu {QEMU_CPU} ...", flush=True)
            cached[key] = count(*key)
    return {key: cached[key] for key in wanted}


def speedup(threads, sigma):
    return threads / (1 + sigma * (threads - 1))


def fit_sigma(sweeps: list[dict]) -> float:
    """The sigma that best fits the sweeps' t(T)/t(1) ratios (log least squares, grid of 1e-4)."""
    grid = np.linspace(0.0, 1.0, 10001)
    loss = np.zeros_like(grid)
    for sweep in sweeps:
        first = sweep["latency_ms"][sweep["threads"].index(1)]
        for threads, ms in zip(sweep["threads"], sweep["latency_ms"], strict=True):
            if threads > 1:
                loss += (np.log(ms / first) + np.log(speedup(threads, grid))) ** 2
    return float(grid[int(np.argmin(loss))])


def fit_level(figures: list[dict], counts: dict, sigma: dict) -> tuple[dict, float]:
    """cpi per precision and sync cycles per op from absolute figures, given sigma."""
    rows, target = [], []
    for fig in figures:
        c, threads = counts[fig["network"], fig["precision"]], fig["threads"]
        share = c["float_mac_share"]
        scale = speedup(min(threads, CORES), share * sigma["float32"] + (1 - share) * sigma["int8"])
        rows.append([share * c["instructions"] / scale, (1 - share) * c["instructions"] / scale,
                     c["ops"] if threads > 1 else 0.0])
        target.append(fig["latency_ms"] * 1e-3 * CLOCK_HZ)
    matrix, target = np.array(rows), np.array(target)
    weights = 1 / target  # relative errors
    solution, *_ = np.linalg.lstsq(matrix * weights[:, None], target * weights, rcond=None)
    return {"float32": float(solution[0]), "int8": float(solution[1])}, float(solution[2])


def fit(published: dict, counts: dict, skip=lambda entry: False) -> LatencyModel:
    """Both stages on the published entries ``skip`` does not exclude."""
    sweeps = [s for s in published["sweep"] if s["use"] == "threads" and not skip(s)]
    sigma = {p: fit_sigma([s for s in sweeps if s["precision"] == p]) for p in PRECISIONS}
    level = [f for f in published["figure"] if f["use"] == "level" and not skip(f)]
    cpi, sync = fit_level(level, counts, sigma)
    return LatencyModel(cpi=cpi, sigma=sigma, sync_cycles_per_op=sync, clock_hz=CLOCK_HZ, cores=CORES, fit={})


def estimate(model: LatencyModel, c: dict, threads: int, clock_hz: float = CLOCK_HZ) -> float:
    return model.estimate_ms(c["instructions"], c["ops"], c["float_mac_share"], threads) * CLOCK_HZ / clock_hz


def pct(estimate_ms: float, published_ms: float) -> float:
    return round(100 * (estimate_ms / published_ms - 1), 1)


def _one_and_four(entry: dict) -> list[tuple[int, float]]:
    """(threads, ms) at 1 and 4 threads of a figure (one value) or a sweep (lists)."""
    threads = entry["threads"] if isinstance(entry["threads"], list) else [entry["threads"]]
    times = entry["latency_ms"] if isinstance(entry["latency_ms"], list) else [entry["latency_ms"]]
    return [(t, ms) for t, ms in zip(threads, times, strict=True) if t in (1, 4)]


def errors(published: dict, counts: dict) -> dict:
    """Leave-one-out errors, comparisons with the figures not fitted, and held-out networks."""
    level = [f for f in published["figure"] if f["use"] == "level"]
    loo_level = {}
    for fig in level:
        model = fit(published, counts, skip=lambda e, fig=fig: e is fig)
        loo_level[fig["id"]] = pct(estimate(model, counts[fig["network"], fig["precision"]], fig["threads"]),
                                   fig["latency_ms"])
    loo_threads = {}
    for precision in PRECISIONS:
        sweeps = [s for s in published["sweep"] if s["use"] == "threads" and s["precision"] == precision]
        loo_threads[precision] = {}
        for sweep in sweeps:
            sigma = fit_sigma([s for s in sweeps if s is not sweep])
            t1, t4 = (sweep["latency_ms"][sweep["threads"].index(t)] for t in (1, 4))
            loo_threads[precision][sweep["id"]] = pct(t4 * speedup(4, sigma), t1)
    worst = max(abs(e) for e in loo_level.values())
    one = {p: round(max(abs(100 * ((1 + a / 100) * (1 + b / 100) - 1))
                        for a, b in itertools.product(loo_level.values(), loo_threads[p].values())), 1)
           for p in PRECISIONS}
    model = fit(published, counts)
    not_fitted, crosscheck, bounds = {}, {}, {}
    for entry in published["figure"] + published["sweep"]:
        if not entry["network"] or entry["use"] == "level":
            continue
        c = counts[entry["network"], entry["precision"]]
        into = bounds if entry.get("part") == "backbone" else (not_fitted if "xnnpack" in entry["runtime"] else crosscheck)
        for t, ms in _one_and_four(entry):
            into[f"{entry['id']}-t{t}"] = pct(estimate(model, c, t, entry.get("clock_hz", CLOCK_HZ)), ms)
    heldout = []
    for network, precision in sorted({(f["network"], f["precision"]) for f in level}):
        def same(entry, network=network, precision=precision):
            return entry["network"] == network and entry["precision"] == precision

        model = fit(published, counts, skip=same)
        c = counts[network, precision]
        row = {"network": network, "precision": precision, "estimate_1_thread_ms": round(estimate(model, c, 1), 2),
               "estimate_4_threads_ms": round(estimate(model, c, 4), 2), "vs_published_pct": {}}
        for entry in published["figure"] + published["sweep"]:
            if same(entry) and "xnnpack" in entry["runtime"]:
                for t, ms in _one_and_four(entry):
                    row["vs_published_pct"][f"{entry['id']}-t{t}"] = pct(
                        estimate(model, c, t, entry.get("clock_hz", CLOCK_HZ)), ms)
        heldout.append(row)
    return {"level": loo_level, "threads": loo_threads, "max_abs_pct": {"threads_n": worst, "threads_1": one},
            "not_fitted": not_fitted, "crosscheck": crosscheck, "bounds": bounds, "heldout": heldout}


def _table(values: dict) -> str:
    return "{ " + ", ".join(f'"{k}" = {v}' for k, v in values.items()) + " }"


def write(published: dict, counts: dict, model: LatencyModel, found: dict) -> None:
    level = [f for f in published["figure"] if f["use"] == "level"]
    litert = sorted({c["litert"] for c in counts.values()})
    lines = ["# Raspberry Pi 4 latency model, fitted by calibration_data/calibrate_arm.py; do not edit by hand.",
             "# Published figures and their sources: calibration_data/published_rpi.toml. Model: targets/arm.py,",
             "# LatencyModel. loo: leave-one-out errors in percent of the published latency (see the script).", "",
             f'board = "{BOARD}"', f'qemu_cpu = "{QEMU_CPU}"', f'litert = "{", ".join(litert)}"',
             f"clock_hz = {CLOCK_HZ}", "", "[constants]",
             f"cycles_per_instruction = {_table({p: round(model.cpi[p], 5) for p in PRECISIONS})}",
             f"thread_sigma = {_table({p: round(model.sigma[p], 4) for p in PRECISIONS})}",
             f"sync_cycles_per_op = {round(model.sync_cycles_per_op)}", ""]
    for fig in level:
        c = counts[fig["network"], fig["precision"]]
        lines += ["[[figures]]", f'id = "{fig["id"]}"', f'network = "{fig["network"]}"',
                  f'precision = "{fig["precision"]}"', f"threads = {fig['threads']}", f"latency_ms = {fig['latency_ms']}",
                  f"estimate_ms = {estimate(model, c, fig['threads']):.2f}",
                  f"estimate_1_thread_ms = {estimate(model, c, 1):.2f}", ""]
    lines += ["[loo]", f"level = {_table(found['level'])}",
              "threads = { " + ", ".join(f'"{p}" = {_table(found["threads"][p])}' for p in PRECISIONS) + " }",
              f"max_abs_pct = {{ threads_n = {found['max_abs_pct']['threads_n']}, "
              f"threads_1 = {_table(found['max_abs_pct']['threads_1'])} }}", "",
              "# Published XNNPACK figures not fitted (see published_rpi.toml for why), and figures from other",
              "# runtimes (crosscheck): estimate vs figure in percent; -tN is the thread count.", "[not_fitted]",
              *(f'"{k}" = {v}' for k, v in found["not_fitted"].items()), "", "[crosscheck]",
              *(f'"{k}" = {v}' for k, v in found["crosscheck"].items()), "",
              "# Detectors whose backbone alone is counted: the published time (backbone + SSD head +",
              "# post-processing) bounds the estimate from above, so these must be negative.", "[bounds]",
              *(f'"{k}" = {v}' for k, v in found["bounds"].items()), ""]
    for row in found["heldout"]:
        lines += ["[[heldout]]", *(f'{k} = "{v}"' if isinstance(v, str) else f"{k} = {v}"
                                   for k, v in row.items() if k != "vs_published_pct"),
                  f"vs_published_pct = {_table(row['vs_published_pct'])}", ""]
    for c in counts.values():
        lines += ["[[network]]", *(f'{k} = "{v}"' if isinstance(v, str) else f"{k} = {v}" for k, v in c.items()), ""]
    OUTPUT.write_text("\n".join(lines))


def report(published: dict, counts: dict, model: LatencyModel, found: dict) -> None:
    print(f"fitted: cycles/instruction float32 {model.cpi['float32']:.3f} int8 {model.cpi['int8']:.3f}; "
          f"thread sigma float32 {model.sigma['float32']:.3f} int8 {model.sigma['int8']:.3f} (4-thread speedup "
          f"{speedup(4, model.sigma['float32']):.2f} / {speedup(4, model.sigma['int8']):.2f}); "
          f"sync {model.sync_cycles_per_op:.0f} cycles per op")
    print(f"{'published figure':44s} {'T':>2s} {'published':>9s} {'estimate':>9s} {'error':>7s} {'LOO':>7s}")
    for fig in (f for f in published["figure"] if f["use"] == "level"):
        est = estimate(model, counts[fig["network"], fig["precision"]], fig["threads"])
        print(f"{fig['id']:44s} {fig['threads']:2d} {fig['latency_ms']:9.1f} {est:9.1f} "
              f"{pct(est, fig['latency_ms']):+6.1f}% {found['level'][fig['id']]:+6.1f}%")
    print("thread sweeps, 1-thread time predicted from the sweep's own 4-thread time, sweep left out:")
    for precision, values in found["threads"].items():
        for key, value in values.items():
            print(f"  {precision:8s} {key:44s} {value:+6.1f}%")
    print(f"max |LOO|: 4 threads {found['max_abs_pct']['threads_n']}%, 1 thread (combined) "
          f"{found['max_abs_pct']['threads_1']}")
    print("published XNNPACK figures not fitted, then other runtimes (estimate vs figure):")
    for key, value in {**found["not_fitted"], **found["crosscheck"]}.items():
        print(f"  {key:48s} {value:+6.1f}%")
    print("detector backbones alone vs the whole published detector (must be below it):")
    for key, value in found["bounds"].items():
        print(f"  {key:48s} {value:+6.1f}%")
    print("each network held out entirely (its figures and sweeps), refitted, predicted:")
    for row in found["heldout"]:
        checks = ", ".join(f"{k} {v:+.1f}%" for k, v in row["vs_published_pct"].items())
        print(f"  {row['network']} {row['precision']}: 1 thread {row['estimate_1_thread_ms']} ms, "
              f"4 threads {row['estimate_4_threads_ms']} ms; {checks}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recount", action="store_true", help="count every network again under QEMU")
    args = parser.parse_args(argv)
    published = tomllib.loads(PUBLISHED.read_text())
    published = {"figure": [f for f in published["figure"] if f["board"] == BOARD],
                 "sweep": [s for s in published["sweep"] if s["board"] == BOARD]}
    counts = load_counts(published, args.recount)
    model = fit(published, counts)
    found = errors(published, counts)
    report(published, counts, model, found)
    write(published, counts, model, found)
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
