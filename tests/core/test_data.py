"""Data loading and the single preprocessing spec."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.data import load_dataset
from pipeline.errors import DataError
from pipeline.vocab import ColorMode, Preprocess


def test_spec_from_input_shape():
    spec = Preprocess.from_input_shape((None, 96, 96, 3))
    assert spec.color_mode is ColorMode.RGB and spec.height_width == (96, 96)
    assert Preprocess.from_input_shape((None, 16)).is_image is False
    assert Preprocess.from_dict(spec.to_dict()) == spec


def test_npz_uint8_is_scaled_to_unit_range(small_npz):
    data = load_dataset(small_npz, Preprocess.from_input_shape((None, 28, 28, 1)))
    assert data.x.dtype == np.float32 and data.x.max() <= 1.0 and data.x.max() > 0.9
    assert data.preprocess.scale == pytest.approx(1 / 255)
    assert data.samples == 200 and data.y is not None


@pytest.mark.quick
def test_image_folder_and_npz_agree(image_folder, mnist_eval):
    data = load_dataset(image_folder, Preprocess.from_input_shape((None, 28, 28, 1)))
    assert data.x.shape == (60, 28, 28, 1)
    assert data.class_names[0].startswith("class_")
    # Labels come from the folder names, in sorted order.
    names = [data.class_names[i] for i in data.y]
    assert sorted(names) == sorted(f"class_{label}" for label in mnist_eval["y"][:60])


def test_missing_channel_is_added(tmp_path):
    path = tmp_path / "flat.npz"
    np.savez(path, x=np.zeros((3, 28, 28), np.uint8))
    assert load_dataset(path, Preprocess.from_input_shape((None, 28, 28, 1))).x.shape == (3, 28, 28, 1)


def test_explicit_scale_and_offset(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.full((2, 4), 255, np.uint8))
    spec = Preprocess.from_input_shape((None, 4), scale=2 / 255, offset=-1.0)
    assert np.allclose(load_dataset(path, spec).x, 1.0)


def test_labels_must_match_samples(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((3, 4)), y=np.zeros(2, np.int64))
    with pytest.raises(DataError, match="3 samples in 'x' but 2 labels"):
        load_dataset(path, Preprocess.from_input_shape((None, 4)))


def test_image_folder_for_non_image_model(image_folder):
    with pytest.raises(DataError, match="not an image"):
        load_dataset(image_folder, Preprocess.from_input_shape((None, 16)))
