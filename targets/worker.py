"""Run a function in a fresh Python process, so native code that aborts cannot take edgepipe down.

TFLM and TensorFlow's converter are C++ that can abort or crash the whole process on some inputs.
The parent pickles ``(function, args)`` to a file, starts ``python -m targets.worker_main IN OUT`` (a
module, so nothing re-imports the caller's ``__main__``: library scripts without an
``if __name__ == "__main__":`` guard work), and reads back the pickled result or exception. A
worker killed by a signal becomes one clear sentence, saying what it was doing when it died (the
last :func:`breadcrumb` it left) and the likely cause where known.

    python -m targets.worker_main call.pickle result.pickle
"""

from __future__ import annotations

import faulthandler
import logging
import os
import pickle
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import deque
from pathlib import Path
from typing import Any, Callable

from edgecore.errors import EdgepipeError, TargetError

BREADCRUMB = "EDGEPIPE_BREADCRUMB"
IN_WORKER = "EDGEPIPE_WORKER"
LOG_LEVEL = "EDGEPIPE_LOG_LEVEL"
STDERR_TTY = "EDGEPIPE_STDERR_TTY"
WORKER_DIR = "EDGEPIPE_WORKER_DIR"  # the worker's folder: its fd-2 captures live there, so an abort's last words survive
TEST_ABORT = "EDGEPIPE_TEST_ABORT"  # tests: a worker whose breadcrumb contains this text aborts...
TEST_ABORT_ONCE = "EDGEPIPE_TEST_ABORT_ONCE"  # ...only if it can create this file first (once per run)
FATAL = re.compile(r"Check failed|^F\d{4} |terminate called|what\(\)|Fatal Python error|Assertion .* failed|LLVM ERROR")
# TensorFlow (tsl/platform/default/env.cc) CHECK-fails when pthread_create returns EAGAIN: no error path.
NO_THREADS = re.compile(r"pthread_create|\(11 vs\. 0\)|Resource temporarily unavailable")
NO_THREADS_HINT = ("the machine was out of threads or processes at that moment (pthread_create failed with EAGAIN): "
                   "load, not the model; run fewer jobs at once or raise the limit (ulimit -u, a container's pids limit)")
RETRY_DELAY_S = 1.0  # a moment for a machine out of threads to recover
RETRIED = "EDGEPIPE_WORKER_RETRIED"  # set in a worker that replaces one that died: how that one died
log = logging.getLogger("edgepipe")
_faulthandler_file = None


def in_worker() -> bool:
    """Whether this process is an edgepipe worker (so it need not isolate its own work again)."""
    return os.environ.get(IN_WORKER) == "1"


def breadcrumb(text: str) -> None:
    """Note what this worker is doing now, for the message if it dies (no-op outside a worker)."""
    path = os.environ.get(BREADCRUMB)
    if path:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        _test_abort(text)


def _test_abort(text: str) -> None:
    """For tests of the retry: die as TensorFlow's converter does on a failed CHECK."""
    wanted = os.environ.get(TEST_ABORT)
    if not wanted or wanted not in text:
        return
    once = os.environ.get(TEST_ABORT_ONCE)
    if once:
        try:
            open(once, "x").close()
        except FileExistsError:
            return
    os.write(2, f"F0000 00:00:00.000000 1 edgepipe_test.cc:1] Check failed: {TEST_ABORT} ({text})\n".encode())
    os.abort()


def _project_root() -> str:
    return str(Path(__file__).resolve().parent.parent)


def _environment(folder: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_project_root(), env.get("PYTHONPATH")) if p)
    env[IN_WORKER], env[BREADCRUMB], env[WORKER_DIR] = "1", str(folder / "breadcrumb.txt"), str(folder)
    env[LOG_LEVEL] = str(logging.getLogger("edgepipe").getEffectiveLevel())
    env[STDERR_TTY] = "1" if sys.stderr.isatty() or os.environ.get(STDERR_TTY) == "1" else "0"
    return env


def _pump(stream, keep: deque, forward: bool) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode(errors="replace")
        keep.append(line)
        if forward:
            sys.stderr.write(line)
            sys.stderr.flush()


def call_isolated(function: Callable[..., Any], *args: Any, what: str, crash_hint: str = "",
                  timeout: float | None = None, forward_stderr: bool = False,
                  error: type[EdgepipeError] = TargetError, hint_for: Callable[[str], str] | None = None,
                  retries: int = 0) -> Any:
    """``function(*args)`` in a separate process; its result, or its exception re-raised here.

    ``what`` says what was being done (for the message when the worker dies); ``crash_hint`` is
    the likely cause and fix, when known, and ``hint_for(breadcrumb)`` can name it from what the
    worker was doing. ``forward_stderr`` passes the worker's log lines and progress on live.
    ``retries``: how many times a worker killed by a signal (not SIGKILL, not a timeout) is
    replaced by a fresh one, for native code that aborts now and then (TensorFlow's converter,
    TFLM); a worker that could not start, or died because the machine ran out of threads, is
    retried once even with ``retries=0``. Each retry is logged, and the new worker can read how
    the last one died (:func:`retried_after`) to say so in its report."""
    attempt, retried = 0, ""
    while True:
        died = _call_once(function, args, what, timeout, forward_stderr, error, retried)
        if not isinstance(died, _Died):
            return died
        if died.code is None:  # not even started
            message = f"{what}: no worker process could be started ({died.said[0]}); {NO_THREADS_HINT}."
        else:
            hint = (hint_for(died.crumb) if hint_for else "") or crash_hint
            message = _death(died.code, died.said, what, died.crumb, hint)
        # A machine out of threads or processes is worth one more try whatever the caller allowed.
        transient = died.code is None or any(NO_THREADS.search(line) for line in died.said)
        signalled = died.code is None or (died.code < 0 and -died.code != signal.SIGKILL)
        if signalled and attempt < max(retries, 1 if transient else 0):
            log.warning("%s; retrying in a fresh worker", message.rstrip("."))
            attempt, retried = attempt + 1, message
            time.sleep(RETRY_DELAY_S)
            continue
        raise error(message if attempt == 0 else f"{message.rstrip('.')}; a fresh worker died the same way.")


def retried_after() -> str | None:
    """In a worker that replaced one that died: how the first one died (for the report); else None."""
    return os.environ.get(RETRIED) or None


class _Died:
    """A worker that died (``code`` < 0: by a signal) or could not start (``code`` None)."""

    def __init__(self, code: int | None, said: list[str], crumb: str) -> None:
        self.code, self.said, self.crumb = code, said, crumb


def _call_once(function, args, what, timeout, forward_stderr, error, retried: str = "") -> Any:
    """One worker: its value, or a :class:`_Died` (the exit code, its last words, its breadcrumb)."""
    with tempfile.TemporaryDirectory(prefix="edgepipe-worker-") as name:
        folder = Path(name)
        call, result = folder / "call.pickle", folder / "result.pickle"
        call.write_bytes(pickle.dumps((function, args), protocol=pickle.HIGHEST_PROTOCOL))
        said: deque = deque(maxlen=40)
        try:
            env = {**_environment(folder), **({RETRIED: retried} if retried else {})}
            process = subprocess.Popen([sys.executable, "-m", "targets.worker_main", str(call), str(result)],
                                       env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.PIPE)
        except OSError as exc:  # EAGAIN/ENOMEM: the machine is out of processes or memory right now
            return _Died(None, [str(exc)], "")
        reader = threading.Thread(target=_pump, args=(process.stderr, said, forward_stderr), daemon=True)
        try:
            reader.start()
        except RuntimeError as exc:  # "can't start new thread": the same, one level down
            process.kill()
            process.wait()
            return _Died(None, [str(exc)], "")
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise error(f"{what} took longer than {timeout:.0f} s and was stopped.") from exc
        finally:  # an interrupted parent (Ctrl-C, SIGTERM) takes its worker with it
            if process.poll() is None:
                process.kill()
                process.wait()
            reader.join(timeout=5)
        if code == 0 and result.exists():
            status, value = pickle.loads(result.read_bytes())
            if status == "ok":
                return value
            if status == "error":
                raise value
            raise RuntimeError(f"edgepipe failed in a worker process (a bug; please report it):\n{value}")
        crumb_path = folder / "breadcrumb.txt"
        crumb = crumb_path.read_text(encoding="utf-8") if crumb_path.exists() else ""
        # What native code wrote to fd 2 under a capture that never ended (the abort's own line).
        captured = [line + "\n" for path in sorted(folder.glob(f"native-stderr-{process.pid}-*.txt"))
                    for line in path.read_text(errors="replace").splitlines()]
        traceback_path = folder / "faulthandler.txt"
        if traceback_path.exists() and traceback_path.stat().st_size:
            log.debug("the worker's Python stack when it died:\n%s", traceback_path.read_text(errors="replace"))
        return _Died(code, [*said, *captured][-80:], crumb)


def _death(code: int, said: list[str], what: str, crumb: str, hint: str) -> str:
    lines = [line.strip() for line in said if line.strip() and not line.startswith("edgepipe: ")]
    fatal = [line for line in lines if FATAL.search(line)]
    lines = fatal[-2:] or lines  # a failed CHECK says more than the chatter before it
    if any(NO_THREADS.search(line) for line in lines):
        hint = NO_THREADS_HINT
    doing = f" while {crumb}" if crumb else ""
    if code > 0:  # Python failed before it could report (e.g. it could not import what it was given)
        return f"{what}{doing}: the worker process failed ({lines[-1] if lines else f'exit status {code}'})."
    try:
        how = f"was killed by {signal.Signals(-code).name}"
    except ValueError:
        how = f"was killed by signal {-code}"
    detail = f" (it said: {' '.join(lines)[-300:]})" if lines else " without an error message"
    return (f"{what}{doing}: the worker process {how}{detail}; "
            f"{hint or 'this is a crash inside native code, so check the model on the host target first'}.")


def _configure_logging() -> None:
    level = os.environ.get(LOG_LEVEL)
    if not level:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("edgepipe: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(int(level), logging.WARNING))
    for name in ("edgepipe", "edgecore", "pipeline", "targets"):
        logging.getLogger(name).setLevel(int(level))


def main(argv: list[str]) -> int:
    """Worker side: run the pickled call, write the pickled outcome atomically."""
    _configure_logging()
    call, result = Path(argv[0]), Path(argv[1])
    # On SIGABRT/SIGSEGV the Python stack goes to a file the parent logs (debug), not into the message.
    global _faulthandler_file
    _faulthandler_file = open(call.parent / "faulthandler.txt", "w")  # noqa: SIM115 (open until the worker exits)
    faulthandler.enable(file=_faulthandler_file, all_threads=True)
    function, args = pickle.loads(call.read_bytes())
    try:
        outcome = ("ok", function(*args))
    except EdgepipeError as exc:
        outcome = ("error", exc)
    except Exception:  # a bug: the parent shows the traceback, as the CLI does for bugs in-process
        outcome = ("bug", traceback.format_exc())
    temp = result.with_suffix(".tmp")
    temp.write_bytes(pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL))
    os.replace(temp, result)
    return 0

