"""Run a function in a fresh Python process, so native code that aborts cannot take edgepipe down.

TFLM (and TensorFlow's converter) are C++ that can abort the whole process on some graphs. The
parent pickles ``(function, args)`` to a file, starts ``python -m targets.worker IN OUT`` (a
module, so nothing re-imports the caller's ``__main__``: library scripts without an
``if __name__ == "__main__":`` guard work), and reads back the pickled result or exception. A
worker killed by a signal becomes one clear :class:`TargetError` sentence.

    python -m targets.worker call.pickle result.pickle
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

from edgecore.errors import EdgepipeError, TargetError


def _project_root() -> str:
    return str(Path(__file__).resolve().parent.parent)


def call_isolated(function: Callable[..., Any], *args: Any, what: str, crash_hint: str = "",
                  timeout: float | None = None) -> Any:
    """``function(*args)`` in a separate process; its result, or its exception re-raised here.

    ``what`` says what was being done (for the message when the worker dies); ``crash_hint`` is
    the likely cause and fix, when known."""
    with tempfile.TemporaryDirectory(prefix="edgepipe-worker-") as folder:
        call, result = Path(folder) / "call.pickle", Path(folder) / "result.pickle"
        call.write_bytes(pickle.dumps((function, args), protocol=pickle.HIGHEST_PROTOCOL))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_project_root(), env.get("PYTHONPATH")) if p)
        try:
            done = subprocess.run([sys.executable, "-m", "targets.worker", str(call), str(result)], env=env,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise TargetError(f"{what} took longer than {timeout:.0f} s and was stopped.") from exc
        if done.returncode == 0 and result.exists():
            ok, value = pickle.loads(result.read_bytes())
            if ok:
                return value
            raise value
        raise TargetError(_death(done, what, crash_hint))


def _death(done: subprocess.CompletedProcess, what: str, hint: str) -> str:
    said = [line.strip() for line in done.stderr.decode(errors="replace").splitlines() if line.strip()]
    code = done.returncode
    if code > 0:  # Python failed before it could report (e.g. it could not import what it was given)
        return f"{what}: the worker process failed ({said[-1] if said else f'exit status {code}'})."
    try:
        how = f"was killed by {signal.Signals(-code).name}"
    except ValueError:
        how = f"was killed by signal {-code}"
    detail = f" (it said: {' '.join(said)[-300:]})" if said else " without an error message"
    return (f"{what}: the worker process {how}{detail}; "
            f"{hint or 'this is a crash inside native code, so check the model on the host target first'}.")


def main(argv: list[str]) -> int:
    """Worker side: run the pickled call, write the pickled outcome atomically."""
    call, result = Path(argv[0]), Path(argv[1])
    function, args = pickle.loads(call.read_bytes())
    try:
        outcome = (True, function(*args))
    except EdgepipeError as exc:
        outcome = (False, exc)
    except Exception as exc:  # carried back to the parent as a TargetError, with its type
        outcome = (False, TargetError(f"{type(exc).__name__}: {exc}"))
    temp = result.with_suffix(".tmp")
    temp.write_bytes(pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL))
    os.replace(temp, result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
