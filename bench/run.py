"""edgepipe benchmarks: every figure a ratio or count measured side by side in one run.

    python bench/run.py            (or `make bench`)

Writes bench/results.json and BENCHMARKS.md. Each timed figure is the median of several
repetitions, with the spread (max - min) / median; competing variants are interleaved
(A, B, A, B, ...) so that the machine's noise hits both alike.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.arm_latency import arm_latency  # noqa: E402
from bench.mcu import mcu_latency_loo, tflm_parallel  # noqa: E402
from bench.quantization import auto_calibration_cost, compare_cost  # noqa: E402
from edgecore.model_info import inspect_model, quantize  # noqa: E402
from pipeline import api  # noqa: E402
from pipeline.core.data import load_dataset  # noqa: E402
from pipeline.core.environment import environment  # noqa: E402
from pipeline.frontend.keras_compat import keras3, tensorflow  # noqa: E402
from pipeline.frontend.loading import load_model, wrap_keras  # noqa: E402
from pipeline.quantize.convert import convert_model  # noqa: E402
from pipeline.quantize.verify import check_integer_only  # noqa: E402
from pipeline.vocab import Preprocess, Recipe  # noqa: E402
from targets.host.litert_runner import evaluate, evaluate_raw  # noqa: E402
from targets.host.runtime import make_interpreter  # noqa: E402
from targets.mcu import tflm  # noqa: E402

REPEATS = int(os.environ.get("EDGEPIPE_BENCH_REPEATS", "5"))
log = print


def stats(samples: list[float]) -> dict:
    median = statistics.median(samples)
    return {"median": median, "spread": (max(samples) - min(samples)) / median if median else 0.0,
            "samples": [round(s, 6) for s in samples]}


def interleaved(variants: dict, repeats: int = REPEATS) -> dict[str, dict]:
    """Time each callable ``repeats`` times, alternating between them."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    order = list(variants)
    for repeat in range(repeats):
        # Rotate the order so that no variant always runs first (or right after another).
        for name in order[repeat % len(order):] + order[:repeat % len(order)]:
            run = variants[name]
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: stats(values) for name, values in times.items()}


def ratio(numerator: dict, denominator: dict) -> dict:
    """Median of the per-repetition ratios (paired, since they ran back to back)."""
    pairs = [a / b for a, b in zip(numerator["samples"], denominator["samples"])]
    return {**stats(pairs), "numerator_s": numerator["median"], "denominator_s": denominator["median"]}


@contextlib.contextmanager
def quiet():
    with contextlib.redirect_stdout(io.StringIO()):
        yield


# -- 1. pipeline overhead -------------------------------------------------------------------------

def pipeline_overhead() -> dict:
    """edgepipe's int8 conversion path vs a bare TFLiteConverter call, same model and data."""
    tf = tensorflow()
    keras = keras3()
    model_path, calib_path = api.sample_path("reference_cnn.keras"), api.sample_path("mnist", "calib.npz")

    def bare():
        model = keras.saving.load_model(model_path, compile=False)
        x = np.load(calib_path)["x"].astype(np.float32) / 255.0
        inputs = keras.Input((28, 28, 1), batch_size=1)
        converter = tf.lite.TFLiteConverter.from_keras_model(keras.Model(inputs, model(inputs)))
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([x[i:i + 1]] for i in range(len(x)))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int8
        with quiet():
            return converter.convert()

    def edgepipe():
        model = load_model(model_path)
        calib = load_dataset(calib_path, Preprocess.from_input_shape(model.input_shape))
        blob = convert_model(model, Recipe.INT8, calib)
        check_integer_only(inspect_model(blob), Recipe.INT8)
        return blob

    bare(), edgepipe()  # warm TensorFlow's caches for both
    timed = interleaved({"edgepipe": edgepipe, "bare": bare}, repeats=REPEATS + 4)

    with tempfile.TemporaryDirectory() as out:
        config = api.ConvertConfig(model=model_path, calib=calib_path, out=Path(out), overwrite=True,
                                   run=api.RunOptions(runs=50))
        command = interleaved({"command": lambda: api.convert(config), "bare": bare}, repeats=3)
    return {"goal": 1.15, "ratio": ratio(timed["edgepipe"], timed["bare"]), "times": timed,
            "full_command_over_bare": ratio(command["command"], command["bare"]),
            "note": "ratio: load + data + int8 conversion + integer-only check vs the bare converter. "
                    "full_command_over_bare: `edgepipe convert` as a whole, which also converts the float32 "
                    "baseline and times both on the host (50 runs each)."}


# -- 2. runner overhead ---------------------------------------------------------------------------

def runner_overhead() -> dict:
    """The host target's evaluation loop vs a bare set/invoke/get loop, per inference."""
    model = load_model(api.sample_path("reference_cnn.keras"))
    data = load_dataset(api.sample_path("mnist", "eval.npz"), Preprocess.from_input_shape(model.input_shape))
    calib = load_dataset(api.sample_path("mnist", "calib.npz"), data.preprocess)
    fixed = convert_model(model, Recipe.INT8, calib)
    dynamic = convert_model(model, Recipe.INT8, calib, dynamic_batch=True)
    info, dyn_info = inspect_model(fixed), inspect_model(dynamic)
    q = quantize(data.x, info.inputs[0])
    n = len(q)

    def bare():
        interpreter = make_interpreter(fixed, kernels="xnnpack", threads=1)
        interpreter.allocate_tensors()
        i, o = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]
        for row in range(n):
            interpreter.set_tensor(i, q[row:row + 1])
            interpreter.invoke()
            interpreter.get_tensor(o)

    def invoke_only():
        interpreter = make_interpreter(fixed, kernels="xnnpack", threads=1)
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], q[:1])
        for _ in range(n):
            interpreter.invoke()

    def ours():
        evaluate(fixed, info, data.x, kernels="xnnpack", threads=1, batch_size=64)

    def ours_batched():
        evaluate(dynamic, dyn_info, data.x, kernels="xnnpack", threads=1, batch_size=64)

    bare(), ours(), ours_batched()
    timed = interleaved({"edgepipe": ours, "bare_set_invoke_get": bare, "bare_invoke_only": invoke_only,
                         "edgepipe_batch64": ours_batched}, repeats=3 * REPEATS)
    per = {name: t["median"] / n * 1e6 for name, t in timed.items()}
    quantizing = interleaved({"quantize": lambda: quantize(data.x, info.inputs[0])}, repeats=3 * REPEATS)["quantize"]
    per["input_quantization"] = quantizing["median"] / n * 1e6
    return {"goal": 1.05, "ratio": ratio(timed["edgepipe"], timed["bare_set_invoke_get"]),
            "ratio_vs_invoke_only": ratio(timed["edgepipe"], timed["bare_invoke_only"]),
            "batch_gain": ratio(timed["edgepipe"], timed["edgepipe_batch64"]),
            "per_inference_us": per, "samples": n,
            "note": "one thread, the demo int8 model over the 1,500-sample eval set, interpreter creation "
                    "included for every variant; the bare loops get inputs already quantized to int8, while "
                    "edgepipe quantizes the float eval set itself (input_quantization); batch_gain is per-sample time at batch 1 over batch 64 "
                    "(model converted with --dynamic-batch)."}


# -- 3 and 4. what int8 buys on the host, and sizes ------------------------------------------------

def mobilenet(size: int):
    keras = keras3()
    keras.utils.set_random_seed(0)
    return keras.applications.MobileNetV2(input_shape=(size, size, 3), alpha=1.0, weights=None, classes=1000)


def random_data(shape, count: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, size=(count, *shape)).astype(np.float32)


class _Array:
    """A Dataset-like holder for in-memory calibration arrays."""

    def __init__(self, x):
        self.x = x

    def head(self, count):
        return self


def int8_vs_fp32(cpu: dict) -> tuple[dict, dict, dict]:
    models = {"demo_cnn": None, "mobilenet_v2_96": 96, "mobilenet_v2_224": 224}
    latency, sizes, blobs = {}, {}, {}
    threads_all = os.cpu_count() or 1
    for name, size in models.items():
        if size is None:
            loaded = load_model(api.sample_path("reference_cnn.keras"))
            calib = load_dataset(api.sample_path("mnist", "calib.npz"), Preprocess.from_input_shape(loaded.input_shape))
        else:
            loaded = wrap_keras(mobilenet(size), Path(f"{name}.keras"), "keras", sha256="random-weights")
            calib = _Array(random_data((size, size, 3), 16))
        log(f"  converting {name}")
        int8 = convert_model(loaded, Recipe.INT8, calib, calib_samples=None)
        fp32 = convert_model(loaded, Recipe.FLOAT32)
        blobs[name] = (int8, fp32)
        sizes[name] = {"int8_bytes": len(int8), "fp32_bytes": len(fp32), "ratio": len(int8) / len(fp32)}
        info8 = inspect_model(int8)
        macs = info8.macs
        row = {"macs": macs}
        for threads in sorted({1, threads_all}):
            invokers = {}
            for label, blob in (("int8", int8), ("fp32", fp32)):
                interpreter = make_interpreter(blob, kernels="xnnpack", threads=threads)
                interpreter.allocate_tensors()
                invokers[label] = interpreter
            runs = 30 if size != 224 else 8
            samples: dict[str, list[float]] = {"int8": [], "fp32": []}
            for _ in range(REPEATS):
                for label, interpreter in invokers.items():
                    for _ in range(3):
                        interpreter.invoke()
                    start = time.perf_counter()
                    for _ in range(runs):
                        interpreter.invoke()
                    samples[label].append((time.perf_counter() - start) / runs)
            timed = {label: stats(values) for label, values in samples.items()}
            speed = ratio(timed["fp32"], timed["int8"])
            mac_rate = macs / timed["int8"]["median"]
            row[f"threads_{threads}"] = {
                "int8_ms": timed["int8"]["median"] * 1e3, "fp32_ms": timed["fp32"]["median"] * 1e3,
                "fp32_over_int8": speed, "int8_gmacs": mac_rate / 1e9,
                "int8_fraction_of_vnni_peak": mac_rate / (cpu["vnni_peak_macs_per_cycle"] * cpu["clock_hz"] * threads),
                "int8_fraction_of_amx_peak": (mac_rate / (cpu["amx_peak_macs_per_cycle"] * cpu["clock_hz"] * threads)
                                              if cpu["amx_peak_macs_per_cycle"] else None),
            }
        latency[name] = row
    return latency, sizes, blobs


def cpu_peak() -> dict:
    flags = set()
    model = "unknown"
    mhz = None
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            elif line.startswith("model name") and model == "unknown":
                model = line.split(":", 1)[1].strip()
            elif line.startswith("cpu MHz") and mhz is None:
                mhz = float(line.split(":", 1)[1])
    if "avx512_vnni" in flags:
        vnni, why = 128, "AVX-512 VNNI: VPDPBUSD does 64 int8 MACs per 512-bit instruction, 2 per cycle"
    elif "avx_vnni" in flags:
        vnni, why = 64, "AVX-VNNI: 32 int8 MACs per 256-bit VPDPBUSD, 2 per cycle"
    elif "avx2" in flags:
        vnni, why = 32, "AVX2: VPMADDUBSW + VPMADDWD, about 32 int8 MACs per cycle"
    else:
        vnni, why = 16, "SSE4: about 16 int8 MACs per cycle"
    amx = 1024 if "amx_int8" in flags else 0
    return {"model": model, "clock_hz": (mhz or 2000.0) * 1e6, "cores": os.cpu_count(),
            "flags": sorted(f for f in flags if "avx" in f or "amx" in f or f.startswith("sse4")),
            "vnni_peak_macs_per_cycle": vnni, "vnni_peak_basis": why,
            "amx_peak_macs_per_cycle": amx,
            "amx_peak_basis": "AMX-INT8 TMUL: 1,024 int8 MACs per cycle per core" if amx else None,
            "clock_basis": "the 'cpu MHz' this VM reports in /proc/cpuinfo (turbo, if any, is not visible)"}


# -- 5. memory ------------------------------------------------------------------------------------

def peak_rss(command: list[str]) -> float:
    """Peak resident set size (MiB) of a command run in its own process."""
    probe = ("import resource, subprocess, sys; "
             "done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
             "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", probe, *command], capture_output=True, text=True, check=True).stdout
    code, kib = out.split()
    if code != "0":
        raise RuntimeError(f"{command} failed with exit {code}")
    return int(kib) / 1024


def memory(work: Path) -> dict:
    model = mobilenet(224)
    path = work / "mobilenet_v2_224.keras"
    model.save(path)
    np.savez(work / "calib224.npz", x=(random_data((224, 224, 3), 32, seed=1) * 255).astype(np.uint8))
    edgepipe = str(Path(sys.executable).with_name("edgepipe"))
    convert = [edgepipe, "-q", "convert", str(path), "--calib", str(work / "calib224.npz"), "--out",
               str(work / "out224"), "--overwrite", "--runs", "5"]
    convert_mib = peak_rss(convert)
    run_mib = peak_rss([edgepipe, "-q", "run", str(work / "out224" / "model_int8.tflite"), "--target", "host",
                        "--eval", str(work / "calib224.npz"), "--runs", "5"])
    python_mib = peak_rss([sys.executable, "-c", "import numpy"])
    return {"convert_peak_rss_mib": convert_mib, "run_host_peak_rss_mib": run_mib,
            "python_numpy_baseline_mib": python_mib, "model": "MobileNetV2 1.0 at 224x224 (3.5 M parameters)",
            "note": "peak RSS of the whole `edgepipe convert` command (loads TensorFlow, converts int8 and "
                    "float32, verifies on the host) and of `edgepipe run --target host` over 32 samples."}


# -- 6. scale -------------------------------------------------------------------------------------

def scale() -> dict:
    model = load_model(api.sample_path("reference_cnn.keras"))
    spec = Preprocess.from_input_shape(model.input_shape)
    train = load_dataset(api.sample_path("mnist", "train.npz"), spec)
    evaluation = load_dataset(api.sample_path("mnist", "eval.npz"), spec)
    conversion = {}
    for count in (100, 500, 2000):
        runs = []
        for _ in range(3):
            start = time.perf_counter()
            convert_model(model, Recipe.INT8, train, calib_samples=count)
            runs.append(time.perf_counter() - start)
        conversion[count] = stats(runs)
    blob = convert_model(model, Recipe.INT8, train, calib_samples=500)
    info = inspect_model(blob)
    evaluation_times = {}
    for count in (100, 500, 1500):
        x = evaluation.x[:count]
        runs = []
        for _ in range(REPEATS):
            start = time.perf_counter()
            evaluate(blob, info, x, kernels="xnnpack", threads=1, batch_size=64)
            runs.append(time.perf_counter() - start)
        evaluation_times[count] = stats(runs)

    def fit(table):
        xs = np.array(list(table), dtype=float)
        ys = np.array([v["median"] for v in table.values()])
        slope, intercept = np.polyfit(xs, ys, 1)
        predicted = slope * xs + intercept
        r2 = 1 - np.sum((ys - predicted) ** 2) / np.sum((ys - ys.mean()) ** 2)
        return {"seconds_per_sample": slope, "fixed_seconds": intercept, "r_squared": r2}

    return {"conversion_seconds_by_calib_samples": conversion, "conversion_fit": fit(conversion),
            "evaluation_seconds_by_eval_samples": evaluation_times, "evaluation_fit": fit(evaluation_times)}


# -- 7. TFLM vs LiteRT ------------------------------------------------------------------------------

def tflm_vs_litert() -> dict:
    model = load_model(api.sample_path("reference_cnn.keras"))
    spec = Preprocess.from_input_shape(model.input_shape)
    calib = load_dataset(api.sample_path("mnist", "calib.npz"), spec)
    data = load_dataset(api.sample_path("mnist", "eval.npz"), spec).head(300)
    blob = convert_model(model, Recipe.INT8, calib)
    info = inspect_model(blob)
    arena = tflm.measure_arena(blob, info).total
    q = quantize(data.x, info.inputs[0])
    timed = interleaved({
        "tflm": lambda: tflm.evaluate(blob, info, data.x, arena),
        "litert_reference": lambda: evaluate_raw(blob, info, q, kernels="reference", threads=1, batch_size=1),
        "litert_xnnpack": lambda: evaluate_raw(blob, info, q, kernels="xnnpack", threads=1, batch_size=1),
    })
    per = {name: t["median"] / data.samples * 1e6 for name, t in timed.items()}
    return {"tflm_over_litert_reference": ratio(timed["tflm"], timed["litert_reference"]),
            "tflm_over_litert_xnnpack": ratio(timed["tflm"], timed["litert_xnnpack"]),
            "per_inference_us": per, "samples": data.samples}


def main() -> None:
    started = time.perf_counter()
    cpu = cpu_peak()
    results = {"date": dt.date.today().isoformat(), "machine": {**cpu, "platform": platform.platform()},
               "environment": environment(), "repeats": REPEATS}
    log("1/12 pipeline overhead")
    results["pipeline_overhead"] = pipeline_overhead()
    log("2/12 runner overhead")
    results["runner_overhead"] = runner_overhead()
    log("3-4/12 int8 vs float32 on the host, sizes")
    latency, sizes, _ = int8_vs_fp32(cpu)
    results["int8_vs_fp32_latency"] = latency
    results["int8_over_fp32_size"] = {"demo_cnn": sizes["demo_cnn"]["ratio"], "goal": 0.30, "models": sizes}
    with tempfile.TemporaryDirectory() as work:
        log("5/12 memory")
        results["memory"] = memory(Path(work))
    log("6/12 scale")
    results["scale"] = scale()
    log("7/12 TFLM vs LiteRT")
    results["tflm_vs_litert"] = tflm_vs_litert()
    log("8/12 TFLM evaluation in parallel workers")
    results["tflm_parallel"] = tflm_parallel(interleaved, ratio)
    log("9/12 the cost of --calibration auto")
    results["auto_calibration"] = auto_calibration_cost(interleaved, ratio)
    log("10/12 compare against single conversions")
    results["compare"] = compare_cost(interleaved, ratio)
    log("11/12 Raspberry Pi latency model: refit, published figures beside the estimates")
    results["arm_latency"] = arm_latency()
    log("12/12 MCU latency model: leave-one-out over the published MLPerf Tiny figures")
    results["mcu_latency"] = mcu_latency_loo()
    results["wall_seconds"] = time.perf_counter() - started
    out = ROOT / "bench" / "results.json"
    out.write_text(json.dumps(results, indent=2, default=float) + "\n")
    from bench.report import write_markdown

    write_markdown(results, ROOT / "BENCHMARKS.md")
    log(f"wrote {out} and BENCHMARKS.md in {results['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()
