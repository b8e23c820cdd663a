"""ONNX models in (and PyTorch through ONNX): onnx2tf turns them into a SavedModel, which the
rest of edgepipe quantizes like any other; edgepipe's converter makes the int8 model.

onnx2tf is used only for its graph translation: no onnxsim, no validation and no int8 of its own
(its own int8 adds TensorFlow (Flex) ops silently, and its validation and calibration download
sample images), so nothing reaches the network. Already-quantized ONNX models (QDQ or QLinear
ops) are refused: they convert silently wrong. The model's own layout is honoured for data: an
NCHW model's ``.npz`` data is read as NCHW and transposed to the NHWC the converted model takes.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path

import numpy as np

from edgecore.cstderr import CapturedStderr
from pipeline.errors import ModelLoadError, first_line

log = logging.getLogger(__name__)
QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
                 "MatMulInteger", "QLinearAdd", "QLinearMul", "DynamicQuantizeLinear"}


def _onnx():
    try:
        import onnx
    except ImportError as exc:
        raise ModelLoadError(f"ONNX models need the onnx extra ({exc}); run `pip install edgepipe[onnx]` "
                             "(onnx2tf, onnx, onnxruntime).") from exc
    return onnx


def inspect_onnx(path: Path) -> tuple[str, int]:
    """Refuse what cannot be converted faithfully; return the input's layout ("NCHW" or "NHWC") and
    the parameter count (elements of the float initializers)."""
    onnx = _onnx()
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and others for a damaged file
        raise ModelLoadError(f"{path} is not a readable ONNX model ({first_line(exc, 200)}); "
                             "export it again (torch.onnx.export).") from exc
    found = sorted({node.op_type for node in model.graph.node if node.op_type in QUANTIZED_OPS})
    if found:
        raise ModelLoadError(f"{path} is already quantized ({', '.join(found)} nodes), which onnx2tf converts silently "
                             "wrong; give the float ONNX model: edgepipe quantizes it itself.")
    initializers = {tensor.name for tensor in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1 or len(model.graph.output) != 1:
        raise ModelLoadError(f"{path} has {len(inputs)} inputs and {len(model.graph.output)} outputs; edgepipe handles "
                             "models with exactly one input and one output.")
    dims = [d.dim_value or None for d in inputs[0].type.tensor_type.shape.dim]
    layout = "NCHW" if len(dims) == 4 and dims[1] in (1, 3) and dims[3] not in (1, 3) else "NHWC"
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE}
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer if t.data_type in floats)
    return layout, params


def _scratch() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="edgepipe-onnx-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


# onnx2tf reads this file from the working directory, or downloads it, to check any batch <= 20 RGB model
# (onnx2tf/utils/common_functions.py, download_test_image_data); only its own output check uses it.
SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"


@contextlib.contextmanager
def _offline(scratch: Path):
    """Run onnx2tf in ``scratch`` beside a local sample file, with outbound connections refused."""
    np.save(scratch / SAMPLE_FILE, np.random.default_rng(0).random((20, 128, 128, 3), dtype=np.float32))
    previous, connect = Path.cwd(), socket.socket.connect

    def refuse(sock, address):
        raise OSError(f"edgepipe keeps onnx2tf offline (it tried to reach {address})")

    os.chdir(scratch)
    socket.socket.connect = refuse
    try:
        yield
    finally:
        socket.socket.connect = connect
        os.chdir(previous)


def _private_copy(path: Path, scratch: Path) -> Path:
    """``path`` (and any external-data files it names) copied into ``scratch``: onnx2tf writes op
    names and shapes back into the file it is given, and the user's file must stay as it was."""
    onnx = _onnx()
    source = Path(path).resolve()
    copy = scratch / "model" / source.name
    copy.parent.mkdir()
    shutil.copyfile(source, copy)
    model = onnx.load(str(source), load_external_data=False)
    locations = {entry.value for tensor in model.graph.initializer
                 if tensor.data_location == onnx.TensorProto.EXTERNAL
                 for entry in tensor.external_data if entry.key == "location"}
    for location in locations:  # onnx itself refuses locations outside the model's folder
        beside = source.parent / location
        if beside.is_file():
            (copy.parent / location).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(beside, copy.parent / location)
    return copy


def translate_onnx(path: Path) -> tuple[Path, str, int]:
    """The ONNX model translated by onnx2tf: the SavedModel folder (deleted at exit), the model's
    own data layout and its parameter count."""
    from . import keras_compat

    layout, params = inspect_onnx(path)
    try:
        with keras_compat.keras3_kept():  # onnx2tf sets TF_USE_LEGACY_KERAS=1 when imported
            import onnx2tf
    except ImportError as exc:
        raise ModelLoadError(f"ONNX models need onnx2tf ({exc}); run `pip install edgepipe[onnx]`.") from exc
    folder = _scratch() / "saved_model"
    source = _private_copy(path, folder.parent)
    chatter, native = io.StringIO(), CapturedStderr()
    log.info("translating %s with onnx2tf", path.name)
    try:
        with contextlib.redirect_stdout(chatter), native, _offline(folder.parent):
            onnx2tf.convert(input_onnx_file_path=str(source), output_folder_path=str(folder), non_verbose=True,
                            not_use_onnxsim=True, output_signaturedefs=True)
    except (Exception, SystemExit) as exc:  # onnx2tf exits, or raises anything, on graphs it cannot translate
        said = " ".join((chatter.getvalue() + native.text).split())[-300:]
        reason = said if isinstance(exc, SystemExit) or not str(exc).strip() else first_line(exc)
        raise ModelLoadError(f"onnx2tf could not translate {path.name} ({reason}); simplify the exported graph "
                             "(e.g. a newer opset, no custom ops) or export the model as a Keras model.") from exc
    finally:
        log.debug("onnx2tf: %s", (chatter.getvalue() + native.text).strip()[-2000:])
    return folder, layout, params
