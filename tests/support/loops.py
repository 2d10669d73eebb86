"""The `run` fixture: a test's coroutine run on each event loop the services may run on, uvloop
(as they run) and asyncio's own, one test case each."""
from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

import pytest
import uvloop

LOOPS = {"uvloop": uvloop.new_event_loop, "asyncio": asyncio.new_event_loop}


@pytest.fixture(params=list(LOOPS))
def run(request) -> Callable[[Awaitable], object]:
    def go(coro: Awaitable):
        with asyncio.Runner(loop_factory=LOOPS[request.param]) as runner:
            return runner.run(coro)
    return go
