"""Numpy-only metrics shared by targets and the verify stage."""

from __future__ import annotations

import numpy as np


def is_classifier(outputs: np.ndarray) -> bool:
    """A batch of score vectors (N x classes, classes > 1) is read as a classifier's output."""
    return outputs.ndim == 2 and outputs.shape[1] > 1


def top1_accuracy(outputs: np.ndarray, labels: np.ndarray | None) -> float | None:
    """Share of samples whose arg-max is the label; None for unlabelled data or non-classifiers."""
    if labels is None or not is_classifier(outputs):
        return None
    return float(np.mean(np.argmax(outputs, axis=1) == labels))


def agreement(reference: np.ndarray, candidate: np.ndarray) -> float | None:
    """Share of samples whose top-1 class is the same in both outputs."""
    if not is_classifier(reference):
        return None
    return float(np.mean(np.argmax(reference, axis=1) == np.argmax(candidate, axis=1)))


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
