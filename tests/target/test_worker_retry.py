"""A worker that native code aborts: its last words survive edgepipe's stderr capture, and a
caller that asks for it (api.convert) gets one retry in a fresh worker."""

from __future__ import annotations

import logging
from pathlib import Path

import abort_helper  # tests/abort_helper.py: imported by module name in the workers too
import pytest

from edgecore.errors import TargetError
from targets.worker import TEST_ABORT, TEST_ABORT_ONCE, breadcrumb, call_isolated

pytestmark = pytest.mark.fast


def test_a_worker_that_aborts_once_is_retried_in_a_fresh_one(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(TEST_ABORT, "running stage lint")
    monkeypatch.setenv(TEST_ABORT_ONCE, str(tmp_path / "aborted"))
    with caplog.at_level(logging.WARNING, logger="edgepipe"):
        assert call_isolated(breadcrumb, "running stage lint", what="converting", retries=1) is None
    assert (tmp_path / "aborted").exists()  # the first worker did abort
    assert "killed by SIGABRT" in caplog.text and "Check failed: EDGEPIPE_TEST_ABORT" in caplog.text
    assert "retrying in a fresh worker" in caplog.text


def test_a_worker_that_aborts_every_time_fails_after_one_retry(monkeypatch):
    monkeypatch.setenv(TEST_ABORT, "running stage lint")
    with pytest.raises(TargetError, match=r"while running stage lint: the worker process was killed by SIGABRT "
                                          r"\(it said: .*Check failed.*a fresh worker died the same way"):
        call_isolated(breadcrumb, "running stage lint", what="converting", retries=1)


def test_no_retry_unless_asked(tmp_path, monkeypatch):
    monkeypatch.setenv(TEST_ABORT, "x")
    monkeypatch.setenv(TEST_ABORT_ONCE, str(tmp_path / "aborted"))
    with pytest.raises(TargetError, match="killed by SIGABRT") as caught:
        call_isolated(breadcrumb, "x", what="converting")
    assert "fresh worker" not in str(caught.value)


def test_an_abort_under_a_stderr_capture_keeps_its_check_line():
    with pytest.raises(TargetError, match=r"it said: F0000 .*Check failed: ret == 0 \(11 vs\. 0\)"):
        call_isolated(abort_helper.abort_under_capture,
                      "F0000 00:00:1.0 1 env.cc:74] Check failed: ret == 0 (11 vs. 0)Thread tf_Compute creation "
                      "via pthread_create() failed.", what="converting")


def test_tensorflows_thread_check_is_named_as_load_not_the_model():
    with pytest.raises(TargetError, match="out of threads or processes") as caught:
        call_isolated(abort_helper.abort_under_capture,
                      "F0000 00:00:1.0 1 env.cc:84] Check failed: ret == 0 (11 vs. 0) Thread tf_ConvertSignatures "
                      "creation via pthread_create() failed.", what="converting", crash_hint="try another recipe")
    assert "try another recipe" not in str(caught.value)


def test_a_worker_that_cannot_be_started_is_a_sentence_and_retried(monkeypatch, caplog):
    import subprocess

    import targets.worker as worker

    real, calls = subprocess.Popen, []

    def popen(*args, **kwargs):  # the first fork fails as it does when the machine is out of processes
        calls.append(args)
        if len(calls) == 1:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        return real(*args, **kwargs)

    monkeypatch.setattr(worker.subprocess, "Popen", popen)
    with caplog.at_level(logging.WARNING, logger="edgepipe"):
        assert call_isolated(breadcrumb, "x", what="converting", retries=1) is None
    assert "no worker process could be started" in caplog.text and len(calls) == 2
    calls.clear()  # a machine out of processes is worth one more try even when the caller asked for none
    assert call_isolated(breadcrumb, "x", what="converting") is None and len(calls) == 2

    def never(*args, **kwargs):
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(worker.subprocess, "Popen", never)
    with pytest.raises(TargetError, match=r"converting: no worker process could be started \(\[Errno 11\]"):
        call_isolated(breadcrumb, "x", what="converting")


def test_a_tflm_worker_that_aborts_once_is_retried(tmp_path, monkeypatch, caplog):
    import numpy as np

    from edgecore.model_info import inspect_model
    from targets.mcu import tflm

    blob = (Path(__file__).resolve().parents[1] / "data" / "tiny_int8.tflite").read_bytes()
    info = inspect_model(blob)
    x = np.random.default_rng(0).uniform(0, 1, size=(4, *info.inputs[0].shape[1:])).astype(np.float32)
    expected = tflm.run_isolated(blob, info, x)[1][0]
    monkeypatch.setenv(TEST_ABORT, "running TensorFlow Lite Micro")
    monkeypatch.setenv(TEST_ABORT_ONCE, str(tmp_path / "aborted"))
    with caplog.at_level(logging.WARNING, logger="edgepipe"):
        _, (raw, _) = tflm.run_isolated(blob, info, x)
    assert (tmp_path / "aborted").exists() and "retrying in a fresh worker" in caplog.text
    assert "while running TensorFlow Lite Micro on 4 samples" in caplog.text
    assert np.array_equal(raw, expected)
