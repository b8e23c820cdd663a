"""``python -m pipeline.cli``: the same as the ``edgepipe`` console script."""

from .commands import main

main()
