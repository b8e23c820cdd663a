"""No command writes to its inputs: every command on every input kind, each input's sha256 before and after.

The inputs (Keras, h5, SavedModel, ONNX, .tflite, .npz data and an image folder, a -c config, a
report.json with its folder, a fleet inventory) are copied into one folder; every command runs on
them in-process (EDGEPIPE_IN_PROCESS=1: TensorFlow loads once) and afterwards every file in that
folder must have the same sha256 and no file may have appeared or gone. Outputs go elsewhere.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline import api
from pipeline.cli.commands import main

TINY_INT8 = Path(__file__).resolve().parents[1] / "data" / "tiny_int8.tflite"


def _snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative path -> hash)."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_keras, legacy_h5, saved_model_dir, small_npz, image_folder):
    """Every input kind in one folder; the .keras conversion that makes the report runs here, and
    its before/after snapshots are kept for its own test."""
    root = tmp_path_factory.mktemp("inputs")
    paths = {"root": root, "keras": root / "model.keras", "h5": root / "legacy.h5", "saved": root / "saved_model",
             "onnx": root / "torch_cnn.onnx", "tflite": root / "tiny_int8.tflite", "npz": root / "small.npz",
             "images": root / "digits", "inventory": root / "fleet.toml"}
    shutil.copy(tiny_keras, paths["keras"])
    shutil.copy(legacy_h5, paths["h5"])
    shutil.copytree(saved_model_dir, paths["saved"])
    shutil.copy(api.sample_path("torch_cnn.onnx"), paths["onnx"])
    shutil.copy(TINY_INT8, paths["tflite"])
    shutil.copy(small_npz, paths["npz"])
    shutil.copytree(image_folder, paths["images"])
    paths["complex"] = root / "complex.npz"
    with np.load(paths["npz"]) as data:
        np.savez(paths["complex"], x=data["x"][:20].astype(np.complex64), y=data["y"][:20])
    paths["inventory"].write_text(f'[[device]]\nname = "gone"\nhost = "nobody@127.0.0.1"\nport = {_closed_port()}\n'
                                  'target = "rpi4"\n')
    before = _snapshot(root)
    runs = root.parent / f"{root.name}-runs"
    outcome = CliRunner().invoke(main, ["convert", str(paths["keras"]), "--calib", str(paths["npz"]), "--eval",
                                        str(paths["images"]), "--calib-samples", "64", "--runs", "2",
                                        "--out", str(root / "build")])
    assert outcome.exit_code == 0, outcome.stderr
    paths["keras_snapshots"] = (before, {k: v for k, v in _snapshot(root).items() if not k.startswith("build/")})
    paths["report"], paths["config"] = root / "build" / "report.json", root / "build" / "edgepipe.toml"
    paths["runs"] = runs
    return paths


@pytest.fixture(autouse=True)
def _in_process(monkeypatch):
    monkeypatch.setenv("EDGEPIPE_IN_PROCESS", "1")


def test_convert_keras_leaves_its_inputs(inputs):
    before, after = inputs["keras_snapshots"]
    assert after == before


# argv with {placeholders}, the exit status expected (None: whatever it is, as long as it is clean).
COMMANDS = {
    "convert .h5": ("convert {h5} --calib {npz} --calib-samples 64 --runs 2 --out {out}", 0),
    "convert SavedModel": ("convert {saved} --calib {images} --runs 2 --out {out}", 0),
    "convert ONNX": ("convert {onnx} --calib {npz} --calib-samples 64 --runs 2 --out {out}", 0),
    "compare": ("compare {keras} --calib {npz} --eval {npz} --calib-samples 64 --recipes int8,float16 --runs 2 "
                "--out {out}", 0),
    "convert -c config": ("convert -c {config} --out {out} --overwrite", 0),
    "rerun report": ("rerun {report} --out {out}", 0),
    "run .tflite on host": ("run {tflite} --target host --eval {npz} --runs 2", 0),
    "run .tflite in TFLM": ("run {tflite} --target cortex-m4 --eval {images}", 0),
    "run .tflite on a fleet": ("run {tflite} --hosts {inventory} --eval {npz} --out {out}", None),
    "deploy .tflite": ("deploy {tflite} --target cortex-m4 --out {out}", 0),
    "inspect .tflite": ("inspect {tflite} --calib {npz}", 1),
    "convert with complex data": ("convert {keras} --calib {complex} --out {out}", 1),
    "inspect with complex data": ("inspect {keras} --calib {npz} --eval {complex}", 1),
}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_command_leaves_its_inputs(inputs, tmp_path, name):
    argv, code = COMMANDS[name]
    before = _snapshot(inputs["root"])
    outcome = CliRunner().invoke(main, argv.format(out=tmp_path / "out", **inputs).split())
    assert outcome.exception is None or isinstance(outcome.exception, SystemExit), repr(outcome.exception)
    assert "Traceback" not in outcome.stderr
    assert code is None or outcome.exit_code == code, outcome.stderr
    after = _snapshot(inputs["root"])
    changed = sorted(k for k in before if after.get(k) != before[k])
    appeared = sorted(set(after) - set(before))
    assert not changed and not appeared, f"changed {changed}, appeared {appeared}"


def test_report_rebuilds_beside_its_report_json_and_changes_nothing_else(inputs, tmp_path):
    """`report DIR` writes report.md and report.html into DIR (its job); report.json, the artifacts and
    the config there stay byte-identical."""
    folder = tmp_path / "build"
    shutil.copytree(inputs["report"].parent, folder)
    (folder / "report.md").unlink()
    before = _snapshot(folder)
    outcome = CliRunner().invoke(main, ["report", str(folder)])
    assert outcome.exit_code == 0, outcome.stderr
    after = _snapshot(folder)
    rebuilt = {"report.md", "report.html"}
    assert {k: v for k, v in after.items() if k not in rebuilt} == {k: v for k, v in before.items()
                                                                        if k not in rebuilt}
    assert (folder / "report.md").exists()
