"""Hostile and broken inputs: nothing crashes, nothing is lost, nothing is executed.

Every case runs the CLI as a user would and checks: the exit status (non-zero, or 0 where the
input is odd but legitimate), no traceback, a last stderr line that is one sentence saying what to
do, nothing half-written in --out, good artifacts already there left byte-identical, and no
marker file written by code hidden in a model or a data file.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline import api
from pipeline.cli.commands import main
from pipeline.frontend.keras_compat import keras3


@dataclass
class Case:
    """argv (with {placeholders}), the exit status expected, and words the last line must hold."""

    argv: list[str]
    code: int
    words: str = ""
    out: bool = True  # the case writes into {out}
    env: dict = field(default_factory=dict)


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_keras, small_npz, image_folder, mnist_eval) -> dict:
    """Every broken or odd file the cases refer to, made once."""
    keras = keras3()
    keras.utils.set_random_seed(0)
    root = tmp_path_factory.mktemp("hostile")
    marker = root / "MARKER"
    paths = {"tiny": tiny_keras, "npz": small_npz, "images": image_folder, "root": root, "marker": marker}
    x, y = mnist_eval["x"][:120].astype(np.float32) / 255, mnist_eval["y"][:120]

    def npz(name, **arrays):
        np.savez(root / name, **arrays)
        return root / name

    paths["inf"] = npz("inf.npz", x=np.where(np.arange(120)[:, None, None, None] == 7, np.inf, x))
    paths["nan"] = npz("nan.npz", x=np.where(np.arange(120)[:, None, None, None] == 3, np.nan, x), y=y)
    paths["labels42"] = npz("labels42.npz", x=x, y=np.where(np.arange(120) == 5, 42, y))
    paths["objects"] = npz("objects.npz", x=np.array([object(), "x"], dtype=object))
    paths["features"] = npz("features.npz", x=np.zeros((10, 17), np.float32))
    paths["empty_npz"] = npz("empty.npz", x=np.zeros((0, 28, 28, 1), np.float32))
    paths["few_labels"] = npz("few_labels.npz", x=x, y=y[:50])
    paths["float_labels"] = npz("float_labels.npz", x=x, y=y.astype(np.float32) + 0.5)
    paths["no_x"] = npz("no_x.npz", images=x)
    (root / "truncated.npz").write_bytes(paths["npz"].read_bytes()[:300])
    paths["truncated_npz"] = root / "truncated.npz"
    paths["text_file"] = root / "data.csv"
    paths["text_file"].write_text("1,2,3\n")

    def folder(name, files):
        base = root / name / "digit"
        base.mkdir(parents=True)
        for file_name, data in files.items():
            (base / file_name).write_bytes(data)
        return root / name

    good_png = next(image_folder.rglob("*.png")).read_bytes()
    paths["zero_byte"] = folder("zero_byte", {"a.png": good_png, "b.png": b""})
    paths["not_an_image"] = folder("not_an_image", {"a.png": good_png, "b.png": b"just text, not a PNG"})
    paths["with_txt"] = folder("with_txt", {"a.png": good_png, "notes.txt": b"ignored"})
    paths["bomb"] = folder("bomb", {"a.png": good_png, "bomb.png": _png_header(40000, 40000)})
    from PIL import Image
    mixed = root / "mixed" / "digit"
    mixed.mkdir(parents=True)
    for index, size in enumerate((28, 64, 17)):
        Image.fromarray(mnist_eval["x"][index, :, :, 0]).resize((size, size)).save(mixed / f"{index}.png")
    paths["mixed"] = root / "mixed"

    paths["empty_keras"] = root / "empty.keras"
    paths["empty_keras"].write_bytes(b"")
    paths["truncated_keras"] = root / "truncated.keras"
    paths["truncated_keras"].write_bytes(tiny_keras.read_bytes()[:2000])
    paths["empty_h5"] = root / "empty.h5"
    paths["empty_h5"].write_bytes(b"")
    paths["random_h5"] = root / "random.h5"
    paths["random_h5"].write_bytes(os.urandom(4096))
    (root / "not_saved_model").mkdir()
    (root / "not_saved_model" / "readme.txt").write_text("hello")
    paths["not_saved_model"] = root / "not_saved_model"
    (root / "bad_saved_model").mkdir()
    (root / "bad_saved_model" / "saved_model.pb").write_bytes(os.urandom(256))
    paths["bad_saved_model"] = root / "bad_saved_model"
    paths["tflite"] = Path(__file__).resolve().parents[1] / "data" / "tiny_int8.tflite"

    layers = keras.layers
    path = f"{marker}"
    lambda_model = keras.Sequential([keras.Input((28, 28, 1)),
                                     layers.Lambda(lambda t: (open(path, "w").write("ran"), t)[1], name="evil"),
                                     layers.Flatten(), layers.Dense(10, activation="softmax")])
    lambda_model.save(root / "lambda.keras")
    marker.unlink(missing_ok=True)  # building the model ran the lambda once, here; no edgepipe run may
    paths["lambda"] = root / "lambda.keras"

    @keras.saving.register_keras_serializable(package="hostile")
    class Doubler(layers.Layer):
        def call(self, t):
            return t * 2

    custom = keras.Sequential([keras.Input((28, 28, 1)), Doubler(name="doubler"), layers.Flatten(), layers.Dense(10)])
    custom.save(root / "custom.keras")  # the worker process has never heard of Doubler
    paths["custom"] = root / "custom.keras"

    a, b = keras.Input((28, 28, 1)), keras.Input((28, 28, 1))
    keras.Model([a, b], layers.Dense(10)(layers.Flatten()(layers.Add()([a, b])))).save(root / "two_inputs.keras")
    paths["two_inputs"] = root / "two_inputs.keras"
    a = keras.Input((28, 28, 1))
    h = layers.Flatten()(a)
    keras.Model(a, [layers.Dense(10)(h), layers.Dense(3)(h)]).save(root / "two_outputs.keras")
    paths["two_outputs"] = root / "two_outputs.keras"
    keras.Sequential([keras.Input((28, 28)), layers.LSTM(8, name="memory"),
                      layers.Dense(10, activation="softmax")]).save(root / "lstm.keras")
    paths["lstm"] = root / "lstm.keras"
    paths["sequences"] = npz("sequences.npz", x=x[..., 0])
    dynamic = keras.Sequential([keras.Input((None, None, 1)), layers.Conv2D(4, 3, activation="relu"),
                                layers.GlobalAveragePooling2D(), layers.Dense(10, activation="softmax")])
    dynamic.save(root / "dynamic.keras")
    paths["dynamic"] = root / "dynamic.keras"
    fixed = keras.Sequential([keras.Input((28, 28, 1), batch_size=1), layers.Conv2D(4, 3, activation="relu"),
                              layers.Flatten(), layers.Dense(10, activation="softmax")])
    fixed.export(str(root / "batch1_saved_model"), verbose=False)
    paths["batch1"] = root / "batch1_saved_model"
    (root / "a_file").write_text("x")
    paths["a_file"] = root / "a_file"
    (root / "broken.toml").write_text("model = [\n")
    paths["broken_toml"] = root / "broken.toml"
    (root / "threads.toml").write_text(f'model = "{tiny_keras}"\ncalib = "{small_npz}"\n[run]\nthreads = 100000\n')
    paths["threads_toml"] = root / "threads.toml"
    paths["closed_port"] = str(_closed_port())
    return paths


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels (and holds none)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + chunk(b"IEND", b"")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


C = "convert {tiny} --calib {npz} --out {out} --runs 2".split()
CASES = {
    # models
    "missing model": Case("convert {root}/nope.keras --calib {npz} --out {out}".split(), 1, "does not exist"),
    "empty .keras": Case("convert {empty_keras} --calib {npz} --out {out}".split(), 1, "not a readable .keras file"),
    "truncated .keras": Case("convert {truncated_keras} --calib {npz} --out {out}".split(), 1, ".keras"),
    "empty .h5": Case("convert {empty_h5} --calib {npz} --out {out}".split(), 1, "not a readable HDF5 file"),
    "random .h5": Case("convert {random_h5} --calib {npz} --out {out}".split(), 1, "not a readable HDF5 file"),
    "folder that is not a SavedModel": Case("convert {not_saved_model} --calib {npz} --out {out}".split(), 1,
                                            "without saved_model.pb"),
    "corrupt saved_model.pb": Case("convert {bad_saved_model} --calib {npz} --out {out}".split(), 1,
                                   "cannot load SavedModel"),
    "a .tflite given to convert": Case("convert {tflite} --calib {npz} --out {out}".split(), 1, "edgepipe run"),
    "Lambda layer without --unsafe": Case("convert {lambda} --calib {npz} --out {out}".split(), 1, "--unsafe"),
    "unregistered custom layer": Case("convert {custom} --calib {npz} --out {out}".split(), 1, "custom layers"),
    "two inputs": Case("convert {two_inputs} --calib {npz} --out {out}".split(), 1, "exactly one input and one output"),
    "two outputs": Case("convert {two_outputs} --calib {npz} --out {out}".split(), 1, "exactly one input and one output"),
    "LSTM to int8": Case("convert {lstm} --calib {sequences} --out {out}".split(), 1, "--recipe dynamic or float16"),
    "LSTM crash, pre-check off": Case("convert {lstm} --calib {sequences} --out {out}".split(), 1,
                                      "killed by SIGSEGV", env={"EDGEPIPE_SKIP_KNOWN_CRASH_CHECKS": "1"}),
    "LSTM to dynamic range": Case("convert {lstm} --calib {sequences} --recipe dynamic --out {out} --runs 2".split(), 0),
    "dynamic height and width": Case("convert {dynamic} --calib {npz} --out {out}".split(), 2, "--input-shape"),
    "dynamic dims given": Case("convert {dynamic} --calib {npz} --eval {npz} --input-shape 28,28,1 --out {out} "
                               "--runs 2".split(), 0),
    "bad --input-shape": Case("convert {dynamic} --calib {npz} --input-shape 28,x --out {out}".split(), 2,
                              "not a list of sizes"),
    "SavedModel with a fixed batch of 1": Case("convert {batch1} --calib {npz} --eval {npz} --out {out} "
                                               "--runs 2".split(), 0),
    # data
    "calibration with Inf": Case("convert {tiny} --calib {inf} --scale 1 --out {out}".split(), 1,
                                 "sample 7 holds an infinite value"),
    "calibration with NaN": Case("convert {tiny} --calib {nan} --scale 1 --out {out}".split(), 1, "sample 3 holds NaN"),
    "eval with NaN": Case([*C, "--eval", "{nan}"], 1, "sample 3 holds NaN"),
    "eval labels out of range": Case([*C, "--eval", "{labels42}", "--scale", "1"], 1, "label 42 of sample 5"),
    "decompression bomb": Case("convert {tiny} --calib {bomb} --out {out}".split(), 1, "claims more pixels"),
    "zero-byte image": Case("convert {tiny} --calib {zero_byte} --out {out}".split(), 1, "cannot read image"),
    "text named .png": Case("convert {tiny} --calib {not_an_image} --out {out}".split(), 1, "cannot read image"),
    "a .txt among images": Case("convert {tiny} --calib {with_txt} --out {out} --runs 2".split(), 0),
    "mixed image sizes": Case("convert {tiny} --calib {mixed} --out {out} --runs 2".split(), 0),
    "object arrays in .npz": Case("convert {tiny} --calib {objects} --out {out}".split(), 1, "not a readable .npz"),
    "wrong feature count": Case("convert {tiny} --calib {features} --out {out}".split(), 1, "samples of shape (17,)"),
    "zero samples": Case("convert {tiny} --calib {empty_npz} --out {out}".split(), 1, "holds no samples"),
    "too few labels": Case([*C, "--eval", "{few_labels}"], 1, "50 labels"),
    "float labels": Case([*C, "--eval", "{float_labels}"], 1, "integer class labels"),
    "npz without x": Case("convert {tiny} --calib {no_x} --out {out}".split(), 1, "has no array 'x'"),
    "truncated .npz": Case("convert {tiny} --calib {truncated_npz} --out {out}".split(), 1, "not a readable .npz"),
    "data that is neither": Case("convert {tiny} --calib {text_file} --out {out}".split(), 1, "neither a folder"),
    # options and outputs
    "--out is a file": Case("convert {tiny} --calib {npz} --out {a_file}".split(), 2, "is a file", out=False),
    "--out under a file": Case("convert {tiny} --calib {npz} --out {a_file}/sub".split(), 2, "cannot be created",
                               out=False),
    "--out cannot be created": Case("convert {tiny} --calib {npz} --out /proc/edgepipe-out".split(), 2,
                                    "cannot be created", out=False),
    "zero calibration samples": Case("convert {tiny} --calib {npz} --calib-samples 0 --out {out}".split(), 2, ""),
    "negative runs": Case("convert {tiny} --calib {npz} --runs -3 --out {out}".split(), 2, ""),
    "percentile below 50": Case("convert {tiny} --calib {npz} --percentile 30 --out {out}".split(), 2, ""),
    "int8 without calibration data": Case("convert {tiny} --out {out}".split(), 2, "pass --calib DATA"),
    "broken config file": Case("convert -c {broken_toml} --out {out}".split(), 2, "cannot read the config file"),
    "unknown target": Case("convert {tiny} --calib {npz} --target nowhere --out {out}".split(), 2, ""),
    # XNNPACK's thread pool died by SIGSEGV on a count it could not start, taking the process with it
    "too many threads": Case("run {tflite} --target host --threads 100000".split(), 2, "from 1 to 1024", out=False),
    "too many threads to convert": Case([*C, "--threads", "100000"], 2, "from 1 to 1024"),
    "too many threads in a config file": Case("convert -c {threads_toml} --out {out}".split(), 2,
                                              "threads must be a whole number from 1 to 1024"),
    "--scale nan": Case([*C, "--scale", "nan"], 2, "--scale (preprocess scale) must be a finite number, not nan"),
    "--scale inf": Case("run {tflite} --target host --eval {npz} --scale inf".split(), 2,
                        "--scale (preprocess scale) must be a finite number, not inf", out=False),
    "--offset -inf": Case("run {tflite} --target host --offset -inf".split(), 2,
                          "--offset (preprocess offset) must be a finite number", out=False),
    "compare --recipes ,": Case("compare {tiny} --calib {npz} --eval {npz} --recipes , --out {out}".split(), 2,
                                "--recipes names nothing; give one or more of int8, int16x8, float16, dynamic, float32"),
    "compare --recipes blank": Case(["compare", "{tiny}", "--calib", "{npz}", "--recipes", " ", "--out", "{out}"], 2,
                                    "--recipes names nothing"),
    # targets and SSH
    "host with shell characters": Case("run {tflite} --target rpi4 --host pi@localhost;touch${{IFS}}{marker}".split(), 2,
                                       "is not a host name", out=False),
    "host starting with -": Case(["run", "{tflite}", "--target", "rpi4", "--host", "-oProxyCommand=touch {marker}"], 2,
                                 "is not a host name", out=False),
    "closed SSH port": Case("run {tflite} --target rpi4 --host nobody@127.0.0.1 --port {closed_port}".split(), 1,
                            "cannot reach", out=False),
    "--host on a microcontroller": Case("run {tflite} --target cortex-m4 --host pi@example".split(), 2,
                                        "targets that do: arm64, rpi4, rpi5", out=False),
}


def _expand(argv: list[str], world: dict, out: Path) -> list[str]:
    return [arg.format(out=out, **{k: v for k, v in world.items()}) for arg in argv]


def _check(outcome_code: int, stderr: str, stdout: str, case: Case, out: Path, world: dict) -> None:
    assert outcome_code == case.code, stderr
    assert "Traceback" not in stderr + stdout
    assert not world["marker"].exists(), "code hidden in an input ran"
    if case.code:
        last = stderr.strip().splitlines()[-1]
        assert last.startswith(("edgepipe: error: ", "Error: ")), last  # ours, or click's usage errors
        assert case.words in last, last
        assert last.rstrip().endswith((".", "?", "'")) and len(last) < 900, last
        if case.out:
            assert not out.exists() or not any(out.iterdir()), sorted(out.iterdir())
    if out.exists():
        assert not list(out.rglob("*.tmp")), "a half-written file"


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(world, tmp_path, monkeypatch, name):
    case = CASES[name]
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "out"
    outcome = CliRunner().invoke(main, _expand(case.argv, world, out))
    _check(outcome.exit_code, outcome.stderr, outcome.stdout, case, out, world)


def test_lambda_code_does_not_run_even_with_a_good_output_folder(world, tmp_path):
    out = tmp_path / "out"
    good = CliRunner().invoke(main, _expand(C, world, out))
    assert good.exit_code == 0, good.stderr
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for argv in (["convert", "{lambda}", "--calib", "{npz}", "--out", "{out}", "--overwrite"],
                 ["convert", "{tiny}", "--calib", "{nan}", "--scale", "1", "--out", "{out}", "--overwrite"]):
        bad = CliRunner().invoke(main, _expand(argv, world, out))
        assert bad.exit_code == 1 and "Traceback" not in bad.stderr
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the good artifacts survive, byte for byte
    assert not world["marker"].exists()


def _default_interrupt() -> None:
    # A suite started as a background job of a non-interactive shell (CI, nohup ... &) inherits SIGINT
    # ignored, and so would the command under test; a user's terminal delivers it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _cli(*argv, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", *map(str, argv)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_default_interrupt, **kwargs)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_conversion_leaves_nothing_and_the_next_run_works(world, tmp_path, signum):
    out, marker = tmp_path / "out", tmp_path / "in-targets-stage"
    # The test hook of run_pipeline: the worker writes the marker on entering the targets stage and
    # waits there, so the signal lands while the stage certainly runs (no race with a fast stage).
    hold = {**os.environ, "EDGEPIPE_TEST_HOLD_STAGE": "targets", "EDGEPIPE_TEST_HOLD_MARKER": str(marker)}
    process = _cli("convert", world["tiny"], "--calib", world["npz"], "--eval", world["npz"], "--out", out,
                   "--target", "cortex-m4", "--runs", "2", env=hold)
    deadline = time.monotonic() + 300
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), process.communicate(timeout=30)
    process.send_signal(signum)
    _, rest = process.communicate(timeout=120)
    assert process.returncode == 130, rest
    assert rest.strip().splitlines()[-1].startswith("edgepipe: error: interrupted") and "Traceback" not in rest
    assert not out.exists() or not any(out.iterdir())
    again = _cli("convert", world["tiny"], "--calib", world["npz"], "--out", out, "--runs", "2")
    again.communicate(timeout=300)
    assert again.returncode == 0 and (out / "report.json").exists()


@pytest.fixture(scope="module")
def run_report() -> dict:
    """The report of `edgepipe run` of the committed tiny model on the host (no TensorFlow needed)."""
    return api.run_on_target(Path(__file__).resolve().parents[1] / "data" / "tiny_int8.tflite", "host",
                             options=api.RunOptions(runs=2))


def _without(report: dict, *path: str) -> dict:
    report = copy.deepcopy(report)
    table = report
    for key in path[:-1]:
        table = table[key]
    del table[path[-1]]
    return report


DAMAGED_REPORTS = {  # what report.json holds -> words of the last line
    "a missing key": (lambda r: json.dumps(_without(r, "artifact", "sha256")), "lacks the key 'artifact.sha256'"),
    "a missing table": (lambda r: json.dumps(_without(r, "artifact")), "lacks the key 'artifact'"),
    "not JSON": (lambda r: json.dumps(r)[:200], "is not JSON"),
    "not an object": (lambda r: json.dumps([r]), "holds a JSON list, not a report object"),
}


@pytest.mark.fast
@pytest.mark.parametrize("damage", list(DAMAGED_REPORTS))
def test_edgepipe_report_on_a_damaged_report_json_says_what_to_do_and_writes_nothing(run_report, tmp_path, damage):
    spoil, words = DAMAGED_REPORTS[damage]
    (tmp_path / "report.json").write_text(spoil(run_report))
    before = (tmp_path / "report.json").read_bytes()
    outcome = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert outcome.exit_code == 2 and "Traceback" not in outcome.output
    last = outcome.stderr.strip().splitlines()[-1]
    assert last.startswith(f"edgepipe: error: {tmp_path / 'report.json'} ") and words in last, last
    assert "re-run the command that wrote it" in last and last.endswith(".")
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"] and (tmp_path / "report.json").read_bytes() == before


def test_two_conversions_into_one_folder_at_once(world, tmp_path):
    out = tmp_path / "out"
    runs = [_cli("convert", world["tiny"], "--calib", world["npz"], "--recipe", recipe, "--out", out, "--runs", "2",
                 "--overwrite") for recipe in ("int8", "int8")]
    results = [run.communicate(timeout=600) for run in runs]
    assert all(run.returncode == 0 for run in runs), results
    report = json.loads((out / "report.json").read_text())
    import hashlib
    for row in report["candidates"]:
        path = Path(row["artifact"]["path"])
        assert hashlib.sha256(path.read_bytes()).hexdigest() == row["artifact"]["sha256"]
    assert not list(out.glob(".*.tmp"))


def test_two_conversions_without_overwrite_one_wins_one_says_why(world, tmp_path):
    out = tmp_path / "out"
    runs = [_cli("convert", world["tiny"], "--calib", world["npz"], "--out", out, "--runs", "2") for _ in range(2)]
    results = [run.communicate(timeout=600) for run in runs]
    codes = sorted(run.returncode for run in runs)
    assert codes in ([0, 0], [0, 2]), results  # the second may start after the first finished
    for (_, err), run in zip(results, runs):
        if run.returncode == 2:
            assert "--overwrite" in err.strip().splitlines()[-1]


def test_the_battery_is_big_enough():
    assert len(CASES) + 5 >= 40
