"""The range choosers and the data checks, in numpy alone."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.data import load_dataset
from pipeline.errors import DataError
from pipeline.quantize.ranges import BINS, CHOOSERS, TensorStats, symmetric
from pipeline.vocab import Preprocess

pytestmark = pytest.mark.fast


def _stats(samples: np.ndarray) -> TensorStats:
    flat = samples.reshape(len(samples), -1)
    stats = TensorStats(0, "t", flat.min(axis=1), flat.max(axis=1), np.zeros(BINS), np.zeros(BINS))
    stats.histogram += np.histogram(flat, BINS, (stats.low, stats.high))[0]
    stats.magnitude += np.histogram(np.abs(flat), BINS, (0.0, max(abs(stats.low), stats.high)))[0]
    return stats


@pytest.fixture(scope="module")
def relu_with_bad_samples() -> TensorStats:
    """300 samples of ReLU activations under ~4, of which 3 are 255 times too large."""
    values = np.maximum(np.random.default_rng(0).normal(0.5, 1.0, size=(300, 64)), 0)
    values[[10, 150, 290]] *= 255
    return _stats(values)


def test_every_range_contains_zero_and_stays_inside_the_data(relu_with_bad_samples):
    for name, chooser in CHOOSERS.items():
        low, high = chooser(relu_with_bad_samples, 99.99 if name == "percentile" else 95.0)
        assert low <= 0 <= high <= relu_with_bad_samples.high, name


def test_robust_ignores_a_few_bad_samples_and_minmax_does_not(relu_with_bad_samples):
    assert CHOOSERS["minmax"](relu_with_bad_samples, 0)[1] > 500
    assert CHOOSERS["robust"](relu_with_bad_samples, 95.0)[1] < 6


def test_kl_is_not_fooled_by_the_relu_spike_at_zero():
    values = np.maximum(np.random.default_rng(1).normal(0.0, 1.0, size=(200, 256)), 0)  # half the values are 0
    low, high = CHOOSERS["kl"](_stats(values), 0)
    assert low == 0 and high > 2.0  # without neutralising the zero bin KL clips to a sliver


def test_mse_keeps_a_range_that_holds_the_bulk():
    values = np.random.default_rng(2).normal(0.0, 1.0, size=(200, 256))
    low, high = CHOOSERS["mse"](_stats(values), 0)
    assert -5 < low < -2 and 2 < high < 5


def test_symmetric_ranges_give_zero_point_zero():
    low, high = symmetric(-0.5, 3.0)
    scale = (high - low) / 255
    assert -128 - low / scale == pytest.approx(0.0, abs=1e-9) and high == 3.0


@pytest.mark.parametrize("bad, words", [(np.nan, "sample 7 holds NaN"), (np.inf, "sample 7 holds an infinite value")])
def test_non_finite_samples_are_refused_with_their_index(tmp_path, bad, words):
    x = np.random.default_rng(3).uniform(size=(20, 4)).astype(np.float32)
    x[7, 2] = bad
    path = tmp_path / "data.npz"
    np.savez(path, x=x)
    with pytest.raises(DataError, match=words):
        load_dataset(path, Preprocess(shape=(4,)), role="--calib")


def test_suspicious_data_gets_warnings(tmp_path):
    path = tmp_path / "raw.npz"
    np.savez(path, x=np.random.default_rng(4).uniform(0, 255, size=(30, 4)).astype(np.float32))
    data = load_dataset(path, Preprocess(shape=(4,)), role="--calib")
    assert any("only 30 samples" in w for w in data.warnings)
    assert any("pass --scale 0.00392157" in w for w in data.warnings)
