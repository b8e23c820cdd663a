"""Advice: sentences with evidence and a next step when the chosen model loses or is slower; none otherwise."""

from __future__ import annotations

import copy

import pytest

from pipeline.report.advice import advise

pytestmark = pytest.mark.fast

BASE = {"recipe": "int8", "float": {"accuracy": 0.95, "host_latency_ms": {"p50": 0.10}},
        "quantized": {"accuracy": 0.945},
        "targets": {"host": {"latency_ms": {"p50": 0.05}, "xnnpack": {"full_graph": True}}}}


def _with(**changes) -> dict:
    report = copy.deepcopy(BASE)
    for path, value in changes.items():
        where = report
        *parents, leaf = path.split("__")
        for key in parents:
            where = where[key]
        where[leaf] = value
    return report


def test_a_model_that_loses_nothing_gets_no_advice():
    assert advise(BASE) == []


def test_an_accuracy_loss_names_the_worst_layers_and_the_options():
    report = _with(quantized__accuracy=0.91)
    report["diagnosis"] = {"layers": [{"layer": "conv1", "snr_db": 3.2}, {"layer": "dense", "snr_db": 18.0}]}
    (sentence,) = advise(report)
    assert "loses 4.0 points" in sentence and "conv1 (3.2 dB)" in sentence
    assert "--calibration auto" in sentence and "--max-accuracy-drop 1" in sentence


def test_a_perplexity_rise_names_the_softmax_floor_and_the_ladder():
    report = _with(float__accuracy=None, quantized__accuracy=None)
    report["float"]["perplexity"], report["quantized"]["perplexity"] = 3.0, 3.75
    (sentence,) = advise(report)
    assert "raises perplexity by 25.0%" in sentence and "1e-6" in sentence and "--max-accuracy-drop 2" in sentence
    report["quantized"]["perplexity"] = 3.05  # +1.7%: within 2%, no sentence
    assert advise(report) == []


def test_slower_than_float_names_the_ops_off_the_delegate():
    report = _with(targets__host__latency_ms={"p50": 0.25},
                   targets__host__xnnpack={"full_graph": False, "delegated_ops": 61, "total_ops": 83,
                                           "cpu_ops": ["GATHER", "SOFTMAX", "GATHER"]})
    (sentence,) = advise(report)
    assert "slower than float: 0.250 ms against 0.100 ms" in sentence and "(2.5x)" in sentence
    assert "61 of 83 ops" in sentence and "GATHER, SOFTMAX." in sentence and "float16" in sentence

