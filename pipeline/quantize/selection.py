"""Choosing on held-out calibration data: the calibration method (``auto``) and the rung of the
accuracy-budget ladder. ``--eval`` never takes part, so its figures stay an honest estimate."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np

from edgecore.metrics import (
    are_probabilities,
    binomial_upper,
    bootstrap_upper,
    is_classifier,
    token_log_likelihoods,
    top1_accuracy,
)
from edgecore.model_info import inspect_model
from pipeline.vocab import Calibration
from targets import RunOptions, get_target

from .calibration import CalibrationWork
from .verify import compare

log = logging.getLogger("edgepipe")

# (method, percentile): the percentile methods at a few strengths, since the share of bad
# samples or rare values in a calibration set is not known in advance.
AUTO_CANDIDATES = ((Calibration.MINMAX, None), (Calibration.PERCENTILE, 99.9), (Calibration.PERCENTILE, 99.99),
                   (Calibration.PERCENTILE, 99.999), (Calibration.ROBUST, 99.0), (Calibration.ROBUST, 95.0),
                   (Calibration.ROBUST, 90.0), (Calibration.MSE, None), (Calibration.MAE, None), (Calibration.KL, None))


@dataclass(frozen=True)
class Score:
    """A candidate against the float model on the held-out data. ``drop`` is in points: of top-1
    accuracy when the data has labels, of top-1 agreement when it has none, the rise of perplexity in
    percent for language models, and the relative RMS error in percent for models that are not
    classifiers. ``drop_upper`` is a one-sided 95% upper confidence bound on it (``bound`` says how):
    1 disagreement in 100 samples is not a 1-point drop, and 0 in 60 is not a 0-point one."""

    drop: float
    drop_upper: float  # the ladder's test, so that few samples do not flatter
    bound: str
    measure: str
    snr_db: float | None
    agreement: float | None
    accuracy: float | None
    float_accuracy: float | None

    def to_dict(self) -> dict:
        return {key: (round(value, 4) if isinstance(value, float) else value) for key, value in asdict(self).items()}


def _perplexity_rise(float_nll: np.ndarray, quantized_nll: np.ndarray) -> float:
    """The rise of perplexity in percent, from per-sample mean negative log-likelihoods."""
    return 100 * float(np.expm1(np.mean(quantized_nll) - np.mean(float_nll)))


def _relative_error(noise: np.ndarray, signal: np.ndarray) -> float:
    """RMS of the error over RMS of the float output, in percent, from per-sample sums of squares."""
    return 100 * float(np.sqrt(np.sum(noise) / max(np.sum(signal), 1e-30)))


def measure_of(outputs: np.ndarray, labels: np.ndarray | None, *, softmax_head: bool) -> str:
    """What held-out data judge candidates by, from the float outputs (as :func:`compare` decides):
    perplexity for a language model, accuracy with class labels, top-1 agreement for a classifier
    without labels (one that ends in a softmax), and the relative error otherwise."""
    if token_log_likelihoods(outputs, labels) is not None:
        return "perplexity"
    if labels is not None and top1_accuracy(outputs, labels) is not None:
        return "accuracy"
    return "agreement" if is_classifier(outputs) and softmax_head else "relative error"


def drop_bound(measure: str, float_outputs: np.ndarray, outputs: np.ndarray, labels: np.ndarray | None, *,
               probabilities: bool) -> tuple[float, float, str]:
    """(drop, its one-sided 95% upper bound, how the bound was made) for ``measure``.

    Accuracy and agreement: the paired flips, samples right in float and wrong quantized (or whose
    top-1 changed), bounded by Clopper-Pearson; the accuracy drop is at most the share of such
    flips, so the bound holds whatever the flips the other way. Perplexity and relative error: a
    percentile bootstrap over samples (2,000 resamples, fixed seed)."""
    n = len(outputs)
    if measure == "perplexity":
        ref = -token_log_likelihoods(float_outputs, labels).mean(axis=1)
        got = -token_log_likelihoods(outputs, labels, probabilities=probabilities).mean(axis=1)
        return (_perplexity_rise(ref, got), bootstrap_upper(_perplexity_rise, ref, got),
                f"bootstrap over {n} samples, one-sided 95%")
    if measure == "relative error":
        noise = np.square(outputs.reshape(n, -1).astype(np.float64) - float_outputs.reshape(n, -1)).sum(axis=1)
        signal = np.square(float_outputs.reshape(n, -1).astype(np.float64)).sum(axis=1)
        return (_relative_error(noise, signal), bootstrap_upper(_relative_error, noise, signal),
                f"bootstrap over {n} samples, one-sided 95%")
    reference, candidate = np.argmax(float_outputs, axis=-1), np.argmax(outputs, axis=-1)
    if measure == "accuracy":
        drop = 100 * (float(np.mean(reference == labels)) - float(np.mean(candidate == labels)))
        flips = int(np.sum((reference == labels) & (candidate != labels)))
        what = "right in float, wrong quantized"
    else:
        drop = 100 * float(np.mean(reference != candidate))
        flips, what = int(np.sum(reference != candidate)), "top-1 changed"
    return (drop, 100 * binomial_upper(flips, reference.size),
            f"Clopper-Pearson on {flips} of {reference.size} ({what}), one-sided 95%")


def score(work: CalibrationWork, artifact: bytes) -> Score:
    """How ``artifact`` matches the float model on the held-out calibration samples (host, LiteRT)."""
    select = work.select
    result = get_target("host").run(artifact, select.x, select.y, RunOptions(warmup=0, runs=1))
    softmax = inspect_model(artifact).ends_in_softmax
    found = compare(work.select_float, result.outputs, select.y, softmax_head=softmax)
    measure = measure_of(work.select_float, select.y, softmax_head=softmax)
    drop, upper, bound = drop_bound(measure, work.select_float, result.outputs, select.y,
                                    probabilities=are_probabilities(work.select_float))
    return Score(drop=float(drop), drop_upper=float(max(upper, drop)), bound=bound, measure=measure,
                 snr_db=found.output_error["snr_db"], agreement=found.agreement, accuracy=found.accuracy,
                 float_accuracy=found.float_accuracy)


def _rank(entry: Score) -> tuple:
    snr = entry.snr_db if entry.snr_db is not None else np.inf  # None: identical outputs
    return (-entry.drop, snr, entry.agreement or 0.0)


def choose_calibration(work: CalibrationWork, *, percentile: float | None, symmetric: bool, per_tensor: bool,
                       float_io: bool, float_nodes: tuple[str, ...] = ()) -> tuple[Calibration, float | None, dict]:
    """The method (and percentile) whose int8 outputs best match the float model on the held-out
    data: the smallest drop, then the highest output SNR. Returns them with every try's score.
    A ``percentile`` given by the user replaces the built-in strengths."""
    candidates = dict.fromkeys((method, percentile if p is not None and percentile is not None else p)
                               for method, p in AUTO_CANDIDATES)
    scores: dict[str, Score] = {}
    for method, p in candidates:
        name = str(method) if p is None else f"{method}:{p:g}"
        artifact = work.int8(str(method), percentile=p, symmetric_activations=symmetric, per_tensor=per_tensor,
                             float_io=float_io, float_nodes=float_nodes)
        scores[name] = score(work, artifact)
        log.info("calibration %s: %.2f dB, %s drop %.2f", name, scores[name].snr_db or float("inf"),
                 scores[name].measure, scores[name].drop)
    best = max(scores, key=lambda name: _rank(scores[name]))
    log.info("auto calibration chose %s on %d held-out samples", best, work.select.samples)
    method, _, strength = best.partition(":")
    return Calibration(method), float(strength) if strength else None, {n: e.to_dict() for n, e in scores.items()}
