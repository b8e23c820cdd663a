"""The one error boundary of edgepipe, as the library exposes it.

The classes live in the neutral bottom layer (:mod:`edgecore.errors`) so that the target layer can
raise them without importing the pipeline; this module re-exports them for library users.
"""

from edgecore.errors import (
           ConversionError,
           DataError,
           EdgepipeError,
           ModelLoadError,
           TargetError,
           UsageError,
           first_line,
           sentence,
)

__all__ = ["ConversionError", "DataError", "EdgepipeError", "ModelLoadError", "TargetError", "UsageError",
           "first_line", "sentence"]
