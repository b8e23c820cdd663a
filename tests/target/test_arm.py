"""Raspberry Pi / ARM targets: emulated aarch64 under QEMU, and a real sshd on 127.0.0.1."""

from __future__ import annotations

import glob
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner
from sshd_helper import free_port, keygen, sshd_binary, start_sshd  # noqa: E402

from pipeline import api
from pipeline.cli.commands import main
from pipeline.errors import TargetError
from targets.arm import emulator
from targets.base import RunOptions, SshOptions


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A throw-away OpenSSH server on 127.0.0.1 that accepts one generated key."""
    if sshd_binary() is None:
        pytest.skip("sshd is not installed: `make system-deps` installs openssh-server")
    server, reach = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield reach
    server.terminate()
    server.wait(timeout=10)


def _ssh_run(model, data, sshd, **overrides):
    args = {"--host": sshd["host"], "--port": str(sshd["port"]), "--identity": sshd["identity"],
            "--known-hosts": sshd["known_hosts"], "--remote-python": sys.executable, **overrides}
    command = ["run", str(model), "--target", "rpi4", "--runs", "5", "--json"]
    if data is not None:
        command += ["--eval", str(data)]
    for key, value in args.items():
        command += [key, value]
    return CliRunner().invoke(main, command)


def test_ssh_run_on_a_real_sshd(demo_run, small_npz, sshd):
    result, _ = demo_run
    before = set(glob.glob("/tmp/edgepipe.*"))
    outcome = _ssh_run(result.artifact, small_npz, sshd)
    assert outcome.exit_code == 0, outcome.stderr
    remote = json.loads(outcome.stdout)["targets"]["rpi4"]
    host = api.run_on_target(result.artifact, "host", small_npz, options=RunOptions(runs=3))["targets"]["host"]
    assert remote["accuracy"] == host["accuracy"]
    assert remote["samples"] == 200 and remote["threads"] == 4
    assert remote["delegate"] == "XNNPACK" and remote["latency_ms"]["p50"] > 0
    assert remote["measured_on"].startswith(sshd["host"])
    assert remote["energy_mj"]["method"] == "measured-latency x board-power"
    assert remote["energy_mj"]["board_power_w"] == pytest.approx(6.1)
    assert set(glob.glob("/tmp/edgepipe.*")) == before  # the remote temporary folder is gone


def test_ssh_closed_port_fails_cleanly(demo_run, sshd):
    result, _ = demo_run
    outcome = _ssh_run(result.artifact, None, sshd, **{"--port": str(free_port())})
    assert outcome.exit_code == 1
    assert "cannot reach" in outcome.stderr and "Traceback" not in outcome.stderr


def test_ssh_wrong_key_fails_cleanly(demo_run, sshd, tmp_path):
    result, _ = demo_run
    stranger = keygen(tmp_path / "stranger")
    outcome = _ssh_run(result.artifact, None, sshd, **{"--identity": str(stranger)})
    assert outcome.exit_code == 1
    assert "login to" in outcome.stderr and "--identity" in outcome.stderr


def test_ssh_unknown_host_key_is_refused(demo_run, sshd, tmp_path):
    result, _ = demo_run
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    outcome = _ssh_run(result.artifact, None, sshd, **{"--known-hosts": str(empty)})
    assert outcome.exit_code == 1
    assert "not in known_hosts" in outcome.stderr


def test_ssh_device_without_litert(demo_run, sshd, tmp_path):
    result, _ = demo_run
    bare = tmp_path / "bare-python"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    outcome = _ssh_run(result.artifact, None, sshd, **{"--remote-python": str(bare / "bin" / "python")})
    assert outcome.exit_code == 1
    assert "has no LiteRT interpreter" in outcome.stderr


def test_host_option_cannot_start_with_a_dash(demo_run):
    result, _ = demo_run
    with pytest.raises(Exception, match="not a host name"):
        api.run_on_target(result.artifact, "rpi4", options=RunOptions(ssh=SshOptions(host="-oProxyCommand=x")))


needs_emulator = pytest.mark.skipif(not (emulator.cache_dir() / ".complete").exists(),
                                    reason="arm64 emulator not built: `make arm-emulator` (make test builds it)")


@needs_emulator
def test_emulated_rpi4_matches_host(demo_run):
    result, report = demo_run
    eval_path = report["data"]["eval"]["path"]
    outcome = CliRunner().invoke(main, ["run", str(result.artifact), "--target", "rpi4", "--emulate",
                                        "--eval", eval_path, "--json"])
    assert outcome.exit_code == 0, outcome.stderr
    rpi4 = json.loads(outcome.stdout)["targets"]["rpi4"]
    assert rpi4["emulated"] is True and rpi4["qemu_cpu"] == "cortex-a72"
    assert rpi4["runtime"].startswith("litert") and "aarch64" in rpi4["runtime"]
    assert rpi4["accuracy"] == report["targets"]["host"]["accuracy"]
    assert rpi4["delegate"] == "XNNPACK"
    assert isinstance(rpi4["bit_exact_vs_host"], bool)
    # Only LiteRT's own (non-XNNPACK) softmax may differ, and by one step at most.
    assert rpi4["bit_exact_vs_host"] or (rpi4["max_diff_steps_vs_host"] <= 1 and "SOFTMAX" in rpi4["bit_exact_note"])
    assert rpi4["instruction_spread_within_run"] < 0.001 and rpi4["instructions_per_inference"] > 10_000
    assert rpi4["instructions_per_inference"] == min(rpi4["instruction_counts"])
    assert rpi4["estimated_latency_ms"] > 0 and rpi4["latency_ms"] is None


@needs_emulator
def test_fully_delegated_int8_is_bit_exact_on_aarch64(tiny_keras, small_npz, tmp_path):
    from pipeline.frontend.keras_compat import keras3

    keras = keras3()
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(10)])  # logits: no softmax
    path = tmp_path / "logits.keras"
    model.save(path)
    built = api.convert(api.ConvertConfig(model=path, calib=small_npz, out=tmp_path / "out", run=RunOptions(runs=2)))
    rpi4 = api.run_on_target(built.artifact, "rpi4", small_npz, options=RunOptions(emulate=True))["targets"]["rpi4"]
    assert rpi4["xnnpack"]["full_graph"] is True
    assert rpi4["bit_exact_vs_host"] is True and rpi4["differing_outputs_vs_host"] == 0


@needs_emulator
def test_instruction_counts_repeat_across_runs_for_int8_and_float32(demo_run):
    result, _ = demo_run
    counts = {}
    for name in ("model_int8.tflite", "model_float32.tflite"):
        blob = (result.out / name).read_bytes()
        for cpu in ("cortex-a72", "cortex-a76"):
            runs = [emulator.run(blob, None, cpu=cpu, threads=1, warmup=0, runs=0, count=3)[2] for _ in range(2)]
            assert runs[0] == runs[1], (name, cpu, runs)  # exactly, run to run
            assert (max(runs[0]) - min(runs[0])) / min(runs[0]) < 0.001
            counts[name, cpu] = min(runs[0])
    assert all(count > 10_000 for count in counts.values())
    # int8 XNNPACK kernels do less work than float32 ones on the dot-product capable Cortex-A76.
    assert counts["model_int8.tflite", "cortex-a76"] < counts["model_float32.tflite", "cortex-a76"]


def test_local_run_on_x86_warns_but_works(demo_run, caplog):
    result, _ = demo_run
    caplog.set_level("WARNING")
    report = api.run_on_target(result.artifact, "rpi4", options=RunOptions(runs=3))
    rpi4 = report["targets"]["rpi4"]
    assert rpi4["emulated"] is False and rpi4["latency_ms"]["p50"] > 0
    if rpi4["measured_on"].endswith("(x86_64)"):
        assert "figures are this machine's" in caplog.text


def test_emulator_missing_gives_the_make_target(monkeypatch, tmp_path, demo_run):
    result, _ = demo_run
    monkeypatch.setenv("EDGEPIPE_ARM_CACHE", str(tmp_path / "nothing"))
    with pytest.raises(TargetError, match="make arm-emulator"):
        api.run_on_target(result.artifact, "rpi5", options=RunOptions(emulate=True))


def test_on_device_run_needs_no_tensorflow(demo_run, small_npz):
    """What a Pi without TensorFlow runs: `edgepipe run --target rpi4` with TF unimportable."""
    result, _ = demo_run
    script = ("import sys\n"
              "for name in ('tensorflow', 'keras', 'tf_keras', 'h5py', 'tensorflow_model_optimization'):\n"
              "    sys.modules[name] = None\n"
              "from pipeline.cli import main\n"
              f"sys.argv = ['edgepipe', 'run', {str(result.artifact)!r}, '--target', 'rpi4', '--eval', {str(small_npz)!r},"
              " '--runs', '3', '--json']\n"
              "main()\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["targets"]["rpi4"]["samples"] == 200
