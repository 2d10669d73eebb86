"""The services run without docstrings (`python -OO`): ~2-3 MiB less resident per process
(issue #15, idle RSS), since every loaded module's code otherwise keeps its docstrings.

Nothing a client or operator sees comes from a docstring: the edge's OpenAPI document takes
its texts from services/edge/apidoc (operations and schema descriptions spelt out, checked by
tests/unit/test_api_docs.py under -OO), FastAPI's own docs are off, and the services parse no
command line. -OO also drops `assert` statements, which in our code only narrow types.

`python -m services.edge` / `services.upstream` re-execute themselves with -OO (same process
id, arguments and environment) before anything else is imported. An operator's own
PYTHONOPTIMIZE, set to any value (0 to keep docstrings), wins.
"""
from __future__ import annotations

import os
import sys


def drop() -> None:
    """Replace this process by the same command under -OO, unless already or told otherwise."""
    if sys.flags.optimize >= 2 or "PYTHONOPTIMIZE" in os.environ:
        return
    os.execv(sys.executable, [sys.executable, "-OO", *sys.orig_argv[1:]])
