"""Hostile inputs, third round: run, deploy, rerun, report, inspect, -c configs and fleet inventories.

Files that are not what their name says or are cut short, reports that no longer match their
models or were edited, configs and inventories with unknown keys or wrong types, models a target
can take only in part (broken quantization, an op TFLM lacks, float I/O for a deploy bundle), data
of unusual types and extreme values. Each case runs the CLI in-process, as test_bad_inputs.py does,
and checks: the exit status, no traceback, a last stderr line that is one sentence saying what to
do, nothing written to --out. None of them needs TensorFlow: they fail (or pass) before it loads.
"""

from __future__ import annotations

import json
import shutil
import socket
import struct
import subprocess
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tflite_edit
from click.testing import CliRunner

import targets
from edgecore.metrics import latency_summary
from pipeline import api
from pipeline.cli.commands import main
from targets import Capability, RunOptions, Target, TargetResult

pytestmark = pytest.mark.fast

DATA = Path(__file__).resolve().parents[1] / "data"
TINY_INT8 = DATA / "tiny_int8.tflite"
TINY_FLOAT = DATA / "tiny_float32.tflite"
SHA = "0" * 64


@dataclass
class Case:
    """argv (with {placeholders}), the exit status expected, and words the last stderr line must hold."""

    argv: list[str]
    code: int
    words: str = ""


def _png(width: int, height: int, depth: int, pixels: bytes) -> bytes:
    """A greyscale PNG of ``depth`` bits per pixel."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\0" + pixels[r * width * depth // 8:(r + 1) * width * depth // 8] for r in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _with_op(blob: bytes, old: str, new: str) -> bytes:
    """``blob`` with every ``old`` op turned into ``new`` (same inputs and outputs)."""
    model = tflite_edit.load(blob)
    codes = vars(tflite_edit.schema.BuiltinOperator)
    for code in model.operatorCodes:
        if max(code.builtinCode, code.deprecatedBuiltinCode) == codes[old]:
            code.builtinCode, code.deprecatedBuiltinCode = codes[new], min(codes[new], 127)
    return tflite_edit.save(model)


def _with_custom(blob: bytes, old: str, code: str) -> bytes:
    """``blob`` with every ``old`` op turned into the custom op ``code``."""
    model = tflite_edit.load(blob)
    codes = vars(tflite_edit.schema.BuiltinOperator)
    for entry in model.operatorCodes:
        if max(entry.builtinCode, entry.deprecatedBuiltinCode) == codes[old]:
            entry.builtinCode = entry.deprecatedBuiltinCode = codes["CUSTOM"]
            entry.customCode = code.encode()
    return tflite_edit.save(model)


def _edited(blob: bytes, edit) -> bytes:
    model = tflite_edit.load(blob)
    edit(model)
    return tflite_edit.save(model)


def _softmax_without_options(model) -> None:
    inputs, _ = tflite_edit.op_tensors(model, "SOFTMAX")
    op = next(op for op in model.subgraphs[0].operators if list(op.inputs) == inputs)
    op.builtinOptions, op.builtinOptionsType = None, 0


def _dense_output_unquantized(model) -> None:
    _, outputs = tflite_edit.op_tensors(model, "FULLY_CONNECTED")
    model.subgraphs[0].tensors[outputs[0]].quantization = None


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """Every broken, tampered or odd file the cases refer to, made once, without TensorFlow."""
    root = tmp_path_factory.mktemp("hostile3")
    blob = TINY_INT8.read_bytes()
    paths: dict = {"root": root, "int8": TINY_INT8, "float": TINY_FLOAT}

    def write(name: str, data: bytes | str) -> Path:
        path = root / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        return path

    # Models that are not what their name says, cut short, or tampered.
    paths["zip_tflite"] = write("zip.tflite", b"PK\x03\x04\x14\x00\x00\x00" + bytes(200))
    paths["half_tflite"] = write("half.tflite", blob[: len(blob) // 2])
    paths["empty_tflite"] = write("empty.tflite", b"")
    paths["text_tflite"] = write("notes.tflite", "this is not a model\n")
    paths["tflite_keras"] = write("model.keras", blob)  # a .tflite named .keras
    paths["zero_in"] = write("zero_in.tflite", tflite_edit.set_scale(blob, "CONV_2D", "inputs", 0, 0.0))
    paths["nan_in"] = write("nan_in.tflite", tflite_edit.set_scale(blob, "CONV_2D", "inputs", 0, float("nan")))
    paths["neg_conv"] = write("neg_conv.tflite", tflite_edit.set_scale(blob, "CONV_2D", "outputs", 0, -0.01))
    paths["inf_dense"] = write("inf_dense.tflite", tflite_edit.set_scale(blob, "FULLY_CONNECTED", "outputs", 0,
                                                                          float("inf")))
    paths["nan_out"] = write("nan_out.tflite", tflite_edit.set_scale(blob, "SOFTMAX", "outputs", 0, float("nan")))
    paths["gelu"] = write("gelu.tflite", _with_op(blob, "SOFTMAX", "GELU"))
    paths["topk"] = write("topk.tflite", _with_op(blob, "SOFTMAX", "TOPK_V2"))
    paths["no_beta"] = write("no_beta.tflite", _edited(blob, _softmax_without_options))
    paths["lost_quant"] = write("lost_quant.tflite", _edited(blob, _dense_output_unquantized))
    paths["subnormal"] = write("subnormal.tflite", tflite_edit.set_scale(blob, "CONV_2D", "outputs", 0, 1e-41))
    paths["flex"] = write("flex.tflite", _with_custom(blob, "SOFTMAX", "FlexSoftmax"))
    paths["npu_op"] = write("npu_op.tflite", _with_custom(blob, "SOFTMAX", "ethos-u"))
    (root / "a_folder.tflite").mkdir()
    paths["folder_tflite"] = root / "a_folder.tflite"

    # Data of unusual types and extreme values (the tiny model takes 28x28x1).
    with np.load(api.sample_path("mnist", "eval.npz")) as sample:
        x, y = sample["x"][:40], sample["y"][:40]

    def npz(name: str, **arrays) -> Path:
        np.savez(root / name, **arrays)
        return root / name

    paths["complex"] = npz("complex.npz", x=x.astype(np.complex64) * (1 + 1j))
    paths["text"] = npz("text.npz", x=np.array(["a", "b"]))
    paths["dates"] = npz("dates.npz", x=np.array(["2024-01-01"] * 4, dtype="datetime64[D]"))
    paths["objects"] = npz("objects.npz", x=np.array([object(), 1], dtype=object))
    paths["huge64"] = npz("huge64.npz", x=np.where(np.arange(40)[:, None, None, None] == 6, 1e300,
                                                     x.astype(np.float64) / 255))
    paths["big32"] = npz("big32.npz", x=np.full((4, 28, 28, 1), 1e38, np.float32))
    paths["scalar"] = npz("scalar.npz", x=np.float32(3.0))
    paths["no_samples"] = npz("no_samples.npz", x=np.zeros((0, 28, 28, 1), np.float32))
    paths["one_sample"] = npz("one_sample.npz", x=x[:1], y=y[:1])
    paths["bools"] = npz("bools.npz", x=x > 127, y=y)
    paths["uint16"] = npz("uint16.npz", x=x.astype(np.uint16) * 257, y=y)
    paths["int64"] = npz("int64.npz", x=x.astype(np.int64), y=y)
    paths["float_labels"] = npz("float_labels.npz", x=x, y=y.astype(np.float32))
    paths["bool_labels"] = npz("bool_labels.npz", x=x, y=y > 4)
    paths["text_labels"] = npz("text_labels.npz", x=x, y=y.astype(str))
    paths["wide_labels"] = npz("wide_labels.npz", x=x, y=np.stack([y, y], axis=1))
    paths["negative_labels"] = npz("negative_labels.npz", x=x, y=np.where(np.arange(40) == 9, -3, y.astype(np.int64)))
    paths["tflite_npz"] = write("data.npz", blob)  # a .tflite named .npz
    sixteen = root / "sixteen" / "digit"
    sixteen.mkdir(parents=True)
    (sixteen / "a.png").write_bytes(_png(28, 28, 16, (np.arange(28 * 28, dtype=">u2") * 80).tobytes()))
    paths["sixteen"] = root / "sixteen"

    # -c config files (each names a model that would exist, so the file itself is what fails).
    model = f'model = "{TINY_INT8}"\n'

    def toml(name: str, text: str | bytes) -> Path:
        return write(name, text)

    paths["cfg_unknown"] = toml("unknown.toml", model + "recipie = \"int8\"\n")
    paths["cfg_run_unknown"] = toml("run_unknown.toml", model + "[run]\nthread = 2\n")
    paths["cfg_string_number"] = toml("string_number.toml", model + 'calib_samples = "many"\n')
    paths["cfg_list_path"] = toml("list_path.toml", 'model = ["a.keras", "b.keras"]\n')
    paths["cfg_table_path"] = toml("table_path.toml", model + "[calib]\npath = \"x.npz\"\n")
    paths["cfg_table_flag"] = toml("table_flag.toml", model + "overwrite = {yes = true}\n")
    paths["cfg_scalar_table"] = toml("scalar_table.toml", model + "run = [1, 2]\n")
    paths["cfg_preprocess_3"] = toml("preprocess_3.toml", model + "preprocess = 3\n")
    paths["cfg_not_toml"] = toml("not_toml.toml", '{"model": "m.keras"}\n')  # JSON named .toml
    paths["cfg_empty"] = toml("empty.toml", "")
    paths["cfg_binary"] = toml("binary.toml", bytes(range(256)) * 4)
    paths["cfg_huge"] = toml("huge.toml", model + "calib_samples = 99999999999999999999\n")
    paths["cfg_negative"] = toml("negative.toml", model + "calib_samples = -5\n")
    paths["cfg_negative_runs"] = toml("negative_runs.toml", model + "[run]\nruns = -1\n")
    paths["cfg_nan"] = toml("nan.toml", model + "percentile = nan\n")
    paths["cfg_inf"] = toml("inf.toml", model + "max_accuracy_drop = inf\n")
    paths["cfg_deep"] = toml("deep.toml", "a = " + "[" * 3000 + "]" * 3000 + "\n")
    paths["cfg_inventory"] = toml("inventory_as_config.toml", '[[device]]\nname = "pi"\nhost = "pi@h"\n')
    paths["cfg_bad_recipe"] = toml("bad_recipe.toml", model + 'recipe = "int4"\n')
    paths["cfg_date"] = toml("date.toml", "model = 2024-01-01\n")

    # Fleet inventories.
    device = '[[device]]\nname = "{name}"\nhost = "pi@127.0.0.1"\ntarget = "rpi4"\n'
    paths["inv_unknown_key"] = toml("inv_unknown_key.toml", device.format(name="pi") + 'colour = "red"\n')
    paths["inv_top_key"] = toml("inv_top_key.toml", '[[devices]]\nname = "pi"\nhost = "pi@h"\n')
    paths["inv_single_table"] = toml("inv_single_table.toml", '[device]\nname = "pi"\nhost = "pi@h"\n')
    paths["inv_port_string"] = toml("inv_port_string.toml", device.format(name="pi") + 'port = "twenty-two"\n')
    paths["inv_port_bool"] = toml("inv_port_bool.toml", device.format(name="pi") + "port = true\n")
    paths["inv_port_range"] = toml("inv_port_range.toml", device.format(name="pi") + "port = 70000\n")
    paths["inv_port_list"] = toml("inv_port_list.toml", device.format(name="pi") + "port = [22]\n")
    paths["inv_host_number"] = toml("inv_host_number.toml", '[[device]]\nname = "pi"\nhost = 5\ntarget = "rpi4"\n')
    paths["inv_name_list"] = toml("inv_name_list.toml", '[[device]]\nname = ["a"]\nhost = "pi@h"\ntarget = "rpi4"\n')
    paths["inv_identity_table"] = toml("inv_identity_table.toml", device.format(name="pi") + "identity = {a = 1}\n")
    paths["inv_no_host"] = toml("inv_no_host.toml", '[[device]]\nname = "pi"\ntarget = "rpi4"\n')
    paths["inv_duplicate"] = toml("inv_duplicate.toml", device.format(name="pi") + device.format(name="pi"))
    paths["inv_not_toml"] = toml("inv_not_toml.toml", "pi@10.0.0.5\npi@10.0.0.6\n")
    paths["inv_binary"] = toml("inv_binary.toml", bytes(range(128, 256)) * 8)
    paths["inv_empty"] = toml("inv_empty.toml", "")
    paths["inv_target_number"] = toml("inv_target_number.toml", '[[device]]\nname = "pi"\nhost = "pi@h"\ntarget = 4\n')
    paths["inv_unknown_target"] = toml("inv_unknown_target.toml", '[[device]]\nname = "pi"\nhost = "pi@h"\n'
                                       'target = "rpi9"\n')

    # Reports for rerun: each fails before any conversion.
    config = {"model": str(root / "gone.keras"), "calib": str(paths["one_sample"]), "out": str(root / "out")}

    def report(name: str, body) -> Path:
        return write(name, body if isinstance(body, (str, bytes)) else json.dumps(body))

    good = {"schema": 2, "config": config, "model": {"sha256": SHA},
            "candidates": [{"name": "int8", "artifact": {"sha256": SHA}}], "chosen": "int8"}
    paths["rep_truncated"] = report("truncated.json", json.dumps(good)[:40])
    paths["rep_list"] = report("list.json", "[1, 2, 3]")
    paths["rep_schema"] = report("schema.json", {**good, "schema": 7})
    paths["rep_no_schema"] = report("no_schema.json", {k: v for k, v in good.items() if k != "schema"})
    paths["rep_run"] = report("run_report.json", {k: v for k, v in good.items() if k != "config"})
    paths["rep_unknown_key"] = report("unknown_key.json", {**good, "config": {**config, "colour": "red"}})
    paths["rep_wrong_type"] = report("wrong_type.json", {**good, "config": {**config, "calib_samples": "all"}})
    paths["rep_bad_recipe"] = report("bad_recipe.json", {**good, "config": {**config, "recipe": "int3"}})
    paths["rep_artifact_sha"] = report("artifact_sha.json", {**good, "candidates": [
        {"name": "int8", "artifact": {"sha256": "deadbeef"}}]})
    paths["rep_model_sha"] = report("model_sha.json", {**good, "model": {"sha256": 12345}})
    paths["rep_candidates"] = report("candidates.json", {**good, "candidates": {"int8": SHA}})
    paths["rep_model_gone"] = report("model_gone.json", good)
    paths["rep_no_hashes"] = report("no_hashes.json", {k: v for k, v in good.items() if k != "candidates"})
    paths["rep_no_model"] = report("no_model.json", {**good, "config": {"calib": config["calib"]}})
    paths["rep_deep"] = report("deep.json", "[" * 100000 + "]" * 100000)
    paths["rep_binary"] = report("binary.json", bytes(range(256)))
    paths["rep_nan"] = report("nan.json", json.dumps({**good, "config": {**config, "percentile": float("nan")}}))
    # report DIR: a folder whose report.json is cut short, or not an object.
    wrong_type = dict(good, targets={}, artifact=[1, 2])
    deep = '{"schema": 1, "targets": {}, "artifact": ' + "[" * 100000 + "]" * 100000 + "}"
    for name, text in (("report_cut", json.dumps(good)[:25]), ("report_list", "[]"), ("report_deep", deep),
                       ("report_wrong_type", json.dumps(wrong_type))):
        (root / name).mkdir()
        (root / name / "report.json").write_text(text)
        paths[name] = root / name
    paths["closed_port"] = str(_closed_port())
    return paths


R = "run {{{}}} --target host --runs 2 --warmup 0".format
CASES = {
    # run: models that are not what their name says, cut short, tampered
    "run: a zip named .tflite": Case(R("zip_tflite").split(), 1, "no TFL3 identifier"),
    "run: a .tflite cut in half": Case(R("half_tflite").split(), 1, "cut short or damaged"),
    "run: an empty .tflite": Case(R("empty_tflite").split(), 1, "not a .tflite flatbuffer"),
    "run: text named .tflite": Case(R("text_tflite").split(), 1, "not a .tflite flatbuffer"),
    "run: a folder named .tflite": Case(R("folder_tflite").split(), 2, "is not a file"),
    "run: zero input scale": Case(R("zero_in").split(), 1, "quantization scale 0"),
    "run: NaN input scale on cortex-m4": Case("run {nan_in} --target cortex-m4".split(), 1, "quantization scale nan"),
    "run: negative scale inside, cortex-m4": Case("run {neg_conv} --target cortex-m4".split(), 1, "scale -0.01"),
    "run: infinite scale, cortex-m4": Case("run {inf_dense} --target cortex-m4".split(), 1, "scale inf"),
    "run: NaN softmax output scale, host": Case(R("nan_out").split(), 1, "the output StatefulPartitionedCall_1:0"),
    "run: an op TFLM lacks": Case("run {gelu} --target cortex-m4".split(), 1, "no kernel for GELU"),
    "run: softmax options lost, host": Case(R("no_beta").split(), 1, "(SOFTMAX) has beta 0"),
    "run: softmax options lost, TFLM": Case("run {no_beta} --target cortex-m4".split(), 1, "has beta 0"),
    "run: quantization lost, host": Case(R("lost_quant").split(), 1, "is int8 without a scale or zero point"),
    "run: quantization lost, TFLM": Case("run {lost_quant} --target cortex-m4".split(), 1, "without a scale"),
    "run: a subnormal scale": Case(R("subnormal").split(), 1, "quantization scale 9.99967e-42"),
    "deploy: softmax options lost": Case("deploy {no_beta} --target cortex-m4 --out {out}".split(), 1, "beta 0"),
    "run: Flex ops on the host": Case(R("flex").split(), 1, "TensorFlow (Flex) ops (FlexSoftmax)"),
    "run: Flex ops on a Pi": Case("run {flex} --target rpi4 --host pi@127.0.0.1".split(), 1, "(Flex) ops"),
    "run: an NPU op on the host": Case(R("npu_op").split(), 1, "no kernel for the custom op ethos-u"),
    "run: an NPU op in TFLM": Case("run {npu_op} --target cortex-m4".split(), 1, "CUSTOM:ethos-u"),
    # deploy: never a bundle with nonsense constants
    "deploy: a float model": Case("deploy {float} --target cortex-m4 --out {out}".split(), 1, "convert the model to full int8"),
    "deploy: zero input scale": Case("deploy {zero_in} --target cortex-m4 --out {out}".split(), 1, "scale 0"),
    "deploy: NaN input scale": Case("deploy {nan_in} --target cortex-m4 --out {out}".split(), 1, "scale nan"),
    "deploy: negative scale inside": Case("deploy {neg_conv} --target cortex-m4 --out {out}".split(), 1, "scale -0.01"),
    "deploy: NaN output scale": Case("deploy {nan_out} --target cortex-m4 --out {out}".split(), 1, "scale nan"),
    "deploy: an op TFLM lacks": Case("deploy {topk} --target cortex-m4 --out {out}".split(), 1, "no kernel for TOPK_V2"),
    "deploy: a cut .tflite": Case("deploy {half_tflite} --target cortex-m4 --out {out}".split(), 1, "cut short"),
    "deploy: a zip named .tflite": Case("deploy {zip_tflite} --target cortex-m4 --out {out}".split(), 1, "TFL3"),
    "deploy: Flex ops": Case("deploy {flex} --target cortex-m4 --out {out}".split(), 1, "CUSTOM:FlexSoftmax"),
    # qat, inspect and convert: a model that is not what its name says (refused before TensorFlow loads)
    "qat: a .tflite": Case("qat {int8} --train {one_sample} --eval {one_sample} --out {out}".split(), 1,
                           "edgepipe run"),
    "qat: zero epochs": Case("qat {int8} --train {one_sample} --eval {one_sample} --epochs 0 --out {out}".split(), 2,
                             "0 is not in the range"),
    "inspect: a .tflite": Case("inspect {int8} --calib {one_sample}".split(), 1, "edgepipe run"),
    "inspect: a .tflite named .keras": Case("inspect {tflite_keras} --calib {one_sample}".split(), 1, ".keras"),
    "inspect: a missing model": Case("inspect {root}/nope.keras --calib {one_sample}".split(), 1, "does not exist"),
    # data of unusual types for run
    "data: complex numbers": Case([*R("int8").split(), "--eval", "{complex}"], 1, "complex numbers"),
    "data: text": Case([*R("int8").split(), "--eval", "{text}"], 1, "text"),
    "data: dates": Case([*R("int8").split(), "--eval", "{dates}"], 1, "dates"),
    "data: object arrays (never unpickled)": Case([*R("int8").split(), "--eval", "{objects}"], 1, "not a readable .npz"),
    "data: float64 1e300": Case([*R("int8").split(), "--eval", "{huge64}"], 1, "sample 6 holds 1e+300"),
    "data: overflow after --scale": Case([*R("int8").split(), "--eval", "{big32}", "--scale", "100"], 1,
                                         "becomes infinite after --scale"),
    "data: a scalar x": Case([*R("int8").split(), "--eval", "{scalar}"], 1, "a single value"),
    "data: 0 samples": Case([*R("int8").split(), "--eval", "{no_samples}"], 1, "holds no samples"),
    "data: float labels": Case([*R("int8").split(), "--eval", "{float_labels}"], 1, "integer class labels"),
    "data: bool labels": Case([*R("int8").split(), "--eval", "{bool_labels}"], 1, "integer class labels"),
    "data: text labels": Case([*R("int8").split(), "--eval", "{text_labels}"], 1, "integer class labels"),
    "data: labels of shape [N, 2]": Case([*R("int8").split(), "--eval", "{wide_labels}"], 1, "'y' has shape [40, 2]"),
    "data: a negative label": Case([*R("int8").split(), "--eval", "{negative_labels}"], 1, "label -3 of sample 9"),
    "data: a .tflite named .npz": Case([*R("int8").split(), "--eval", "{tflite_npz}"], 1, "not a readable .npz"),
    "data: 16-bit PNGs": Case([*R("int8").split(), "--eval", "{sixteen}"], 1, "16-bit pixels"),
    # -c config files
    "config: unknown key": Case("convert -c {cfg_unknown} --out {out}".split(), 2, "unknown key recipie"),
    "config: unknown nested key": Case("convert -c {cfg_run_unknown} --out {out}".split(), 2, "unknown key run.thread"),
    "config: string for a number": Case("convert -c {cfg_string_number} --out {out}".split(), 2,
                                        "calib_samples must be a whole number"),
    "config: list for a path": Case("convert -c {cfg_list_path} --out {out}".split(), 2, "model must be a path"),
    "config: table for a path": Case("convert -c {cfg_table_path} --out {out}".split(), 2, "calib must be a path"),
    "config: table for a flag": Case("convert -c {cfg_table_flag} --out {out}".split(), 2, "overwrite must be true or false"),
    "config: list for a table": Case("compare -c {cfg_scalar_table} --out {out}".split(), 2, "run must be a table"),
    "config: number for a table": Case("convert -c {cfg_preprocess_3} --out {out}".split(), 2,
                                       "preprocess must be a table"),
    "config: JSON named .toml": Case("convert -c {cfg_not_toml} --out {out}".split(), 2, "is not valid TOML"),
    "config: empty": Case("convert -c {cfg_empty} --out {out}".split(), 2, "give MODEL"),
    "config: binary garbage": Case("convert -c {cfg_binary} --out {out}".split(), 2, "is not text"),
    "config: a huge number": Case("convert -c {cfg_huge} --out {out}".split(), 2, "at most 2,147,483,647"),
    "config: a negative count": Case("convert -c {cfg_negative} --out {out}".split(), 2,
                                     "set by calib_samples in the config file"),
    "config: negative runs": Case("compare -c {cfg_negative_runs} --out {out}".split(), 2, "set by run.runs"),
    "config: nan": Case("convert -c {cfg_nan} --out {out}".split(), 2, "percentile must be a finite number"),
    "config: inf": Case("convert -c {cfg_inf} --out {out}".split(), 2, "max_accuracy_drop must be a finite number"),
    "config: nested too deeply": Case("convert -c {cfg_deep} --out {out}".split(), 2, "too deeply"),
    "config: an inventory given as a config": Case("convert -c {cfg_inventory} --out {out}".split(), 2,
                                                   "unknown key device"),
    "config: an unknown recipe": Case("convert -c {cfg_bad_recipe} --out {out}".split(), 2, "set by recipe"),
    "config: a date for a path": Case("convert -c {cfg_date} --out {out}".split(), 2, "model must be a path"),
    "config: a folder": Case("convert -c {root} --out {out}".split(), 2, "is a directory"),
    # fleet inventories
    "inventory: unknown key": Case("run {int8} --hosts {inv_unknown_key}".split(), 2, "pi: unknown keys colour"),
    "inventory: [[devices]]": Case("run {int8} --hosts {inv_top_key}".split(), 2, "unknown top-level keys devices"),
    "inventory: [device] once": Case("run {int8} --hosts {inv_single_table}".split(), 2, "lists no [[device]] tables"),
    "inventory: port as text": Case("run {int8} --hosts {inv_port_string}".split(), 2, "port must be a TCP port"),
    "inventory: port true": Case("run {int8} --hosts {inv_port_bool}".split(), 2, "port must be a TCP port"),
    "inventory: port 70000": Case("run {int8} --hosts {inv_port_range}".split(), 2, "not 70000"),
    "inventory: port list": Case("run {int8} --hosts {inv_port_list}".split(), 2, "port must be a TCP port"),
    "inventory: host a number": Case("run {int8} --hosts {inv_host_number}".split(), 2, "host must be a non-empty string"),
    "inventory: name a list": Case("run {int8} --hosts {inv_name_list}".split(), 2, "name must be a non-empty string"),
    "inventory: identity a table": Case("run {int8} --hosts {inv_identity_table}".split(), 2, "identity must be"),
    "inventory: no host": Case("run {int8} --hosts {inv_no_host}".split(), 2, "pi: no host"),
    "inventory: one name twice": Case("run {int8} --hosts {inv_duplicate}".split(), 2, "two devices are called pi"),
    "inventory: not TOML": Case("run {int8} --hosts {inv_not_toml}".split(), 2, "is not valid TOML"),
    "inventory: binary": Case("run {int8} --hosts {inv_binary}".split(), 2, "is not text"),
    "inventory: empty": Case("run {int8} --hosts {inv_empty}".split(), 2, "lists no [[device]] tables"),
    "inventory: unknown target": Case("run {int8} --hosts {inv_unknown_target}".split(), 2,
                                      "inv_unknown_target.toml, pi: unknown target 'rpi9'"),
    "inventory: target a number": Case("run {int8} --hosts {inv_target_number}".split(), 2, "target must be"),
    # rerun and report
    "rerun: truncated JSON": Case("rerun {rep_truncated}".split(), 2, "is not valid JSON"),
    "rerun: not an object": Case("rerun {rep_list}".split(), 2, "not an edgepipe report"),
    "rerun: another schema": Case("rerun {rep_schema}".split(), 2, "schema 7"),
    "rerun: no schema": Case("rerun {rep_no_schema}".split(), 2, "schema None"),
    "rerun: a run report": Case("rerun {rep_run}".split(), 2, "no configuration to repeat"),
    "rerun: unknown config key": Case("rerun {rep_unknown_key}".split(), 2, "unknown key colour"),
    "rerun: wrong config type": Case("rerun {rep_wrong_type}".split(), 2, "calib_samples must be a whole number"),
    "rerun: unknown recipe": Case("rerun {rep_bad_recipe}".split(), 2, "bad_recipe.json cannot be repeated: recipe"),
    "rerun: no artifact hashes": Case("rerun {rep_no_hashes}".split(), 2, "None as the sha256 of the artifact"),
    "rerun: no model in the config": Case("rerun {rep_no_model}".split(), 2, "cannot be repeated: config has no model"),
    "rerun: tampered artifact sha256": Case("rerun {rep_artifact_sha}".split(), 2, "'deadbeef' as the sha256"),
    "rerun: tampered model sha256": Case("rerun {rep_model_sha}".split(), 2, "12345 as the sha256 of the model"),
    "rerun: candidates not a list": Case("rerun {rep_candidates}".split(), 2, "candidates must be a list"),
    "rerun: the model vanished": Case("rerun {rep_model_gone}".split(), 2, "no longer exists; restore it"),
    "rerun: nested too deeply": Case("rerun {rep_deep}".split(), 2, "too deeply"),
    "rerun: binary": Case("rerun {rep_binary}".split(), 2, "is not text"),
    "rerun: NaN in the config": Case("rerun {rep_nan}".split(), 2, "percentile must be a finite number"),
    "report: a cut report.json": Case("report {report_cut}".split(), 2, "is not JSON"),
    "report: a list": Case("report {report_list}".split(), 2, "holds a JSON list, not a report object"),
    "report: nested too deeply": Case("report {report_deep}".split(), 2, "nests arrays or objects too deeply"),
    "report: a list where a table belongs": Case("report {report_wrong_type}".split(), 2, "value of the wrong type"),
}


def _expand(argv: list[str], world: dict, out: Path) -> list[str]:
    return [arg.format(out=out, **world) for arg in argv]


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_input(world, tmp_path, name):
    case = CASES[name]
    out = tmp_path / "out"
    outcome = CliRunner().invoke(main, _expand(case.argv, world, out))
    assert outcome.exit_code == case.code, outcome.stderr + repr(outcome.exception)
    assert outcome.exception is None or isinstance(outcome.exception, SystemExit), repr(outcome.exception)
    assert "Traceback" not in outcome.stderr + outcome.stdout
    last = outcome.stderr.strip().splitlines()[-1]
    assert last.startswith(("edgepipe: error: ", "Error: ")), last
    assert case.words in last, last
    assert last.rstrip().endswith((".", "?", "'")) and len(last) < 900, last
    assert not out.exists() or not any(out.iterdir()), sorted(out.iterdir())


def test_the_third_battery_is_big_enough():
    assert len(CASES) >= 80


def _run_json(*argv) -> dict:
    outcome = CliRunner().invoke(main, ["run", *map(str, argv), "--target", "host", "--runs", "2", "--warmup", "0",
                                        "--json"])
    assert outcome.exit_code == 0, outcome.stderr
    return json.loads(outcome.stdout)


def test_conversions_of_unusual_data_are_reported_not_silent(world):
    """Booleans are read as 0 and 1, uint16 and int64 images as numbers at scale 1: each is said on
    stderr and in the report's data.warnings; one sample is enough to run."""
    report = _run_json(TINY_INT8, "--eval", world["bools"])
    assert any("booleans" in w and "0 (false) and 1 (true)" in w for w in report["data"]["warnings"])
    report = _run_json(TINY_INT8, "--eval", world["uint16"])
    assert report["preprocess"]["scale"] == 1.0
    assert any("values reach 6.554e+04" in w and "--scale" in w for w in report["data"]["warnings"])
    report = _run_json(TINY_INT8, "--eval", world["int64"])
    assert any("values reach 255" in w for w in report["data"]["warnings"])
    report = _run_json(TINY_INT8, "--eval", world["one_sample"])
    assert report["targets"]["host"]["samples"] == 1 and report["targets"]["host"]["accuracy"] in (0.0, 1.0)


def test_a_refused_deploy_leaves_a_good_bundle_as_it_was(world, tmp_path):
    """The int8 model deploys with sane constants (a positive, finite scale; it compiles where g++ is
    installed); a tampered model deployed over it with --overwrite is refused and changes nothing."""
    out = tmp_path / "bundle"
    good = CliRunner().invoke(main, ["deploy", str(TINY_INT8), "--target", "cortex-m4", "--out", str(out), "--json"])
    assert good.exit_code == 0, good.stderr
    manifest = json.loads(good.stdout)
    assert 0 < manifest["input"]["scale"] < 1 and 0 < manifest["output"]["scale"] < 1
    header = (out / "model_data.h").read_text()
    scales = [float(v) for v in __import__("re").findall(r"k(?:Input|Output)Scale = ([0-9.e+-]+)f;", header)]
    assert len(scales) == 2 and all(0 < s < 1 for s in scales)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for bad in ("nan_in", "zero_in", "float"):
        outcome = CliRunner().invoke(main, ["deploy", str(world[bad]), "--target", "cortex-m4", "--out", str(out),
                                            "--overwrite"])
        assert outcome.exit_code == 1 and "Traceback" not in outcome.stderr, outcome.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    compiler = shutil.which("g++")
    if compiler:
        (out / "check.cc").write_text('#include "model_data.h"\nstatic_assert(edgepipe_model::kInputScale > 0, "");\n'
                                      'static_assert(edgepipe_model::kOutputScale > 0, "");\nint main() {}\n')
        subprocess.run([compiler, "-std=c++17", "-fsyntax-only", "check.cc"], cwd=out, check=True)


def test_a_header_for_token_ids_has_no_zero_scale():
    from edgecore.model_info import TensorInfo
    from targets.mcu.deploy import _io_constants

    ids = TensorInfo(index=0, name="ids", shape=(1, 64), dynamic_batch=False, dtype="int32", scale=0.0, zero_point=0)
    lines = _io_constants("Input", ids, "1, 64")
    assert "kInputScale" not in lines.replace("no kInputScale", "") and "kInputDims[] = {1, 64}" in lines
    assert "taken as they are" in lines


class _ReachableTarget(Target):
    """A device target that always answers (stands in for a working Pi beside an unreachable one)."""

    name = "fake-pi"
    description = "a fake SSH board"
    capabilities = frozenset({Capability.RUN, Capability.SSH, Capability.ACCURACY})

    def check(self, model: bytes) -> list[str]:
        return []

    def run(self, model, x, y, options: RunOptions) -> TargetResult:
        outputs = np.zeros((0 if x is None else len(x), 10), np.float32)
        return TargetResult(target=self.name, runtime="fake 1.0", delegate=None, threads=4, outputs=outputs,
                            latency_ms=latency_summary([1_000_000, 1_200_000]))


def test_an_unreachable_device_keeps_the_other_rows(world, tmp_path):
    fake = targets.register_target(_ReachableTarget(), replace=True)
    try:
        inventory = tmp_path / "fleet.toml"
        inventory.write_text(
            f'[[device]]\nname = "gone"\nhost = "nobody@127.0.0.1"\nport = {world["closed_port"]}\ntarget = "rpi4"\n'
            '[[device]]\nname = "here"\nhost = "pi@127.0.0.1"\ntarget = "fake-pi"\n')
        report = api.run_on_fleet(TINY_INT8, inventory, world["one_sample"], out=tmp_path / "fleet")
    finally:
        targets.unregister_target(fake.name)
    rows = {row["device"]: row for row in report["fleet"]["devices"]}
    assert set(rows) == {"gone", "here"} and rows["here"]["ok"] and not rows["gone"]["ok"]
    assert "cannot reach" in rows["gone"]["reason"]
    assert report["fleet"]["summary"]["failed"] == ["gone"]
    assert json.loads((tmp_path / "fleet" / "report.json").read_text())["fleet"]["summary"]["ran"] == 1
