"""Arm Ethos-U NPU targets: Vela's op split, memory, cycles and fit; TFLM accuracy; deploy; refusals."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgecore.flatbuffer import read_ops
from pipeline import api
from pipeline.cli.commands import main
from pipeline.config import ConvertConfig
from pipeline.errors import TargetError
from targets import get_target
from targets.npu.target import NPU_DIR, load_npu_profiles
from targets.npu.vela import VelaConfig, compile_tflite

DATA = Path(__file__).resolve().parents[1] / "data"
NPU_TARGETS = ("ethos-u55-128", "ethos-u55-256", "ethos-u65-256", "ethos-u85-256")


def _sources(table: dict, where: str) -> list[str]:
    """Every ``{value, source}`` entry of a profile, nested tables included, that lacks its source."""
    missing = []
    for key, value in table.items():
        if isinstance(value, dict):
            if "value" in value and not value.get("source"):
                missing.append(f"{where}: {key}")
            missing += _sources({k: v for k, v in value.items() if isinstance(v, dict)}, f"{where}.{key}")
    return missing


@pytest.mark.fast
def test_the_four_npu_targets_are_listed_with_every_number_sourced():
    outcome = CliRunner().invoke(main, ["targets", "--json"])
    assert outcome.exit_code == 0, outcome.output
    rows = {row["name"]: row for row in json.loads(outcome.stdout)}
    for name in NPU_TARGETS:
        assert rows[name]["npu"] == name, rows[name]
    assert set(load_npu_profiles()) >= set(NPU_TARGETS)
    for path in NPU_DIR.glob("*.toml"):
        assert not _sources(tomllib.loads(path.read_text()), path.name)


@pytest.mark.fast
def test_vela_compiles_the_same_bytes_twice_and_estimates_what_it_placed():
    blob = (DATA / "tiny_int8.tflite").read_bytes()
    target = get_target("ethos-u55-128")
    first, second = target.compile(blob), target.compile(blob)
    assert first.compiled == second.compiled and first.summary == second.summary
    assert [op.name for op in read_ops(first.compiled)].count("CUSTOM:ethos-u") == 1
    estimates = target.estimates(blob, read_ops(blob), first)
    assert estimates["npu_ops"] == estimates["total_ops"] == len(read_ops(blob)) and estimates["cpu_ops"] == []
    assert estimates["npu_sram_bytes"] > 0 and estimates["flash_bytes"] > len(first.compiled) // 2
    assert estimates["fits"] and estimates["estimated_latency_ms"] > 0
    assert "Vela compiler estimates" in estimates["method"] and estimates["vela_version"] == "5.2.0"


@pytest.mark.fast
def test_a_float_model_is_refused_with_the_op_count():
    outcome = CliRunner().invoke(main, ["run", str(DATA / "tiny_float32.tflite"), "--target", "ethos-u55-256"])
    assert outcome.exit_code != 0
    ops = len(read_ops((DATA / "tiny_float32.tflite").read_bytes()))
    assert f"0 of {ops} ops would run on the ethos-u55-256 NPU" in outcome.stderr
    assert "Traceback" not in outcome.output


@pytest.mark.fast
@pytest.mark.parametrize("cut", [0, 8, 200, -40])
def test_a_broken_model_or_config_is_one_sentence_from_vela(cut):
    blob = (DATA / "tiny_int8.tflite").read_bytes()
    broken = blob[:cut] if cut >= 0 else blob[:cut] + b"\0" * 7
    with pytest.raises(TargetError) as caught:
        compile_tflite(broken, load_npu_profiles()["ethos-u55-128"].vela_config())
    message = str(caught.value)
    assert message.startswith("Vela 5.2.0 failed for ethos-u55-128") and "\n" not in message, message


@pytest.mark.fast
def test_an_unknown_system_config_is_named():
    with pytest.raises(TargetError, match="no system config Nowhere"):
        compile_tflite((DATA / "tiny_int8.tflite").read_bytes(), VelaConfig("ethos-u55-128", "Nowhere", "Shared_Sram"))


@pytest.fixture(scope="module")
def demo_on_npu(demo_run):
    result, report = demo_run
    blob = result.artifact.read_bytes()
    report = api.run_on_target(result.artifact, "ethos-u55-128", api.sample_path("mnist", "eval.npz"))
    return blob, report


@pytest.mark.quick
def test_the_demo_model_on_an_npu_reports_split_memory_cycles_and_fit(demo_on_npu, demo_run):
    _, report = demo_on_npu
    npu = report["targets"]["ethos-u55-128"]
    assert npu["npu_ops"] == npu["total_ops"] and npu["cpu_ops"] == []
    for key in ("ram_bytes", "flash_bytes", "npu_sram_bytes", "estimated_cycles", "estimated_latency_ms"):
        assert npu[key] > 0, key
    assert npu["fits"] is True and npu["fit_reasons"] == []
    assert npu["energy_mj"]["method"] == "estimated-latency x board-power"
    assert "not run here" in npu["numerics"] and "Vela compiler estimates" in npu["method"]
    # Accuracy is TFLM on the pre-Vela model: the same as the cortex-m4 target's.
    assert npu["accuracy"] == pytest.approx(demo_run[1]["targets"]["cortex-m4"]["accuracy"])
    again = api.run_on_target(demo_run[0].artifact, "ethos-u55-128", api.sample_path("mnist", "eval.npz"))
    same = again["targets"]["ethos-u55-128"]
    for key in ("npu_ops", "ram_bytes", "flash_bytes", "estimated_cycles", "estimated_latency_ms", "fits"):
        assert same[key] == npu[key], key


def test_the_deploy_bundle_holds_the_vela_model(demo_run, tmp_path):
    blob = demo_run[0].artifact.read_bytes()
    out = tmp_path / "bundle"
    outcome = CliRunner().invoke(main, ["deploy", str(demo_run[0].artifact), "--target", "ethos-u55-128", "--out",
                                        str(out), "--json"])
    assert outcome.exit_code == 0, outcome.output
    manifest = json.loads(outcome.stdout)
    compiled = get_target("ethos-u55-128").compile(blob).compiled
    assert manifest["model_sha256"] != demo_run[1]["artifact"]["sha256"] and manifest["model_bytes"] == len(compiled)
    assert manifest["ops"] == ["CUSTOM:ethos-u"] and manifest["resolver_methods"] == ["AddEthosU"]
    assert manifest["arena_estimated"] and manifest["tensor_arena_bytes"] >= manifest["arena_measured_bytes"]
    source = (out / "model_data.cc").read_text()
    assert source.count("0x") == len(compiled)
    assert "AddEthosU()" in (out / "model_ops.h").read_text()


@pytest.fixture(scope="module")
def embedding_model(tmp_path_factory):
    """A small token model: an Embedding (a GATHER, which Ethos-U55 leaves to the CPU) and a Dense head."""
    from pipeline.frontend.keras_compat import keras3

    keras = keras3()
    keras.utils.set_random_seed(7)
    model = keras.Sequential([keras.Input((16,), dtype="int32"), keras.layers.Embedding(50, 16),
                              keras.layers.Dense(32, activation="relu"), keras.layers.Dense(50, activation="softmax")])
    folder = tmp_path_factory.mktemp("embedding")
    model.save(folder / "tokens.keras")
    rng = np.random.default_rng(7)
    ids = rng.integers(0, 50, size=(64, 16)).astype(np.int32)
    np.savez(folder / "ids.npz", x=ids, y=np.roll(ids, -1, axis=1))
    return folder


def test_an_embedding_lookup_falls_back_to_the_cpu_with_velas_reason(embedding_model):
    out = embedding_model / "out"
    result = api.convert(ConvertConfig(model=embedding_model / "tokens.keras", calib=embedding_model / "ids.npz",
                                       eval=embedding_model / "ids.npz", out=out,
                                       targets=("host", "ethos-u55-128", "ethos-u85-256")))
    u55, u85 = (result.report["targets"][name] for name in ("ethos-u55-128", "ethos-u85-256"))
    assert [op["op"] for op in u55["cpu_ops"]] == ["GATHER"], u55["cpu_ops"]
    assert u55["cpu_ops"][0]["reason"] == "Unsupported opType"
    assert u55["npu_ops"] == u55["total_ops"] - 1 and u55["latency_split_ms"]["cpu_fallback"] > 0
    assert u85["cpu_ops"] == [] and u85["npu_ops"] == u85["total_ops"]  # Ethos-U85 runs GATHER itself
    assert u55["accuracy"] == pytest.approx(u85["accuracy"])
    markdown = (out / "report.md").read_text()
    assert "| NPU target (Vela) |" in markdown and "GATHER runs on the CPU: Unsupported opType" in markdown


def test_compare_puts_npu_and_cpu_targets_side_by_side(tiny_keras, small_npz, tmp_path):
    out = tmp_path / "compare"
    outcome = CliRunner().invoke(main, ["-q", "compare", str(tiny_keras), "--calib", str(small_npz), "--eval",
                                        str(small_npz), "--recipes", "int8,float16", "--targets",
                                        "cortex-m4,ethos-u55-128", "--out", str(out)])
    assert outcome.exit_code == 0, outcome.output
    report = json.loads((out / "report.json").read_text())
    cells = {(c["candidate"], c["target"]): c for c in report["comparison"]["matrix"]}
    assert cells[("int8", "ethos-u55-128")]["fits"] is True
    assert cells[("int8", "ethos-u55-128")]["latency_method"] == "estimated"
    assert "0 of" in cells[("float16", "ethos-u55-128")]["problem"]
    html = (out / "report.html").read_text()
    assert "ethos-u55-128" in html and "cortex-m4" in html
