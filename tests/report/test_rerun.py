"""Reproducible conversion: one lock, the environment recorded, and `edgepipe rerun`."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli.commands import main
from pipeline.frontend.keras_compat import keras3

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def converted(tmp_path_factory, tiny_keras, small_npz):
    folder = tmp_path_factory.mktemp("rerun")
    model = folder / "model.keras"
    shutil.copy(tiny_keras, model)
    outcome = CliRunner().invoke(main, ["convert", str(model), "--calib", str(small_npz), "--eval", str(small_npz),
                                        "--out", str(folder / "build"), "--runs", "2"])
    assert outcome.exit_code == 0, outcome.stderr
    return folder, model


def test_the_report_records_what_shapes_the_bytes(converted):
    folder, _ = converted
    env = json.loads((folder / "build" / "report.json").read_text())["environment"]
    for key in ("python", "tensorflow", "keras", "tf_keras", "numpy", "litert", "tflite_micro", "flatbuffers"):
        assert env[key], key
    assert env["lock_sha256"] == hashlib.sha256((ROOT / "requirements.lock").read_bytes()).hexdigest()
    assert env["container"] is False


@pytest.mark.quick
def test_a_rerun_matches(converted):
    folder, _ = converted
    outcome = CliRunner().invoke(main, ["rerun", str(folder / "build" / "report.json"), "--json"])
    assert outcome.exit_code == 0, outcome.stderr
    verdict = json.loads(outcome.stdout)
    assert verdict["match"] is True and verdict["artifacts"][0]["then"] == verdict["artifacts"][0]["now"]


def test_a_changed_model_is_named_as_the_reason(converted, tmp_path):
    folder, model = converted
    keras = keras3()
    changed = keras.models.load_model(model)
    weights = changed.get_weights()
    weights[0] = weights[0] * 1.01
    changed.set_weights(weights)
    changed.save(model)
    outcome = CliRunner().invoke(main, ["rerun", str(folder / "build" / "report.json"), "--out", str(tmp_path)])
    assert outcome.exit_code == 1
    assert re.search(r"mismatch: the model .*model\.keras changed \(sha256 [0-9a-f]{12}\.\.\. then", outcome.stdout)
    assert (tmp_path / "report.json").exists()


def test_every_install_uses_the_one_lock():
    lock = (ROOT / "requirements.lock").read_text()
    pinned = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\", lock, re.M))
    assert pinned["tensorflow"] == "2.21.0" and "tensorflow-cpu" not in pinned  # one TensorFlow
    assert pinned["tflite-micro"].startswith("0.dev")
    assert all("--hash=sha256:" in block for block in lock.split(" \\\n    # via")[0:1])
    makefile, ci = (ROOT / "Makefile").read_text(), (ROOT / ".ci" / "run").read_text()
    assert "--require-hashes --no-deps -r requirements.lock" in makefile and "make test" in ci
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "requirements.lock" in dockerfile and "--require-hashes" in dockerfile
