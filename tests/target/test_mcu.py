"""Microcontroller targets: TFLM runs, exact arena, op pre-flight, fit verdicts, estimates, deploy."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import tomllib

import numpy as np
import pytest
from click.testing import CliRunner

from edgecore.flatbuffer import read_ops
from edgecore.model_info import inspect_model
from pipeline import api
from pipeline.cli.commands import main
from pipeline.errors import TargetError
from pipeline.frontend.keras_compat import tensorflow
from pipeline.report.markdown import render_markdown
from targets import get_target
from targets.cost_model import dominant_class, estimate_cycles, int8_share, model_work
from targets.mcu import tflm
from targets.mcu.deploy import add_method
from targets.profiles import BOARDS_DIR, load_profiles, shared
from targets.worker import call_isolated


def _concrete_tflite(function, spec) -> bytes:
    """A float32 .tflite from a variable-free tf.function (weights as constants)."""
    tf = tensorflow()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function(spec)])
    with contextlib.redirect_stdout(io.StringIO()):
        return bytes(converter.convert())


@pytest.fixture(scope="module")
def demo_model(demo_run):
    result, report = demo_run
    return result.artifact.read_bytes(), report


@pytest.mark.quick
def test_demo_runs_in_tflm_like_on_host(demo_run):
    _, report = demo_run
    mcu, host = report["targets"]["cortex-m4"], report["targets"]["host"]
    assert mcu["runtime"].startswith("tflite-micro")
    assert mcu["samples"] == 1500
    assert abs(mcu["accuracy"] - host["accuracy"]) <= 0.005
    # TFLM vs LiteRT reference kernels: at most one quantization step apart.
    assert mcu["reference"]["max_diff_steps"] <= 1
    assert mcu["reference"]["top1_agreement"] >= 0.999


def test_demo_memory_and_fit_verdict(demo_run):
    _, report = demo_run
    mcu = report["targets"]["cortex-m4"]
    assert mcu["unsupported_ops"] == []
    assert mcu["arena_bytes"] > 0 and mcu["arena_device_bytes"] > mcu["arena_bytes"]
    assert mcu["ram_bytes"] > mcu["arena_device_bytes"]
    assert mcu["flash_bytes"] > report["artifact"]["bytes"]
    assert mcu["fits"] is True and mcu["ram_headroom_bytes"] > 0
    assert mcu["estimated_latency_ms"] > 0
    assert mcu["energy_mj"]["method"] == "estimated-latency x board-power"
    assert mcu["energy_mj"]["value"] == pytest.approx(mcu["estimated_latency_ms"] * 40.0 / 1000, rel=1e-3)
    assert 0 < mcu["energy_mj"]["op_energy_model_mj"] < mcu["energy_mj"]["value"]


def _bisect_smallest(blob: bytes, high: int) -> int:
    info = inspect_model(blob)
    low = 1
    while low < high:
        middle = (low + high) // 2
        works = tflm.survives(lambda: tflm.arena_works(blob, info, middle))
        low, high = (low, middle) if works else (middle + 1, high)
    return low


def test_the_reported_arena_is_the_smallest_that_works(demo_model):
    blob, report = demo_model
    arena = report["targets"]["cortex-m4"]["arena_bytes"]
    # An independent search from 1 byte up, each probe in its own process, finds the same figure.
    assert call_isolated(_bisect_smallest, blob, arena, what="bisection") == arena


@pytest.fixture(scope="module")
def unsupported_model(tmp_path_factory):
    tf = tensorflow()
    weights = tf.constant(np.random.default_rng(0).normal(size=(16, 8)).astype(np.float32))

    @tf.function
    def head(x):
        scores = tf.nn.gelu(tf.matmul(x, weights), name="gelu_head")
        return tf.math.top_k(scores, k=3, name="best3").values

    path = tmp_path_factory.mktemp("unsupported") / "topk.tflite"
    path.write_bytes(_concrete_tflite(head, tf.TensorSpec([1, 16], tf.float32)))
    return path


@pytest.mark.quick
def test_unsupported_op_is_named_before_running(unsupported_model):
    problems = tflm.unsupported_ops(read_ops(unsupported_model.read_bytes()))
    assert [p["op"] for p in problems] == ["GELU", "TOPK_V2"]
    outcome = CliRunner().invoke(main, ["run", str(unsupported_model), "--target", "cortex-m4"])
    assert outcome.exit_code == 1
    assert "no kernel for GELU (layer gelu_head" in outcome.stderr
    assert "TOPK_V2 (layer" in outcome.stderr
    assert "Traceback" not in outcome.stderr


def test_supported_op_list_matches_the_installed_tflm():
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("binutils' nm is not installed")
    import tflite_micro.python.tflite_micro as package

    folder = list(package.__path__)[0]
    library = next(p for p in os.listdir(folder) if p.startswith("_runtime"))
    symbols = subprocess.run([nm, "-D", "--defined-only", os.path.join(folder, library)],
                             capture_output=True, text=True, check=True).stdout
    registered = set(re.findall(r"Register_([A-Z0-9_]+)Ev", symbols))
    builtin, _ = tflm.supported_ops()
    assert builtin <= registered
    assert "TOPK_V2" not in builtin and "CONV_2D" in builtin


def test_model_bigger_than_flash_does_not_fit(tmp_path):
    tf = tensorflow()
    weights = tf.constant(np.random.default_rng(1).normal(size=(800, 700)).astype(np.float32))

    @tf.function
    def big(x):
        return tf.matmul(x, weights)

    path = tmp_path / "big.tflite"
    path.write_bytes(_concrete_tflite(big, tf.TensorSpec([1, 800], tf.float32)))
    report = api.run_on_target(path, "cortex-m4")
    mcu = report["targets"]["cortex-m4"]
    assert report["artifact"]["bytes"] > 2 * 1024 * 1024
    assert mcu["fits"] is False
    assert mcu["flash_headroom_bytes"] < 0
    assert "| **no** |" in render_markdown(report)


def test_tflm_crash_becomes_a_clear_error():
    with pytest.raises(TargetError, match="crashed while loading or running this model: the worker process was "
                                          "killed by SIGABRT"):
        call_isolated(os.abort, what=f"TensorFlow Lite Micro {tflm.tflm_version()} crashed while loading or running "
                                     "this model")


@pytest.fixture(scope="session")
def mlperf_work():
    from calibration_data.calibrate_mcu import mlperf_works

    return mlperf_works()


@pytest.fixture(scope="session")
def held_out(mlperf_work):
    """The leave-one-out of calibrate_mcu.py, computed here from mlperf_tiny.toml."""
    from calibration_data.calibrate_mcu import leave_one_out

    return leave_one_out(mlperf_work)


def test_mlperf_models_have_the_published_macs(mlperf_work):
    assert mlperf_work["resnet8"].total_macs == pytest.approx(12.5e6, rel=0.01)
    assert mlperf_work["ds_cnn"].total_macs == pytest.approx(2.66e6, rel=0.01)
    assert mlperf_work["mobilenet_vww"].total_macs == pytest.approx(7.49e6, rel=0.01)
    assert mlperf_work["fc_autoencoder"].total_macs == pytest.approx(0.264e6, rel=0.01)
    # The autoencoder streams each of its int8 weights once per inference.
    assert mlperf_work["fc_autoencoder"].quantity("weight_bytes") == mlperf_work["fc_autoencoder"].total_macs


def test_mlperf_tiny_on_cortex_m4_held_out_within_25_percent(mlperf_work, held_out):
    from calibration_data.calibrate_mcu import published

    profile = load_profiles()["cortex-m4"]
    system = profile.data["cycle_model"]["fitted"]
    systems, figures = published()
    assert "MLPerf Tiny v0.5 reference submission" in systems[system]["title"]
    rows = {row["model"]: row for row in held_out["rows"] if row["system"] == system}
    assert set(rows) == {"resnet8", "ds_cnn", "mobilenet_vww", "fc_autoencoder"}
    for model, row in rows.items():
        # the figure left out of the fit, and the model left out on every system
        assert abs(row["error_pct"]) <= 25, row
        assert abs(row["error_model_unseen_pct"]) <= 25, row
        assert row["published_ms"] == figures[system, model]["latency_ms"]
        # The shipped profile (fitted on every figure) is within the same bound.
        table, method = profile.cycle_model()
        estimate_ms = estimate_cycles(mlperf_work[model], table) / profile.clock_hz * 1e3
        assert estimate_ms == pytest.approx(row["published_ms"], rel=0.25), model
        assert "v0.5" in method
    # Every figure of the fit systems, held out, is within 25% too.
    assert all(abs(row["error_pct"]) <= 25 for row in held_out["rows"] if row["role"] == "fit")


def test_the_shipped_fit_is_what_calibrate_computes(held_out):
    """cycles_fitted.toml is not stale: make calibrate would write the same constants and errors."""
    stored = shared("cycles_fitted")
    assert stored["fit"]["conv_over_pointwise"] == pytest.approx(held_out["fit"].r, abs=1e-3)
    for system, fitted in held_out["fitted"].items():
        assert stored["system"][system]["cycles_per_pointwise_mac"] == pytest.approx(fitted["g"], rel=1e-3)
        assert stored["system"][system]["cycles_per_fc_weight_byte"] == pytest.approx(fitted["b"], rel=1e-3)
    rows = {(row["system"], row["model"]): row for row in stored["loo"]}
    assert len(rows) == len(held_out["rows"]) == len(shared("mlperf_tiny")["result"])
    for row in held_out["rows"]:
        assert rows[row["system"], row["model"]]["error_pct"] == pytest.approx(row["error_pct"], abs=0.01)
        assert rows[row["system"], row["model"]]["dominant_class"] == row["dominant_class"]
    assert set(stored["band"]) == set(held_out["bands"]) == {"conv", "pointwise", "fully_connected"}


def test_the_uncertainty_is_the_held_out_error_of_models_like_it(mlperf_work, held_out):
    profile = load_profiles()["cortex-m4"]
    table, _ = profile.cycle_model()
    seen = {}
    for model, work in mlperf_work.items():
        kind, share = dominant_class(work, table)
        uncertainty = profile.latency_uncertainty(kind, share, int8_share(work, table))
        errors = [row["error_pct"] for row in held_out["rows"]
                  if row["role"] == "fit" and row["dominant_class"] == kind]
        assert uncertainty["validated"] and uncertainty["loo_max_abs_error_pct"] == pytest.approx(
            max(abs(e) for e in errors), abs=0.05)
        seen[model] = (kind, uncertainty["loo_max_abs_error_pct"])
    assert seen["resnet8"][0] == "conv" and seen["fc_autoencoder"][0] == "fully_connected"
    assert seen["ds_cnn"][0] == seen["mobilenet_vww"][0] == "pointwise"
    assert len({spread for _, spread in seen.values()}) == 3  # one band per op mix, not one number


def test_int16_models_cost_more_than_int8(mlperf_work):
    from calibration_data.mlperf_tiny import quantized_tflite

    profile = load_profiles()["cortex-m4"]
    table, _ = profile.cycle_model()
    for name, at_least in (("fc_autoencoder", 1.3), ("ds_cnn", 1.15)):
        with contextlib.redirect_stdout(io.StringIO()):
            work = model_work(read_ops(quantized_tflite(name, "int16")))
        assert work.quantity("macs", fmt="int16") == mlperf_work[name].total_macs
        ratio = estimate_cycles(work, table) / estimate_cycles(mlperf_work[name], table)
        assert ratio >= at_least, (name, ratio)
        uncertainty = profile.latency_uncertainty(*dominant_class(work, table), int8_share(work, table))
        assert uncertainty["validated"] is False and "int16" in uncertainty["method"]


def test_published_energy_matches_the_board_power():
    systems = {system["id"]: system for system in shared("mlperf_tiny")["system"]}
    profiles = load_profiles()
    rows = [row for row in shared("mlperf_tiny")["result"] if "energy_uj" in row]
    assert len(rows) == 4
    for row in rows:
        profile = profiles[systems[row["system"]]["profile"]]
        assert profile.clock_hz == systems[row["system"]]["clock_hz"]
        energy_mj = row["latency_ms"] * profile.active_power_mw * 1e-3
        assert energy_mj == pytest.approx(row["energy_uj"] / 1000, rel=0.10), row


def _numbers_without_source(data: dict, where: str) -> list[str]:
    missing = []
    for key, value in data.items():
        if isinstance(value, dict):
            if "value" in value and not value.get("source"):
                missing.append(f"{where}{key}")
            missing += _numbers_without_source(value, f"{where}{key}.")
    return missing


def test_every_board_number_has_a_source():
    for path in BOARDS_DIR.glob("*.toml"):
        data = tomllib.loads(path.read_text())
        assert not _numbers_without_source(data, f"{path.name}: "), _numbers_without_source(data, f"{path.name}: ")
    # Every published figure and system, and every fitted system, says where it comes from.
    for section in ("system", "result"):
        assert all(entry.get("source") for entry in shared("mlperf_tiny")[section])
    assert all(system.get("source") for system in shared("cycles_fitted")["system"].values())
    constants = shared("cycle_constants")
    for path in ("dsp", "mve"):
        assert all(entry.get("source") for entry in constants["kernels"][path].values())
        assert set(constants["int16"][path]) == set(constants["float"])
    names = set(load_profiles())
    assert {"cortex-m4", "cortex-m7", "cortex-m33", "cortex-m55", "esp32-s3", "rp2040"} <= names


def test_deploy_bundle_compiles_and_registers_exactly_the_ops(demo_model, tmp_path):
    blob, report = demo_model
    model_path = tmp_path / "model.tflite"
    model_path.write_bytes(blob)
    out = tmp_path / "bundle"
    outcome = CliRunner().invoke(main, ["deploy", str(model_path), "--target", "cortex-m4", "--out", str(out), "--json"])
    assert outcome.exit_code == 0, outcome.stderr
    manifest = json.loads(outcome.stdout)
    ops = list(dict.fromkeys(use.name for use in read_ops(blob)))
    assert manifest["ops"] == ops
    resolver = (out / "model_ops.h").read_text()
    registered = re.findall(r"resolver\.(Add\w+)\(\)", resolver)
    assert registered == [add_method(op) for op in ops]
    assert "MicroMutableOpResolver<kOpCount>" in resolver
    header = (out / "model_data.h").read_text()
    assert f"kTensorArenaSize = {manifest['tensor_arena_bytes']};" in header
    assert manifest["arena_measured_bytes"] == report["targets"]["cortex-m4"]["arena_bytes"]
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("g++ is not installed")
    subprocess.run([compiler, "-std=c++17", "-Wall", "-Wextra", "-Werror", "-c", "model_data.cc", "-o", "model_data.o"],
                   cwd=out, check=True)
    # Link a tiny program against it and check the bytes arrive intact and aligned.
    (out / "check.cc").write_text(
        '#include "model_data.h"\n#include <cstdio>\n#include <cstdint>\nint main() {\n'
        "  std::uint32_t h = 2166136261u;\n"
        "  for (std::size_t i = 0; i < edgepipe_model::kModelSize; ++i) { h ^= edgepipe_model::kModelData[i]; h *= 16777619u; }\n"
        '  std::printf("%zu %u %d\\n", edgepipe_model::kModelSize, h,\n'
        "              static_cast<int>(reinterpret_cast<std::uintptr_t>(edgepipe_model::kModelData) % 16));\n}\n")
    subprocess.run([compiler, "-std=c++17", "check.cc", "model_data.o", "-o", "check"], cwd=out, check=True)
    size, digest, misalignment = subprocess.run([str(out / "check")], capture_output=True, text=True,
                                                check=True).stdout.split()
    expected = 2166136261
    for byte in blob:
        expected = ((expected ^ byte) * 16777619) % 2**32
    assert (int(size), int(digest), int(misalignment)) == (len(blob), expected, 0)


def test_deploy_refuses_the_host_target(demo_model, tmp_path):
    blob, _ = demo_model
    path = tmp_path / "m.tflite"
    path.write_bytes(blob)
    outcome = CliRunner().invoke(main, ["deploy", str(path), "--target", "host", "--out", str(tmp_path / "b")])
    assert outcome.exit_code == 2
    assert "choose a microcontroller or NPU target" in outcome.stderr
    assert not (tmp_path / "b").exists()


@pytest.mark.quick
def test_add_method_names():
    assert add_method("CONV_2D") == "AddConv2D"
    assert add_method("DEPTHWISE_CONV_2D") == "AddDepthwiseConv2D"
    assert add_method("MAX_POOL_2D") == "AddMaxPool2D"
    assert add_method("FULLY_CONNECTED") == "AddFullyConnected"
    assert add_method("PADV2") == "AddPadV2"


def test_every_mcu_target_runs_the_demo_model(demo_model):
    blob, _ = demo_model
    for name, profile in load_profiles().items():
        result = get_target(name).run(blob, None, None, api.RunOptions())
        assert result.details["estimated_latency_ms"] > 0
        assert result.details["fits"] is (result.details["ram_bytes"] <= profile.sram_bytes)
