"""The CLI as a user drives it: run, targets, help, JSON purity of stdout."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest
from click.testing import CliRunner

from pipeline.cli.commands import main


def test_targets_lists_host():
    outcome = CliRunner().invoke(main, ["targets"])
    assert outcome.exit_code == 0
    lines = outcome.stdout.splitlines()
    assert lines[0].split()[:4] == ["name", "clock", "SRAM", "flash"]
    assert lines[1].startswith("host")
    assert any(line.startswith("cortex-m4") and "120 MHz" in line and "640 KiB" in line for line in lines)
    rows = json.loads(CliRunner().invoke(main, ["targets", "--json"]).stdout)
    assert rows[0]["name"] == "host" and "xnnpack" in rows[0]["capabilities"]


@pytest.mark.quick
def test_help_on_every_command():
    for command in ([], ["convert"], ["run"], ["targets"], ["demo"]):
        outcome = CliRunner().invoke(main, [*command, "--help"])
        assert outcome.exit_code == 0 and "Usage:" in outcome.stdout


@pytest.mark.quick
def test_run_reports_accuracy_equal_to_convert(demo_run):
    result, report = demo_run
    outcome = CliRunner().invoke(main, ["run", str(result.artifact), "--target", "host", "--eval",
                                        report["data"]["eval"]["path"], "--runs", "5", "--json"])
    assert outcome.exit_code == 0, outcome.stderr
    run = json.loads(outcome.stdout)  # stdout is pure JSON, progress went to stderr
    assert run["targets"]["host"]["accuracy"] == report["quantized"]["accuracy"]
    assert run["artifact"]["sha256"] == report["artifact"]["sha256"]
    assert "host: evaluating" in outcome.stderr


def test_run_on_an_image_folder(demo_run, image_folder):
    result, _ = demo_run
    outcome = CliRunner().invoke(main, ["run", str(result.artifact), "--target", "host", "--eval",
                                        str(image_folder), "--runs", "3", "--json"])
    assert outcome.exit_code == 0, outcome.stderr
    run = json.loads(outcome.stdout)
    assert run["data"]["eval"]["samples"] == 60
    # Digits resized 28->32->28 stay recognisable for the reference CNN.
    assert run["targets"]["host"]["accuracy"] > 0.8


def test_run_without_eval_still_times(demo_run):
    result, _ = demo_run
    outcome = CliRunner().invoke(main, ["run", str(result.artifact), "--target", "host", "--runs", "3"])
    assert outcome.exit_code == 0, outcome.stderr
    assert "| host | litert" in outcome.stdout


@pytest.mark.quick
def test_convert_prints_markdown_summary(tiny_keras, small_npz, image_folder, tmp_path):
    outcome = CliRunner().invoke(main, ["convert", str(tiny_keras), "--calib", str(image_folder), "--eval",
                                        str(small_npz), "--out", str(tmp_path), "--runs", "3"])
    assert outcome.exit_code == 0, outcome.stderr
    assert "# edgepipe report" in outcome.stdout
    assert "[8/8] emit" in outcome.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edgepipe.toml", "model_float32.tflite", "model_int8.tflite",
                                                          "report.html", "report.json", "report.md"]


def test_quiet_convert_prints_nothing_on_stderr(tiny_keras, small_npz, tmp_path):
    # A real process: LiteRT and the converter write to file descriptor 2, which CliRunner cannot see.
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "convert", "-q", str(tiny_keras), "--calib", str(small_npz),
                           "--eval", str(small_npz), "--target", "cortex-m4", "--out", str(tmp_path), "--runs", "2"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "# edgepipe report" in done.stdout


@pytest.mark.parametrize("flags, level", [(["-v"], logging.DEBUG), (["-q"], logging.ERROR), ([], logging.INFO)])
def test_verbosity_after_the_command(demo_run, flags, level):
    result, _ = demo_run
    outcome = CliRunner().invoke(main, ["run", str(result.artifact), "--target", "host", "--runs", "2", *flags])
    assert outcome.exit_code == 0, outcome.stderr
    assert logging.getLogger("targets").getEffectiveLevel() == level
    assert ("host: timing" in outcome.stderr) is (level <= logging.INFO)
