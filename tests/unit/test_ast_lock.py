"""tests/support/ast_lock.py: the whole test process parses under one lock."""
from __future__ import annotations

import ast
import threading
import traceback

from tests.support import ast_lock


def test_ast_parse_is_serialized_in_the_test_process():
    assert getattr(ast.parse, "_serialized", False)
    ast_lock.install()  # idempotent: still one wrapper
    assert ast.parse("x = 1").body[0].targets[0].id == "x"


def test_a_thread_waits_while_another_holds_the_parse_lock():
    entered = threading.Event()

    def parse_in_thread() -> None:
        ast.parse("y = 2")
        entered.set()

    with ast_lock._LOCK:
        t = threading.Thread(target=parse_in_thread)
        t.start()
        assert not entered.wait(0.3)  # blocked on the lock the main thread holds
        # A traceback formatted in the holding thread (carets: ast.parse inside) does not deadlock.
        try:
            {}["k"]
        except KeyError:
            assert "KeyError" in traceback.format_exc()
    t.join(10)
    assert entered.is_set()
