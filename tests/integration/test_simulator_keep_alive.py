"""The simulator keeps idle connections open as long as Google's front ends do, longer than the
upstream's pool keeps them: the upstream, not the backend, closes an idle connection, so a POST
is never sent on a connection the backend is closing (tests/simulator/__main__.py)."""
from __future__ import annotations

import asyncio
import time

from services.upstream.transport import Transport
from tests import harness
from tests.simulator.__main__ import KEEP_ALIVE_SECONDS

# uvicorn's default idle timeout, which the simulator had: a connection idle this long was closed.
UVICORN_DEFAULT_KEEP_ALIVE = 5.0


def test_the_simulator_outlives_the_upstream_pool_keep_alive() -> None:
    assert KEEP_ALIVE_SECONDS > Transport()._keepalive


async def test_a_post_on_a_connection_idle_past_uvicorns_default_is_answered(simulator: harness.Proc) -> None:
    transport = Transport()
    url = f"{simulator.url}/_sim/health"
    try:
        first = await transport.request("POST", url, headers={}, body=b"{}")
        await asyncio.sleep(UVICORN_DEFAULT_KEEP_ALIVE - 0.3)
        # The loop is held (a CPU-starved process) across the idle deadline: a close by the
        # server meanwhile is not seen before the pooled connection is reused for the POST.
        time.sleep(0.6)
        second = await transport.request("POST", url, headers={}, body=b"{}")
        assert second.status == first.status
    finally:
        await transport.aclose()
