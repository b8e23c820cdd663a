"""Capture what C and C++ code writes to file descriptor 2 (TFLM, TensorFlow, the converter).

Python's own writes to stderr (edgepipe's log lines and progress) keep reaching the terminal
meanwhile: ``sys.stderr`` and the logging handlers that write to it are pointed at a copy of
the real stderr for as long as the capture lasts.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile


class CapturedStderr:
    """Redirect file descriptor 2 into a buffer; ``text`` holds what was written once it exits."""

    def __init__(self) -> None:
        self.text = ""

    def __enter__(self) -> "CapturedStderr":
        sys.stderr.flush()
        self._saved = os.dup(2)
        # In an edgepipe worker, a named file in the worker's folder: if native code aborts under
        # the capture, the parent reads its last words from there (a TemporaryFile dies with it).
        self._path = _worker_capture_path()
        self._file = open(self._path, "w+b") if self._path else tempfile.TemporaryFile()  # noqa: SIM115
        self._python_stderr = sys.stderr
        try:
            self._real = os.fdopen(os.dup(self._saved), "w", buffering=1, encoding="utf-8", errors="replace")
        except OSError:  # no usable stderr at all: Python's writes are captured too
            self._real = None
        os.dup2(self._file.fileno(), 2)
        self._handlers = []
        if self._real is not None and _writes_to_fd2(self._python_stderr):
            sys.stderr = self._real
            for handler in _stream_handlers():
                if handler.stream is self._python_stderr:
                    handler.setStream(self._real)
                    self._handlers.append(handler)
        return self

    def __exit__(self, *exc) -> None:
        for handler in self._handlers:
            handler.setStream(self._python_stderr)
        if self._real is not None:
            sys.stderr = self._python_stderr
            self._real.close()
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._file.seek(0)
        self.text = self._file.read().decode(errors="replace")
        self._file.close()
        if self._path:
            os.unlink(self._path)


def _worker_capture_path() -> str | None:
    folder = os.environ.get("EDGEPIPE_WORKER_DIR")  # targets.worker.WORKER_DIR (edgecore imports no targets)
    if not folder or not os.path.isdir(folder):
        return None
    handle, path = tempfile.mkstemp(prefix=f"native-stderr-{os.getpid()}-", suffix=".txt", dir=folder)
    os.close(handle)
    return path


def _writes_to_fd2(stream) -> bool:
    """Whether a Python stream writes to file descriptor 2 (not a test runner's capture buffer)."""
    try:
        return stream.fileno() == 2
    except (AttributeError, OSError, ValueError):
        return False


def _stream_handlers() -> list[logging.StreamHandler]:
    loggers = [logging.getLogger(), *(logger for logger in logging.Logger.manager.loggerDict.values()
                                      if isinstance(logger, logging.Logger))]
    return [h for logger in loggers for h in logger.handlers if isinstance(h, logging.StreamHandler)]
