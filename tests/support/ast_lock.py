"""Serialize `ast.parse` across the test process's threads.

CPython 3.11 (this machine has 3.11.7) keeps the AST constructor's recursion depth in
per-interpreter state, not per call (python/cpython#106905). If a collection during one
thread's `ast.parse` lets another thread parse too, the first one ends with
`SystemError: AST constructor recursion depth mismatch`. Python 3.11's traceback module parses
source lines to place its carets, so a server thread of a test logging an exception while the
main thread imports (pytest rewrites asserts with `ast.parse`) or formats a traceback can do it.
tests/unit/test_api_docs.py failed once with that error (which two threads met was not
recorded). Every such path goes through `ast.parse`, which this lock serializes.
"""
from __future__ import annotations

import ast
import functools
import threading

_LOCK = threading.RLock()


def install() -> None:
    parse = ast.parse
    if getattr(parse, "_serialized", False):
        return

    @functools.wraps(parse)
    def serialized(*args, **kwargs):
        with _LOCK:
            return parse(*args, **kwargs)

    serialized._serialized = True  # type: ignore[attr-defined]
    ast.parse = serialized
