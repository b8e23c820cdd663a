"""The one error boundary of edgepipe.

Every failure a user can cause or fix is raised as a subclass of :class:`EdgepipeError` with a
message that says what failed and how to fix it. The CLI turns these into one clean line on stderr
and a non-zero exit; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class EdgepipeError(Exception):
    """Base class: a failure the user can act on. ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class UsageError(EdgepipeError):
    """Options that do not fit together, an unknown recipe or target, an existing output."""

    exit_code = 2


class ModelLoadError(EdgepipeError):
    """The model file is missing, corrupt, unsafe to load or of an unknown kind."""


class DataError(EdgepipeError):
    """Calibration or evaluation data is missing, empty, unreadable or of the wrong shape."""


class ConversionError(EdgepipeError):
    """The TFLite converter failed, or its output breaks the recipe's promise (e.g. float ops)."""


class TargetError(EdgepipeError):
    """A target cannot run the model: missing runtime, unsupported op, failed invocation."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (at most ``limit`` characters), or its type's name
    when it has none: what goes between the parentheses of an error sentence."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


def sentence(text: str) -> str:
    """``text`` ending in exactly one full stop (kept as is when it ends in '.', '?' or '!')."""
    text = text.rstrip()
    return text if text.endswith((".", "?", "!")) else text + "."
