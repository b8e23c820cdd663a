"""Entry point of edgepipe's worker processes (see :mod:`targets.worker`).

    python -m targets.worker_main call.pickle result.pickle

A module of its own: ``python -m targets.worker`` would run that module a second time as
``__main__`` after the package has imported it.
"""

import sys

from .worker import main

sys.exit(main(sys.argv[1:]))
