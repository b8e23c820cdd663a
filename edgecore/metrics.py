"""Numpy-only metrics shared by targets and the verify stage."""

from __future__ import annotations

import math

import numpy as np

CONFIDENCE = 0.95  # every certificate edgepipe gives is a one-sided 95% bound
BOOTSTRAP_RESAMPLES = 2000
PROBABILITY_FLOOR = 1e-6  # a probability read as 0 (an int8 softmax step) counts as this in perplexity


def is_classifier(outputs: np.ndarray) -> bool:
    """A batch of score vectors (N x classes, classes > 1) is read as a classifier's output;
    so is a batch of score sequences (N x T x vocabulary), one prediction per position."""
    return outputs.ndim in (2, 3) and outputs.shape[-1] > 1


def is_sequence(outputs: np.ndarray) -> bool:
    """Scores per position (N x T x vocabulary): a sequence model such as a language model."""
    return outputs.ndim == 3 and outputs.shape[-1] > 1


def top1_accuracy(outputs: np.ndarray, labels: np.ndarray | None) -> float | None:
    """Share of samples (of tokens, for N x T x V outputs with N x T labels) whose arg-max is the
    label; None for unlabelled data or non-classifiers."""
    if labels is None or not is_classifier(outputs) or labels.shape != outputs.shape[:-1]:
        return None
    return float(np.mean(np.argmax(outputs, axis=-1) == labels))


def agreement(reference: np.ndarray, candidate: np.ndarray) -> float | None:
    """Share of samples (tokens, for sequence outputs) whose top-1 class is the same in both."""
    if not is_classifier(reference):
        return None
    return float(np.mean(np.argmax(reference, axis=-1) == np.argmax(candidate, axis=-1)))


def are_probabilities(outputs: np.ndarray) -> bool:
    """Whether score vectors are probabilities (a softmax head) rather than logits."""
    sums = outputs.reshape(-1, outputs.shape[-1]).astype(np.float64).sum(axis=1)
    return bool(outputs.min() >= 0.0 and outputs.max() <= 1.0 and np.allclose(sums, 1.0, atol=0.02))


def token_log_likelihoods(outputs: np.ndarray, labels: np.ndarray | None, *,
                          probabilities: bool | None = None) -> np.ndarray | None:
    """The log-likelihood of each labelled token, N x T, for N x T x V scores with N x T labels; None
    otherwise. Scores are logits unless they look like (or ``probabilities`` says they are) a softmax's
    output; a probability of 0, which an int8 softmax gives below half a step, counts as
    ``PROBABILITY_FLOOR`` (1e-6: a floored token adds 13.8 nats)."""
    if labels is None or not is_sequence(outputs) or labels.shape != outputs.shape[:-1]:
        return None
    if labels.size and (labels.min() < 0 or labels.max() >= outputs.shape[-1]):
        return None  # not a token of this vocabulary (the data stage says so to the user)
    scores = outputs.astype(np.float64)
    picked = np.take_along_axis(scores, labels[..., None].astype(np.int64), axis=-1)[..., 0]
    if probabilities if probabilities is not None else are_probabilities(outputs):
        total = np.maximum(scores.sum(axis=-1), 1e-12)
        return np.log(np.maximum(picked / total, PROBABILITY_FLOOR))
    top = scores.max(axis=-1)
    return picked - top - np.log(np.exp(scores - top[..., None]).sum(axis=-1))


def perplexity(outputs: np.ndarray, labels: np.ndarray | None, *, probabilities: bool | None = None) -> float | None:
    """exp(mean negative log-likelihood of the labelled token) over every position (see
    :func:`token_log_likelihoods`, which says how a zero probability is counted); None when the
    outputs are not N x T x V scores with N x T labels."""
    log_likelihood = token_log_likelihoods(outputs, labels, probabilities=probabilities)
    return None if log_likelihood is None else float(np.exp(-log_likelihood.mean()))


def binomial_upper(k: int, n: int, confidence: float = CONFIDENCE) -> float:
    """The one-sided Clopper-Pearson upper bound on a proportion seen ``k`` times in ``n``: the p at
    which k or fewer in n has probability 1 - confidence. Never 0: at k = 0 it is 1 - (1-c)^(1/n)."""
    if n <= 0 or k >= n:
        return 1.0
    alpha = 1.0 - confidence
    if k == 0:
        return 1.0 - alpha ** (1.0 / n)
    terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in range(k + 1)]

    def cdf(p: float) -> float:
        return sum(math.exp(t + i * math.log(p) + (n - i) * math.log1p(-p)) for i, t in enumerate(terms))

    low, high = k / n, 1.0
    for _ in range(60):  # cdf falls as p rises: bisect to about 1e-18
        middle = (low + high) / 2
        low, high = (middle, high) if cdf(middle) > alpha else (low, middle)
    return high


def samples_to_certify(budget: float, confidence: float = CONFIDENCE) -> int:
    """How many held-out samples, with no error among them, bound a proportion below ``budget``
    (a share, 0.01 for one point): the smallest n with binomial_upper(0, n) <= budget."""
    if budget <= 0:
        return math.inf
    if budget >= 1:
        return 1
    return math.ceil(math.log(1.0 - confidence) / math.log1p(-budget))


def bootstrap_upper(statistic, *columns: np.ndarray, confidence: float = CONFIDENCE,
                    resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> float:
    """The one-sided percentile-bootstrap upper bound of ``statistic(*columns)``, resampling rows
    (samples) with a fixed seed so that the same data give the same bound."""
    rows = len(columns[0])
    rng = np.random.default_rng(seed)
    values = [statistic(*(column[picks] for column in columns))
              for picks in (rng.integers(0, rows, rows) for _ in range(resamples))]
    return float(np.quantile(values, confidence))


def output_error(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """RMSE, signal-to-noise ratio (dB) and mean cosine similarity of candidate vs reference."""
    ref = reference.reshape(len(reference), -1).astype(np.float64)
    cand = candidate.reshape(len(candidate), -1).astype(np.float64)
    noise = ref - cand
    rmse = float(np.sqrt(np.mean(noise**2)))
    signal_power, noise_power = float(np.mean(ref**2)), float(np.mean(noise**2))
    snr = float("inf") if noise_power == 0 else 10.0 * np.log10(max(signal_power, 1e-30) / noise_power)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    cosine = np.sum(ref * cand, axis=1) / np.where(norms == 0, 1.0, norms)
    return {"rmse": rmse, "snr_db": round(snr, 3) if np.isfinite(snr) else None,
            "cosine": float(np.mean(cosine)), "max_abs": float(np.max(np.abs(noise)))}


def step_difference(raw: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Absolute difference of two runtimes' raw outputs: quantization steps for integer outputs."""
    return np.abs(raw.astype(np.float64) - reference.astype(np.float64))


def latency_summary(samples_ns: list[int]) -> dict[str, float]:
    """p50/p90/mean/min in milliseconds over the timed runs."""
    ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
    return {"p50": round(float(np.percentile(ms, 50)), 4), "p90": round(float(np.percentile(ms, 90)), 4),
            "mean": round(float(ms.mean()), 4), "min": round(float(ms.min()), 4), "runs": len(ms)}
