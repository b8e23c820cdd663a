"""Quantization-aware training on TensorFlow's distribution engine: two logical CPUs mirrored,
and two worker processes on 127.0.0.1 configured by TF_CONFIG, as a cluster manager would."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import api

EPOCHS = 3


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _qat(out: Path, strategy: str, env: dict | None = None, epochs: int = EPOCHS) -> subprocess.Popen:
    command = [sys.executable, "-m", "pipeline.cli", "qat", str(api.sample_path("reference_cnn.keras")),
               "--train", str(api.sample_path("mnist", "train.npz")), "--eval", str(api.sample_path("mnist", "eval.npz")),
               "--epochs", str(epochs), "--patience", "5", "--strategy", strategy, "--out", str(out), "--runs", "3",
               "--json"]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, **(env or {})})


def _cluster() -> list[dict]:
    """TF_CONFIG for two workers on 127.0.0.1 (worker 0 is the chief)."""
    workers = [f"127.0.0.1:{_port()}", f"127.0.0.1:{_port()}"]
    return [{"TF_CONFIG": json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})}
            for i in range(2)]


def _finish(process: subprocess.Popen, timeout: float = 600) -> tuple[str, str]:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]
    return out, err


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> dict:
    out, _ = _finish(_qat(tmp_path_factory.mktemp("single"), "default"))
    return json.loads(out)


def test_multi_worker_mirrored_on_two_logical_cpus(tmp_path, single):
    out, _ = _finish(_qat(tmp_path, "mirrored"))
    report = json.loads(out)
    assert report["qat"]["strategy"]["replicas"] == 2 and report["qat"]["strategy"]["engine"] == "MirroredStrategy"
    assert abs(report["quantized"]["accuracy"] - single["quantized"]["accuracy"]) <= 0.01


def test_multi_worker_two_processes_only_the_chief_writes(tmp_path, single):
    chief_out, worker_out = tmp_path / "chief", tmp_path / "worker"  # worker's own --out: it must stay empty
    chief_env, worker_env = _cluster()
    worker = _qat(worker_out, "multi-worker", worker_env)
    chief = _qat(chief_out, "multi-worker", chief_env)
    report = json.loads(_finish(chief)[0])
    worker_said = json.loads(_finish(worker)[0])
    assert worker_said == {"worker": True, "epochs_run": EPOCHS, "resumed_from_epoch": 0}
    assert not worker_out.exists() or not any(worker_out.rglob("*"))
    strategy = report["qat"]["strategy"]
    assert strategy["replicas"] == 2 and strategy["engine"] == "CollectiveAllReduceStrategy"
    assert (chief_out / "model_int8_qat.tflite").exists() and not (chief_out / ".qat-checkpoint").exists()
    # The stated tolerance: the same global batch and seed as one worker, within one accuracy point.
    assert abs(report["quantized"]["accuracy"] - single["quantized"]["accuracy"]) <= 0.01, (
        report["quantized"]["accuracy"], single["quantized"]["accuracy"])


def test_multi_worker_resumes_after_the_chief_is_killed(tmp_path):
    out = tmp_path / "shared"  # one folder on a shared file system: every worker reads the chief's checkpoint
    chief_env, worker_env = _cluster()
    worker = _qat(out, "multi-worker", worker_env, epochs=4)
    chief = _qat(out, "multi-worker", chief_env, epochs=4)
    seen = ""
    while "QAT epoch 1/4" not in seen and chief.poll() is None:
        seen += chief.stderr.readline()
    assert "QAT epoch 1/4" in seen, seen[-2000:]
    state = out / ".qat-checkpoint" / "state.json"
    deadline = time.monotonic() + 60
    while not state.exists() and time.monotonic() < deadline:  # epoch 1's checkpoint, then epoch 2 is under way
        time.sleep(0.05)
    for process in (chief, worker):  # the chief's machine dies mid-epoch; the worker is stuck without it
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert state.exists() and not (out / "report.json").exists()
    chief_env, worker_env = _cluster()
    worker = _qat(out, "multi-worker", worker_env, epochs=4)
    chief = _qat(out, "multi-worker", chief_env, epochs=4)
    report = json.loads(_finish(chief)[0])
    resumed = json.loads(_finish(worker)[0])
    assert report["qat"]["resumed_from_epoch"] >= 1 and report["qat"]["epochs_run"] == 4
    assert resumed["resumed_from_epoch"] == report["qat"]["resumed_from_epoch"]
    assert [row["epoch"] for row in report["qat"]["history"]] == [1, 2, 3, 4]


def test_multi_worker_needs_tf_config(tmp_path):
    process = _qat(tmp_path, "multi-worker", {"TF_CONFIG": ""})
    _, err = process.communicate(timeout=300)
    assert process.returncode == 2 and "set it in every worker's environment" in err.strip().splitlines()[-1]


@pytest.mark.fast
def test_the_start_up_request_is_taken_back_after_the_run(monkeypatch):
    """The CPU split or multi-worker request reaches the worker started inside the block, and no
    later worker of the same process (a plain conversion) inherits it."""
    from pipeline.frontend.keras_compat import CPU_REPLICAS, MULTI_WORKER
    from pipeline.train.distribute import prepared
    from pipeline.vocab import Strategy

    monkeypatch.delenv(CPU_REPLICAS, raising=False)
    monkeypatch.delenv(MULTI_WORKER, raising=False)
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["127.0.0.1:1"]},
                                                "task": {"type": "worker", "index": 0}}))
    with prepared(Strategy.MIRRORED):
        assert os.environ[CPU_REPLICAS] == "2"
    with prepared(Strategy.MULTI_WORKER):
        assert os.environ[MULTI_WORKER] == "1"
    assert CPU_REPLICAS not in os.environ and MULTI_WORKER not in os.environ
    monkeypatch.setenv(CPU_REPLICAS, "4")  # the user's own choice survives
    with prepared(Strategy.MIRRORED):
        assert os.environ[CPU_REPLICAS] == "4"
    assert os.environ[CPU_REPLICAS] == "4"
