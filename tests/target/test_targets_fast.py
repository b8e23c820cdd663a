"""The target layer and the run report without TensorFlow: committed tiny models, a fake target."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import targets
from edgecore.model_info import inspect_model
from pipeline import api
from pipeline.cli.commands import main
from pipeline.report.markdown import render_markdown
from targets import Capability, RunOptions, Target, TargetResult, registry

pytestmark = pytest.mark.fast

DATA = Path(__file__).resolve().parents[1] / "data"
TINY_INT8 = DATA / "tiny_int8.tflite"
TINY_FLOAT = DATA / "tiny_float32.tflite"
EVAL = api.sample_path("mnist", "eval.npz")


class EchoTarget(Target):
    """A fake target: 'runs' a model by returning the mean of each input as every class score."""

    name = "echo"
    description = "a fake target for tests"
    capabilities = frozenset({Capability.RUN, Capability.ACCURACY})

    def check(self, model: bytes) -> list[str]:
        return [] if model[4:8] == b"TFL3" else ["not a .tflite"]

    def run(self, model, x, y, options: RunOptions) -> TargetResult:
        outputs = None if x is None else np.repeat(x.reshape(len(x), -1).mean(axis=1, keepdims=True), 10, axis=1)
        return TargetResult(target=self.name, runtime="echo 1.0", delegate=None, threads=1, samples=0 if x is None else len(x),
                            accuracy=None if y is None else float(np.mean(np.argmax(outputs, axis=1) == y)),
                            outputs=outputs, details={"fake": True})


@pytest.fixture
def echo():
    target = targets.register_target(EchoTarget(), replace=True)
    yield target
    targets.unregister_target(target.name)


def test_a_registered_fake_target_runs_through_the_cli(echo):
    outcome = CliRunner().invoke(main, ["run", str(TINY_INT8), "--target", "echo", "--eval", str(EVAL), "--json"])
    assert outcome.exit_code == 0, outcome.stderr
    report = json.loads(outcome.stdout)
    assert report["schema"] == 2 and report["chosen"] == "tiny_int8"
    assert report["targets"]["echo"]["fake"] is True and report["targets"]["echo"]["samples"] == 1500
    assert report["candidates"][0]["targets"]["echo"]["runtime"] == "echo 1.0"
    assert "echo" in [row["name"] for row in api.list_targets()]


def test_builtin_targets_register_in_code_and_come_host_first():
    names = list(targets.available_targets())
    assert names[0] == "host"
    assert {"cortex-m4", "rp2040", "rpi4", "rpi5", "arm64"} <= set(names)
    assert targets.targets_with(Capability.SSH) == ["arm64", "rpi4", "rpi5"]


def test_a_broken_plugin_is_a_warning_that_names_it(monkeypatch, caplog):
    class BrokenEntry:
        name, value = "broken", "nowhere.module:Target"

        def load(self):
            raise ImportError("No module named 'nowhere'")

    monkeypatch.setattr(registry.importlib.metadata, "entry_points", lambda group: [BrokenEntry()])
    monkeypatch.setattr(registry, "_registry", {})
    monkeypatch.setattr(registry, "_loaded", False)
    with caplog.at_level(logging.WARNING):
        found = targets.available_targets()
    assert "host" in found and "broken" not in found
    assert "target plugin 'broken' (nowhere.module:Target) could not be loaded" in caplog.text


@pytest.mark.parametrize("args, refused, able", [
    (["--target", "cortex-m4", "--host", "pi@example.invalid"], "cortex-m4 does not support --host", "arm64, rpi4, rpi5"),
    (["--target", "host", "--host", "pi@example.invalid"], "host does not support --host", "arm64, rpi4, rpi5"),
    (["--target", "host", "--emulate"], "host does not support --emulate", "arm64, rpi4, rpi5"),
    (["--target", "cortex-m4", "--emulate"], "cortex-m4 does not support --emulate", "arm64, rpi4, rpi5"),
])
def test_options_a_target_cannot_honour_are_usage_errors(args, refused, able):
    outcome = CliRunner().invoke(main, ["run", str(TINY_INT8), *args])
    assert outcome.exit_code == 2, outcome.output
    assert refused in outcome.stderr and f"targets that do: {able}" in outcome.stderr


def test_host_runs_the_committed_model(tmp_path):
    report = api.run_on_target(TINY_INT8, "host", EVAL, options=RunOptions(runs=3))
    host = report["targets"]["host"]
    assert host["accuracy"] > 0.8 and host["samples"] == 1500
    assert report["artifact"]["input"]["dtype"] == "int8"
    markdown = render_markdown(report)
    assert "| host | litert" in markdown and report["artifact"]["sha256"] in markdown


def test_model_description_reads_the_flatbuffer_alone():
    info = inspect_model(TINY_INT8.read_bytes())
    assert [op.name for op in info.ops] == ["CONV_2D", "RESHAPE", "FULLY_CONNECTED", "SOFTMAX"]
    assert info.inputs[0].dtype == info.outputs[0].dtype == "int8" and info.ends_in_softmax
    assert info.float_ops() == []
    assert inspect_model(TINY_FLOAT.read_bytes()).float_ops()


def test_mcu_and_deploy_on_the_committed_model(tmp_path):
    report = api.run_on_target(TINY_INT8, "cortex-m4", EVAL)
    mcu = report["targets"]["cortex-m4"]
    assert mcu["fits"] is True and mcu["arena_bytes"] > 0 and abs(mcu["accuracy"] - 0.9) < 0.1
    # The latency carries the held-out error of published models with the same dominant op class.
    uncertainty = mcu["latency_uncertainty"]
    markdown = render_markdown(report)
    assert f"cortex-m4: {uncertainty['summary']}." in markdown
    if uncertainty["validated"]:
        assert f"{mcu['estimated_latency_ms']:.2f} ± {uncertainty['loo_max_abs_error_pct']:g}%" in markdown
    else:
        assert f"{mcu['estimated_latency_ms']:.2f} (not validated)" in markdown
    outcome = CliRunner().invoke(main, ["deploy", str(TINY_INT8), "--target", "cortex-m4", "--out", str(tmp_path), "--json"])
    assert outcome.exit_code == 0, outcome.stderr
    manifest = json.loads(outcome.stdout)
    assert json.loads((tmp_path / "deploy.json").read_text())["fits"] is manifest["fits"] is True


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_the_run_path_needs_no_tensorflow(tmp_path):
    done = _python(f"""
        import sys
        from click.testing import CliRunner
        from pipeline.cli import main
        for target in ("host", "cortex-m4"):
            outcome = CliRunner().invoke(main, ["run", {str(TINY_INT8)!r}, "--target", target, "--runs", "2"])
            assert outcome.exit_code == 0, outcome.output
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras")))
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_tflm_runs_from_a_library_script_without_a_main_guard(tmp_path):
    script = tmp_path / "check_board.py"
    script.write_text(textwrap.dedent(f"""
        from pipeline import api
        report = api.run_on_target({str(TINY_INT8)!r}, "cortex-m4", {str(EVAL)!r})
        print("accuracy", report["targets"]["cortex-m4"]["accuracy"])
    """))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("accuracy 0.")


@pytest.mark.parametrize("order", [["-q", "run"], ["run", "-q"]])
def test_quiet_means_quiet(tmp_path, order):
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", *order, str(TINY_INT8), "--target", "host",
                           "--eval", str(EVAL), "--runs", "2"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "| host | litert" in done.stdout
