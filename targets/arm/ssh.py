"""Run the device runner on a real device over SSH, with the system ``ssh`` and ``scp``.

Host-key checking stays on (BatchMode, StrictHostKeyChecking=yes); arguments go to ssh as a
list, and the one command string the remote shell sees is built with ``shlex.quote``.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from edgecore.errors import TargetError, UsageError
from targets.base import SshOptions
from targets.host import device_runner


def _common(options: SshOptions) -> list[str]:
    args = ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", f"ConnectTimeout={options.timeout}",
            "-o", "LogLevel=ERROR"]
    if options.identity:
        args += ["-o", "IdentitiesOnly=yes", "-i", options.identity]
    if options.known_hosts:
        args += ["-o", f"UserKnownHostsFile={options.known_hosts}"]
    return args


def _explain(options: SshOptions, stderr: str) -> TargetError:
    text = stderr.strip()
    host = options.host + (f" port {options.port}" if options.port else "")
    lowered = text.lower()
    if "host key verification failed" in lowered or "no ed25519 host key is known" in lowered or "host key is known" in lowered:
        return TargetError(f"the host key of {host} is not in known_hosts; connect once with `ssh` to check and "
                           f"accept it, or pass --known-hosts FILE ({text.splitlines()[-1] if text else 'no detail'}).")
    if "permission denied" in lowered or "too many authentication failures" in lowered:
        return TargetError(f"login to {host} failed; check the user and --identity KEY, and that the key is in "
                           f"the device's authorized_keys ({text.splitlines()[-1]}).")
    return TargetError(f"cannot reach {host}; check the address and port and that sshd runs on the device "
                       f"({text.splitlines()[-1] if text else 'ssh gave no detail'}).")


class Session:
    """ssh/scp to one device, with host-key checking on and errors explained."""

    def __init__(self, options: SshOptions) -> None:
        if options.host.startswith("-") or not options.host.strip():
            raise UsageError(f"--host {options.host!r} is not a host name; give USER@HOST.")
        for tool in ("ssh", "scp"):
            if shutil.which(tool) is None:
                raise TargetError(f"`{tool}` is not installed; install the OpenSSH client (apt-get install openssh-client).")
        self.options = options
        self.deadline = time.monotonic() + options.budget

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess:
        left = self.deadline - time.monotonic()
        try:
            if left <= 0:
                raise subprocess.TimeoutExpired(argv, 0)
            return subprocess.run(argv, capture_output=True, text=True, timeout=left)
        except subprocess.TimeoutExpired as exc:
            raise TargetError(f"{self.options.host} did not finish within {self.options.budget:g} s; check the device, "
                              "or allow more time (--timeout).") from exc

    def ssh(self, command: str, check: bool = True) -> subprocess.CompletedProcess:
        port = ["-p", str(self.options.port)] if self.options.port else []
        done = self._run(["ssh", *_common(self.options), *port, "--", self.options.host, command])
        if done.returncode == 255 or (check and done.returncode != 0 and not done.stdout.strip()):
            raise _explain(self.options, done.stderr)
        return done

    def scp(self, sources: list[str], destination: str) -> None:
        port = ["-P", str(self.options.port)] if self.options.port else []
        done = self._run(["scp", "-q", *_common(self.options), *port, "--", *sources, destination])
        if done.returncode != 0:
            raise _explain(self.options, done.stderr)

    def remote(self, path: str) -> str:
        return f"{self.options.host}:{path}"


def run(options: SshOptions, model: bytes, inputs: np.ndarray | None, *, threads: int, warmup: int,
        runs: int) -> tuple[dict, np.ndarray | None]:
    """Copy runner, model and inputs to a fresh temporary folder on the device, run, fetch, clean up."""
    session = Session(options)
    remote_dir = session.ssh("mktemp -d /tmp/edgepipe.XXXXXX").stdout.strip()
    if not remote_dir.startswith("/tmp/edgepipe."):
        raise TargetError(f"unexpected answer from `mktemp` on {options.host}: {remote_dir!r}.")
    try:
        with tempfile.TemporaryDirectory(prefix="edgepipe-ssh-") as folder:
            local = Path(folder)
            (local / "model.tflite").write_bytes(model)
            shutil.copy(device_runner.__file__, local / "device_runner.py")
            files = [str(local / "model.tflite"), str(local / "device_runner.py")]
            args = [options.python, f"{remote_dir}/device_runner.py", "--model", f"{remote_dir}/model.tflite",
                    "--threads", str(threads), "--warmup", str(warmup), "--runs", str(runs)]
            if inputs is not None:
                np.save(local / "inputs.npy", inputs)
                files.append(str(local / "inputs.npy"))
                args += ["--inputs", f"{remote_dir}/inputs.npy", "--outputs", f"{remote_dir}/outputs.npy"]
            session.scp(files, session.remote(remote_dir + "/"))
            done = session.ssh(" ".join(shlex.quote(a) for a in args), check=False)
            if done.returncode == device_runner.EXIT_NO_RUNTIME:
                raise TargetError(f"{options.host} has no LiteRT interpreter for `{options.python}`; on the device run "
                                  "`pip install ai-edge-litert numpy` (or tflite-runtime).")
            if done.returncode != 0:
                raise TargetError(f"the runner failed on {options.host} (exit {done.returncode}): "
                                  f"{(done.stderr.strip() or done.stdout.strip())[-400:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            raw = None
            if inputs is not None:
                session.scp([session.remote(f"{remote_dir}/outputs.npy")], str(local / "outputs.npy"))
                raw = np.load(local / "outputs.npy")
    finally:  # clean up even after a timeout, with a short grace of its own
        session.deadline = max(session.deadline, time.monotonic() + options.timeout)
        try:
            session.ssh(f"rm -rf -- {shlex.quote(remote_dir)}", check=False)
        except TargetError:
            pass
    return result, raw
