"""Capture what C and C++ code writes to file descriptor 2 (TFLM, TensorFlow, the converter)."""

from __future__ import annotations

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
        self._file = tempfile.TemporaryFile()
        os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(self, *exc) -> None:
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._file.seek(0)
        self.text = self._file.read().decode(errors="replace")
        self._file.close()
