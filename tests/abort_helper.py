"""Worker-side helpers for the abort tests (imported by module name in edgepipe's workers)."""

from __future__ import annotations

import os

from edgecore.cstderr import CapturedStderr


def abort_under_capture(line: str) -> None:
    """Die as TensorFlow's converter does: a CHECK line on fd 2 while it is captured, then SIGABRT."""
    with CapturedStderr():
        os.write(2, f"chatter before it\n{line}\n".encode())
        os.abort()
