"""Choosing on held-out calibration data: the calibration method (``auto``) and the rung of the
accuracy-budget ladder. ``--eval`` never takes part, so its figures stay an honest estimate."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np

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
    accuracy when the data has labels, of top-1 agreement when it has none, and the relative RMS
    error in percent for models that are not classifiers. ``drop_upper`` adds one binomial
    standard error, sqrt(p (1 - p) / n): 1 disagreement in 100 samples is not a 1-point drop."""

    drop: float
    drop_upper: float  # one standard error above: the ladder's test, so that few samples do not flatter
    measure: str
    snr_db: float | None
    agreement: float | None
    accuracy: float | None
    float_accuracy: float | None

    def to_dict(self) -> dict:
        return {key: (round(value, 4) if isinstance(value, float) else value) for key, value in asdict(self).items()}


def score(work: CalibrationWork, artifact: bytes) -> Score:
    """How ``artifact`` matches the float model on the held-out calibration samples (host, LiteRT)."""
    select = work.select
    result = get_target("host").run(artifact, select.x, select.y, RunOptions(warmup=0, runs=1))
    found = compare(work.select_float, result.outputs, select.y, softmax_head=inspect_model(artifact).ends_in_softmax)
    if found.perplexity is not None and found.float_perplexity:  # a language model: its own measure
        drop, measure = 100 * (found.perplexity / found.float_perplexity - 1), "perplexity"
    elif found.accuracy is not None:
        drop, measure = 100 * (found.float_accuracy - found.accuracy), "accuracy"
    elif found.agreement is not None:
        drop, measure = 100 * (1 - found.agreement), "agreement"
    else:
        reference = float(np.sqrt(np.mean(np.square(work.select_float.astype(np.float64)))))
        drop, measure = 100 * found.output_error["rmse"] / max(reference, 1e-12), "relative error"
    share = min(max(drop / 100, 0.0), 1.0)
    margin = 0.0 if measure in ("relative error", "perplexity") else 100 * float(np.sqrt(share * (1 - share) / select.samples))
    return Score(drop=float(drop), drop_upper=float(drop + margin), measure=measure, snr_db=found.output_error["snr_db"],
                 agreement=found.agreement, accuracy=found.accuracy, float_accuracy=found.float_accuracy)


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
