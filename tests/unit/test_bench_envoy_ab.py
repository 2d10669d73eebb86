"""bench/envoy_ab.py's request counting: its CPU-per-request figures divide by it."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from bench.envoy_ab import _block


@pytest.mark.parametrize("n, concurrency", [(640, 64), (100, 7), (5, 16)])
def test_every_answer_of_concurrent_workers_is_counted(n: int, concurrency: int):
    """Each answer comes after a real suspension (as an HTTP answer does), so workers interleave;
    every 200 is counted, and only 200s."""
    sent = 0

    async def send(client) -> SimpleNamespace:
        nonlocal sent
        sent += 1
        status = 503 if sent % 10 == 0 else 200
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return SimpleNamespace(status_code=status)

    ok = asyncio.run(_block(n, concurrency, send))
    assert sent == n
    assert ok == n - n // 10
