"""The command line: click commands and their option groups, a thin adapter over :mod:`pipeline.api`.

Owns parsing, rendering and exit codes. May import the api and anything below it; nothing imports it.
"""

from .commands import main

__all__ = ["main"]
