"""Data of unusual types and extreme values, at the loader every command shares (convert's --calib
and --eval, inspect's, qat's --train, run's --eval): each is a DataError saying what to do, or a
conversion that is written down in ``warnings`` (which reach stderr and the report). Never silent."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.data import check_labels, load_dataset
from pipeline.errors import DataError
from pipeline.vocab import Preprocess

pytestmark = pytest.mark.fast

IMAGE = Preprocess.from_input_shape((None, 8, 8, 1))
FEATURES = Preprocess.from_input_shape((None, 4))
IDS = Preprocess.from_input_shape((None, 6), dtype="int32")
RNG = np.random.default_rng(11)


def _npz(tmp_path, **arrays):
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("x, spec, words", [
    (np.ones((3, 8, 8, 1), np.complex64), IMAGE, "holds complex numbers"),
    (np.ones((3, 4), np.complex128) * 1j, FEATURES, "save the real part"),
    (np.array([["a", "b", "c", "d"]] * 3), FEATURES, "holds <U1 values (text)"),
    (np.array([[b"a", b"b", b"c", b"d"]] * 3), FEATURES, "(bytes)"),
    (np.zeros((3, 4), "datetime64[s]"), FEATURES, "(dates)"),
    (np.zeros((3, 4), "timedelta64[s]"), FEATURES, "(time spans)"),
    (np.zeros((3, 4), [("a", "f4"), ("b", "i4")]), FEATURES, "(records)"),
    (np.full((3, 4), 1e300), FEATURES, "sample 0 holds 1e+300, beyond what float32 holds"),
    (np.concatenate([np.zeros((2, 4)), np.full((1, 4), -1e39)]), FEATURES, "sample 2 holds 1e+39"),
    (np.float32(1.0), FEATURES, "a single value, not an array of samples"),
    (np.zeros((0, 4), np.float32), FEATURES, "holds no samples"),
    (np.full((3, 6), 1.5), IDS, "non-integer values such as 1.5"),
    (np.ones((3, 6), bool), IDS, "not bool values"),
    (np.full((3, 6), 2**40, np.int64), IDS, "beyond what int32 holds"),
    (np.full((3, 6), -1, np.int64), IDS, "negative id -1"),
])
def test_unusual_x_is_refused_with_the_reason(tmp_path, x, spec, words):
    with pytest.raises(DataError, match=words.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")) as caught:
        load_dataset(_npz(tmp_path, x=x), spec, role="--calib")
    assert str(caught.value).endswith(".") and "--calib" in str(caught.value)


def test_object_arrays_are_never_unpickled(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = _npz(tmp_path, x=np.array([Evil(), Evil()], dtype=object))
    with pytest.raises(DataError, match="not a readable .npz file"):
        load_dataset(path, FEATURES, role="--eval")
    assert not marker.exists()


def test_overflow_after_scale_is_named_as_such(tmp_path):
    path = _npz(tmp_path, x=np.full((2, 4), 3e38, np.float32))
    with pytest.raises(DataError, match="sample 0 becomes infinite after --scale and --offset"):
        load_dataset(path, Preprocess.from_input_shape((None, 4), scale=10.0), role="--eval")
    with pytest.raises(DataError, match="becomes infinite"):
        load_dataset(path, Preprocess.from_input_shape((None, 4), offset=float("inf")), role="--eval")


@pytest.mark.parametrize("x, scale, words", [
    (np.ones((3, 8, 8, 1), bool), 1.0, "read as 0 (false) and 1 (true)"),
    (RNG.integers(0, 65536, (3, 8, 8, 1)).astype(np.uint16), 1.0, "pass --scale 0.00392157"),
    (RNG.integers(0, 1 << 40, (3, 4)).astype(np.int64), 1.0, "values reach"),
])
def test_conversions_are_written_down(tmp_path, x, scale, words):
    spec = IMAGE if x.ndim == 4 else FEATURES
    data = load_dataset(_npz(tmp_path, x=x), spec, role="--eval")
    assert data.x.dtype == np.float32 and data.preprocess.scale == scale
    assert any(words in w for w in data.warnings), data.warnings


def test_float64_within_float32_and_one_sample_are_taken(tmp_path):
    x = RNG.normal(size=(1, 4))
    data = load_dataset(_npz(tmp_path, x=x, y=np.array([1])), FEATURES, role="--eval")
    assert data.samples == 1 and np.allclose(data.x, x.astype(np.float32)) and not data.warnings


@pytest.mark.parametrize("y, words", [
    (np.array([0.0, 1.0, 2.0]), "'y' must hold integer class labels, not float64"),
    (np.array([True, False, True]), "integer class labels, not bool"),
    (np.array(["0", "1", "2"]), "integer class labels"),
    (np.array([0, 1]), "3 samples in 'x' but 2 labels"),
    (np.zeros((3, 2), np.int64), "'y' has shape [3, 2]"),
    (np.array([0, 1, 12]), "label 12 of sample 2"),
    (np.array([0, -1, 2]), "label -1 of sample 1"),
])
def test_labels_of_the_wrong_type_or_shape(tmp_path, y, words):
    x = np.zeros((3, 4), np.float32)
    with pytest.raises(DataError, match=words.replace("[", r"\[").replace("]", r"\]")):
        data = load_dataset(_npz(tmp_path, x=x, y=y), FEATURES, role="--eval")
        check_labels(data, (1, 10), "--eval")
