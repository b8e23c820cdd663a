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

import logging
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from collections import deque
from pathlib import Path
from typing import Any, Callable

from edgecore.errors import EdgepipeError, TargetError

BREADCRUMB = "EDGEPIPE_BREADCRUMB"
IN_WORKER = "EDGEPIPE_WORKER"
LOG_LEVEL = "EDGEPIPE_LOG_LEVEL"
STDERR_TTY = "EDGEPIPE_STDERR_TTY"


def in_worker() -> bool:
    """Whether this process is an edgepipe worker (so it need not isolate its own work again)."""
    return os.environ.get(IN_WORKER) == "1"


def breadcrumb(text: str) -> None:
    """Note what this worker is doing now, for the message if it dies (no-op outside a worker)."""
    path = os.environ.get(BREADCRUMB)
    if path:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)


def _project_root() -> str:
    return str(Path(__file__).resolve().parent.parent)


def _environment(folder: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_project_root(), env.get("PYTHONPATH")) if p)
    env[IN_WORKER], env[BREADCRUMB] = "1", str(folder / "breadcrumb.txt")
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
                  error: type[EdgepipeError] = TargetError, hint_for: Callable[[str], str] | None = None) -> Any:
    """``function(*args)`` in a separate process; its result, or its exception re-raised here.

    ``what`` says what was being done (for the message when the worker dies); ``crash_hint`` is
    the likely cause and fix, when known, and ``hint_for(breadcrumb)`` can name it from what the
    worker was doing. ``forward_stderr`` passes the worker's log lines and progress on live."""
    with tempfile.TemporaryDirectory(prefix="edgepipe-worker-") as name:
        folder = Path(name)
        call, result = folder / "call.pickle", folder / "result.pickle"
        call.write_bytes(pickle.dumps((function, args), protocol=pickle.HIGHEST_PROTOCOL))
        process = subprocess.Popen([sys.executable, "-m", "targets.worker_main", str(call), str(result)],
                                   env=_environment(folder), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE)
        said: deque = deque(maxlen=40)
        reader = threading.Thread(target=_pump, args=(process.stderr, said, forward_stderr), daemon=True)
        reader.start()
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
        hint = (hint_for(crumb) if hint_for else "") or crash_hint
        raise error(_death(code, list(said), what, crumb, hint))


def _death(code: int, said: list[str], what: str, crumb: str, hint: str) -> str:
    lines = [line.strip() for line in said if line.strip() and not line.startswith("edgepipe: ")]
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

