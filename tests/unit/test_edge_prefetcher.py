"""Prefetcher.ready(): what is already read comes at once, in order; the end or a failure
after it still comes from the next get(), never before the items that preceded it."""
from __future__ import annotations

import asyncio

import pytest

from services.edge.streaming import Prefetcher


class Boom(Exception):
    pass


def source(items: list) -> callable:
    it = iter(items)

    async def next_item():
        item = next(it)
        if isinstance(item, Exception):
            raise item
        return item

    return next_item


async def _settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


@pytest.mark.parametrize("items, first, ready, then", [
    ([1, 2, 3, None], 1, [2, 3], None),
    ([1, None], 1, [], None),
    ([1, 2, Boom()], 1, [2], Boom),
    ([1, Boom()], 1, [], Boom),
])
def test_ready_takes_what_is_waiting(items, first, ready, then):
    async def run() -> None:
        pump = Prefetcher(source(items))
        try:
            await _settle()  # the source is read ahead into the queue
            assert await pump.get() == first
            assert pump.ready() == ready
            assert pump.ready() == []  # the end / failure stays held
            if then is Boom:
                with pytest.raises(Boom):
                    await pump.get()
            else:
                assert await pump.get() is then
        finally:
            pump.close()

    asyncio.run(run())


def test_ready_does_not_wait_for_a_slow_source():
    async def run() -> None:
        gate = asyncio.Event()

        async def slow():
            await gate.wait()
            return None

        calls = iter([lambda: asyncio.sleep(0, 1), slow])

        async def next_item():
            return await next(calls)()

        pump = Prefetcher(next_item)
        try:
            assert await pump.get() == 1
            assert pump.ready() == []  # nothing there yet: nothing is waited for
            gate.set()
            assert await pump.get() is None
        finally:
            pump.close()

    asyncio.run(run())
