"""The demo: the whole pipeline on the shipped sample, and the report keys other tools rely on."""

from __future__ import annotations

import hashlib
from pathlib import Path

from click.testing import CliRunner

from pipeline.cli.commands import main


def test_report_has_the_design_keys(demo_run):
    _, report = demo_run
    assert report["schema"] == 2
    for key in ("path", "sha256", "params", "macs"):
        assert report["model"][key] is not None
    assert report["recipe"] == "int8"
    for role in ("calib", "eval"):
        assert set(report["data"][role]) >= {"path", "sha256", "samples"}
    assert set(report["artifact"]) >= {"path", "sha256", "bytes"}
    assert set(report["float"]) >= {"accuracy", "tflite_bytes"}
    assert set(report["quantized"]) >= {"accuracy", "agreement"}
    host = report["targets"]["host"]
    assert set(host) >= {"runtime", "delegate", "accuracy", "latency_ms"}
    assert set(host["latency_ms"]) >= {"p50", "p90"}
    assert set(report["environment"]) >= {"python", "tensorflow", "litert", "tflite_micro", "platform"}


def test_int8_keeps_accuracy_and_shrinks_the_model(demo_run):
    _, report = demo_run
    assert report["float"]["accuracy"] > 0.9
    assert abs(report["quantized"]["accuracy"] - report["float"]["accuracy"]) <= 0.01
    assert report["quantized"]["agreement"] >= 0.98
    assert report["artifact"]["bytes"] <= 0.30 * report["float"]["tflite_bytes"]
    # The float TFLite reproduces Keras before quantization is judged.
    assert report["float"]["tflite_accuracy"] == report["float"]["accuracy"]
    assert report["float"]["tflite_vs_keras"]["max_abs"] < 1e-4


def test_host_runs_litert_with_xnnpack(demo_run):
    _, report = demo_run
    host = report["targets"]["host"]
    assert host["runtime"].startswith("litert")
    assert host["delegate"] == "XNNPACK"
    assert host["xnnpack"]["delegated_ops"] >= host["xnnpack"]["total_ops"] - 1
    assert 0 < host["latency_ms"]["p50"] <= host["latency_ms"]["p90"]
    assert host["accuracy"] == report["quantized"]["accuracy"]
    assert host["samples"] == report["data"]["eval"]["samples"] == 1500


def test_int8_artifact_has_int8_io(demo_run):
    _, report = demo_run
    artifact = report["artifact"]
    assert artifact["input"]["dtype"] == artifact["output"]["dtype"] == "int8"
    assert artifact["input"]["scale"] > 0
    assert artifact["input"]["shape"] == [1, 28, 28, 1]


def test_artifacts_on_disk_match_the_report(demo_run):
    result, report = demo_run
    blob = Path(report["artifact"]["path"]).read_bytes()
    assert hashlib.sha256(blob).hexdigest() == report["artifact"]["sha256"]
    assert len(blob) == report["artifact"]["bytes"]
    assert Path(report["float"]["tflite_path"]).stat().st_size == report["float"]["tflite_bytes"]
    markdown = (result.out / "report.md").read_text()
    assert "| int8 " in markdown and "| host | litert" in markdown
    assert not list(result.out.glob(".*tmp"))


def test_demo_command_refuses_to_clobber_without_overwrite(demo_run):
    result, _ = demo_run
    outcome = CliRunner().invoke(main, ["demo", "--out", str(result.out)])
    assert outcome.exit_code == 2
    assert "--overwrite" in outcome.stderr


def test_the_demo_gets_no_advice_and_a_report_shows_what_it_gets(demo_run):
    from pipeline.report.html import render_html
    from pipeline.report.markdown import render_markdown

    _, report = demo_run
    assert report["advice"] == []
    shown = {**report, "advice": ["On the host int8 is slower than float."]}
    assert "Advice: On the host int8 is slower than float." in render_markdown(shown)
    assert "<b>Advice</b>: On the host int8 is slower than float." in render_html(shown)
