"""An answer's first event leaves the upstream alone, even when the backend's first read
brought others with it (services/upstream/code_assist.py BatchedChunks): they are converted
and handed on by the next call, so the first chunk does not wait for their work. After the
first, events that arrived together still come together; errors keep their order."""
from __future__ import annotations

import asyncio

import orjson
import pytest

from services.upstream.code_assist import EventStream
from services.upstream.errors import BackendError


def _event(text: str) -> bytes:
    return orjson.dumps({"response": {"candidates": [{"content": {"parts": [{"text": text}]}}]}, "traceId": "t"})


ERROR = orjson.dumps({"error": {"code": 500, "message": "boom", "status": "INTERNAL"}})


class _Reads:
    """A backend stream whose reads bring these lists of events' data."""

    def __init__(self, reads: list[list[bytes]]) -> None:
        self._reads = reads
        self.closed = False

    async def batches(self):
        for read in self._reads:
            yield list(read)

    async def aclose(self) -> None:
        self.closed = True


def _texts(batch) -> list[str]:
    return [orjson.loads(c.data)["candidates"][0]["content"]["parts"][0]["text"] for c in batch]


async def _all(stream: EventStream) -> list[list[str]]:
    out = []
    while (batch := await stream.next_batch()) is not None:
        out.append(_texts(batch))
    return out


def test_the_first_event_of_a_burst_comes_alone_and_the_rest_together() -> None:
    stream = EventStream(_Reads([[_event("a"), _event("b"), _event("c")], [_event("d"), _event("e")]]))
    assert asyncio.run(_all(stream)) == [["a"], ["b", "c"], ["d", "e"]]


def test_a_lone_first_event_and_single_reads_are_unchanged() -> None:
    stream = EventStream(_Reads([[_event("a")], [_event("b"), _event("c")]]))
    assert asyncio.run(_all(stream)) == [["a"], ["b", "c"]]


def test_a_dropped_first_event_lets_the_rest_of_its_read_come_together() -> None:
    stream = EventStream(_Reads([[b"not json", _event("b"), _event("c")]]))
    assert asyncio.run(_all(stream)) == [["b", "c"]]


def test_an_error_held_back_with_the_rest_is_raised_after_the_events_before_it() -> None:
    stream = EventStream(_Reads([[_event("a"), _event("b"), ERROR, _event("z")]]))

    async def run() -> list[list[str]]:
        got = [_texts(await stream.next_batch()), _texts(await stream.next_batch())]
        with pytest.raises(BackendError):
            await stream.next_batch()
        return got

    assert asyncio.run(run()) == [["a"], ["b"]]


def test_a_first_event_that_is_an_error_is_raised_at_once() -> None:
    stream = EventStream(_Reads([[ERROR, _event("a")]]))
    with pytest.raises(BackendError):
        asyncio.run(stream.next_batch())
