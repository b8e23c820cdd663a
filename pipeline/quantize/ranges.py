"""Activation ranges from calibration statistics: the range choosers, in numpy.

Every chooser takes one tensor's :class:`TensorStats` (each calibration sample's own min and max,
and histograms of the values) and returns the ``(low, high)`` the quantizer should use; the range
always contains 0, as TFLite's quantization requires. ``minmax`` reproduces the TFLite converter.

* ``percentile P``: the P-th percentile of all values (and 100-P at the low end).
* ``robust P``: the P-th percentile of each sample's own maximum (100-P of its minimum), so a
  few bad samples cannot stretch a range, however extreme they are.
* ``mse`` / ``mae``: the range minimising the expected squared / absolute error of the values,
  clipping error plus rounding error (step^2 / 12, step / 4), over candidate ranges.
* ``kl``: TensorRT's entropy calibration (Migacz, "8-bit Inference with TensorRT", GTC 2017): the
  clipping threshold whose quantized distribution diverges least from the histogram of |x|, with
  the zero bin set to its neighbour's count (a ReLU output's spike at 0 would otherwise make KL
  clip everything).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BINS = 2048
LEVELS = 255  # int8 steps


@dataclass
class TensorStats:
    """What calibration saw of one activation tensor."""

    index: int
    name: str
    sample_min: np.ndarray
    sample_max: np.ndarray
    histogram: np.ndarray | None = None  # counts over [low, high] in BINS bins
    magnitude: np.ndarray | None = None  # counts of |x| over [0, max |x|] in BINS bins

    @property
    def low(self) -> float:
        return float(min(self.sample_min.min(), 0.0))

    @property
    def high(self) -> float:
        return float(max(self.sample_max.max(), 0.0))

    @property
    def centers(self) -> np.ndarray:
        edges = np.linspace(self.low, self.high, BINS + 1)
        return (edges[:-1] + edges[1:]) / 2


def _with_zero(low: float, high: float) -> tuple[float, float]:
    return float(min(low, 0.0)), float(max(high, 0.0))


def _quantile(stats: TensorStats, fraction: float) -> float:
    """The value below which ``fraction`` of all calibration values lie (from the histogram)."""
    cumulative = np.cumsum(stats.histogram)
    position = np.searchsorted(cumulative, fraction * cumulative[-1])
    return float(stats.centers[min(position, BINS - 1)])


def minmax(stats: TensorStats, _: float) -> tuple[float, float]:
    return stats.low, stats.high


def percentile(stats: TensorStats, p: float) -> tuple[float, float]:
    if stats.high - stats.low <= 0:
        return minmax(stats, p)
    return _with_zero(_quantile(stats, 1 - p / 100), _quantile(stats, p / 100))


def robust(stats: TensorStats, p: float) -> tuple[float, float]:
    return _with_zero(float(np.percentile(stats.sample_min, 100 - p)), float(np.percentile(stats.sample_max, p)))


def _candidates(stats: TensorStats) -> list[tuple[float, float]]:
    """Ranges to try: the full range shrunk geometrically, and histogram quantiles."""
    shrunk = [(stats.low * f, stats.high * f) for f in np.geomspace(1.0, 1e-3, 96)]
    quantiles = [percentile(stats, p) for p in (99.999, 99.99, 99.9, 99.5, 99.0, 98.0, 95.0)]
    return shrunk + quantiles


def _expected_error(stats: TensorStats, low: float, high: float, power: int) -> float:
    step = (high - low) / LEVELS if high > low else 0.0
    x = stats.centers
    clipped = np.abs(np.clip(x, low, high) - x)
    inside = clipped == 0
    rounding = step**2 / 12 if power == 2 else step / 4
    per_value = np.where(inside, rounding, clipped**power)
    return float(np.sum(stats.histogram * per_value))


def mse(stats: TensorStats, _: float) -> tuple[float, float]:
    if stats.high - stats.low <= 0:
        return minmax(stats, _)
    return min(_candidates(stats), key=lambda r: _expected_error(stats, *r, power=2))


def mae(stats: TensorStats, _: float) -> tuple[float, float]:
    if stats.high - stats.low <= 0:
        return minmax(stats, _)
    return min(_candidates(stats), key=lambda r: _expected_error(stats, *r, power=1))


def _kl_threshold(counts: np.ndarray, width: float, levels: int) -> float:
    counts = counts.astype(np.float64).copy()
    if len(counts) > 1:
        counts[0] = counts[1]  # neutralise a ReLU's spike at zero
    best, best_i = np.inf, len(counts)
    for i in range(levels, len(counts) + 1, 16):
        reference = counts[:i].copy()
        reference[-1] += counts[i:].sum()
        # Merge the first i bins into `levels` chunks, then spread each chunk's count evenly over
        # its non-empty bins: the distribution int8 can represent with threshold i.
        base, extra = divmod(i, levels)
        sizes = np.full(levels, base)
        sizes[:extra] += 1
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        chunk = np.searchsorted(starts, np.arange(i), side="right") - 1
        sums = np.add.reduceat(counts[:i], starts)
        nonzero = counts[:i] != 0
        filled = np.add.reduceat(nonzero.astype(np.float64), starts)
        candidate = np.where(nonzero, sums[chunk] / np.maximum(filled[chunk], 1), 0.0)
        p, q = reference / reference.sum(), candidate / max(candidate.sum(), 1e-12)
        mask = p > 0
        divergence = np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-12)))
        if divergence < best:
            best, best_i = divergence, i
    return (best_i + 0.5) * width


def kl(stats: TensorStats, _: float) -> tuple[float, float]:
    top = max(abs(stats.low), abs(stats.high))
    if top <= 0 or stats.magnitude is None:
        return minmax(stats, _)
    levels = LEVELS if stats.low >= 0 else LEVELS // 2
    threshold = _kl_threshold(stats.magnitude, top / BINS, levels)
    return _with_zero(max(stats.low, -threshold), min(stats.high, threshold))


CHOOSERS = {"minmax": minmax, "percentile": percentile, "robust": robust, "mse": mse, "mae": mae, "kl": kl}
DEFAULT_PERCENTILE = {"percentile": 99.99, "robust": 95.0}


def symmetric(low: float, high: float) -> tuple[float, float]:
    """A range about 0 whose int8 zero point is exactly 0: [-128, 127] steps of max(|low|, |high|) / 127."""
    top = max(abs(low), abs(high))
    return -top * 128 / 127, top
