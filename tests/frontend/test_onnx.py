"""ONNX models in (and PyTorch through ONNX): the committed sample exported from PyTorch, an RGB
batch-1 ONNX graph built in code (the kind onnx2tf would fetch sample images for), refusals.

Conversion runs in this process (EDGEPIPE_IN_PROCESS=1) under a socket guard that records and
refuses every outbound connection, so "nothing reaches the network" is checked, not assumed.
"""

from __future__ import annotations

import hashlib
import json
import socket

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from pipeline import api
from pipeline.cli.commands import main
from pipeline.core.config import ConvertConfig
from pipeline.errors import ModelLoadError, UsageError
from targets import RunOptions

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


@pytest.fixture
def no_network(monkeypatch):
    """Every outbound connection from this process raises and is recorded."""
    attempts: list = []

    def refuse(sock, address):
        attempts.append(address)
        raise OSError(f"network blocked by the test (tried {address})")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", lambda address, *a, **k: refuse(None, address))
    monkeypatch.setenv("EDGEPIPE_IN_PROCESS", "1")
    return attempts


def _nchw_npz(path, source, count):
    with np.load(source) as data:
        np.savez(path, x=data["x"][:count].transpose(0, 3, 1, 2), y=data["y"][:count])
    return path


def _rgb_onnx(path, *, quantized=False):
    """Conv 3->4 - ReLU - global average pool - flatten - Gemm 4->3, input [1, 3, 16, 16] (NCHW)."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(0, 0.1, (4,)).astype(np.float32), "b"),
             numpy_helper.from_array(rng.normal(0, 0.5, (3, 4)).astype(np.float32), "fc_w"),
             numpy_helper.from_array(np.zeros(3, np.float32), "fc_b")]
    nodes = [helper.make_node("Conv", ["image", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1)]
    if quantized:
        inits += [numpy_helper.from_array(np.array(0.02, np.float32), "s"),
                  numpy_helper.from_array(np.array(0, np.int8), "z")]
        nodes = [helper.make_node("QuantizeLinear", ["image", "s", "z"], ["q"]),
                 helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"])] + nodes
        nodes[2].input[0] = "dq"
    graph = helper.make_graph(nodes, "rgb", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_torch_sample_converts_offline_with_nchw_data(tmp_path, no_network):
    """The PyTorch sample: NCHW calibration data is transposed, NHWC eval data taken as is; the float
    accuracy is torch's own, int8 loses at most a point, and TFLM runs it."""
    recorded = json.loads(api.sample_path("torch_cnn.json").read_text())
    calib = _nchw_npz(tmp_path / "calib_nchw.npz", api.sample_path("mnist", "calib.npz"), 300)
    result = api.convert(ConvertConfig(model=api.sample_path("torch_cnn.onnx"), calib=calib,
                                       eval=api.sample_path("mnist", "eval.npz"), out=tmp_path / "out",
                                       targets=("host", "cortex-m4"), run=RunOptions(runs=2)))
    report = result.report
    assert no_network == []
    assert report["model"]["format"] == "onnx" and report["model"]["params"] == recorded["params"]
    assert report["preprocess"]["layout"] == "NCHW"
    assert abs(report["float"]["accuracy"] - recorded["float_accuracy_torch"]) < 0.005
    assert report["quantized"]["accuracy"] > report["float"]["accuracy"] - 0.01
    assert report["targets"]["cortex-m4"]["accuracy"] == pytest.approx(report["quantized"]["accuracy"], abs=0.002)
    assert result.artifact.exists()


def test_rgb_batch1_onnx_offline_with_image_folder_and_nchw_npz(tmp_path, no_network):
    """A batch-1 RGB graph is what onnx2tf fetches sample images for; here it must not try."""
    model = _rgb_onnx(tmp_path / "rgb.onnx")
    rng = np.random.default_rng(5)
    folder = tmp_path / "images"
    for label in ("a", "b", "c"):
        (folder / label).mkdir(parents=True)
        for index in range(40):
            Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(folder / label / f"{index}.png")
    eval_npz = tmp_path / "eval.npz"
    np.savez(eval_npz, x=rng.integers(0, 256, (60, 3, 16, 16), dtype=np.uint8), y=rng.integers(0, 3, 60))
    result = api.convert(ConvertConfig(model=model, calib=folder, eval=eval_npz, out=tmp_path / "out",
                                       run=RunOptions(runs=2)))
    assert no_network == []
    report = result.report
    assert report["model"]["format"] == "onnx"
    assert report["model"]["input_shape"][1:] == [16, 16, 3]
    assert report["quantized"]["agreement"] > 0.9


@pytest.mark.parametrize("external", [False, True], ids=["inline", "external data"])
def test_conversion_leaves_the_onnx_file_as_it_was(tmp_path, no_network, external):
    """onnx2tf writes op names (these nodes have none) back into the file it is given: a private copy it is."""
    folder = tmp_path / "model"
    folder.mkdir()
    model = _rgb_onnx(folder / "rgb.onnx")
    if external:  # weights in a file beside the model, which the copy must take along
        onnx.save(onnx.load(str(model)), str(model), save_as_external_data=True, all_tensors_to_one_file=True,
                  location="rgb.weights", size_threshold=0)
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(5).integers(0, 256, (40, 3, 16, 16), dtype=np.uint8))
    outcome = CliRunner().invoke(main, ["convert", str(model), "--calib", str(calib), "--out", str(tmp_path / "out"),
                                        "--runs", "2"])
    assert outcome.exit_code == 0, outcome.stderr
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()} == before
    assert len(before) == (2 if external else 1) and no_network == []


@pytest.mark.quick
def test_quantized_onnx_is_refused_with_the_reason(tmp_path):
    model = _rgb_onnx(tmp_path / "qdq.onnx", quantized=True)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["convert", str(model), "--calib", str(tmp_path), "--out", str(out)])
    assert result.exit_code != 0
    assert "already quantized" in result.output and "QuantizeLinear" in result.output
    assert not out.exists()


def test_unreadable_onnx_is_refused(tmp_path):
    model = tmp_path / "broken.onnx"
    model.write_bytes(b"not a protobuf at all" * 10)
    with pytest.raises(ModelLoadError, match="not a readable ONNX model"):
        from pipeline.frontend.onnx_import import inspect_onnx
        inspect_onnx(model)


def test_qat_refuses_onnx_with_the_reason(tmp_path):
    result = CliRunner().invoke(main, ["qat", str(api.sample_path("torch_cnn.onnx")),
                                       "--train", str(api.sample_path("mnist", "train.npz")),
                                       "--eval", str(api.sample_path("mnist", "eval.npz")), "--out", str(tmp_path / "q")])
    assert result.exit_code != 0
    assert "ONNX model has none" in result.output
    assert not (tmp_path / "q").exists()


def test_convert_torch_wants_an_onnx_path(tmp_path):
    with pytest.raises(UsageError, match="must end in .onnx"):
        api.convert_torch(object(), None, ConvertConfig(model=tmp_path / "m.pt", out=tmp_path / "out"))


def test_convert_torch_exports_and_converts(tmp_path, small_npz):
    torch = pytest.importorskip("torch", reason="the torch extra is not installed (pip install edgepipe[torch])")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 26 * 26, 10))
    config = ConvertConfig(model=tmp_path / "net.onnx", calib=small_npz, out=tmp_path / "out", run=RunOptions(runs=2))
    result = api.convert_torch(net, torch.zeros(1, 1, 28, 28), config)
    assert (tmp_path / "net.onnx").exists() and result.artifact.exists()
    assert result.report["model"]["format"] == "onnx"
