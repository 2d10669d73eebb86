"""The upstream's SSE parser on real framing: CR/LF/CRLF, multi-line data, comments, partial reads."""
from __future__ import annotations

import pytest

from services.upstream.sse import SSEParser, iter_events


def parse_all(stream: bytes, *, split_at: list[int] | None = None) -> list[bytes]:
    parser = SSEParser()
    cuts = [0, *(split_at or []), len(stream)]
    events: list[bytes] = []
    for start, end in zip(cuts, cuts[1:]):
        events += parser.feed(stream[start:end])
    return events + parser.close()


CASES = [
    ("lf", b"data: {\"a\":1}\n\ndata: {\"b\":2}\n\n", [b'{"a":1}', b'{"b":2}']),
    ("crlf", b"data: {\"a\":1}\r\n\r\ndata: {\"b\":2}\r\n\r\n", [b'{"a":1}', b'{"b":2}']),
    ("cr only", b"data: {\"a\":1}\r\rdata: {\"b\":2}\r\r", [b'{"a":1}', b'{"b":2}']),
    ("mixed endings", b"data: 1\r\n\ndata: 2\n\r\n", [b"1", b"2"]),
    ("multi-line data joined with LF", b"data: {\"a\":\ndata: 1}\n\n", [b'{"a":\n1}']),
    ("no space after colon", b"data:{\"a\":1}\n\n", [b'{"a":1}']),
    ("value trimmed", b"data:    {\"a\":1}   \n\n", [b'{"a":1}']),
    ("comments, id, event, retry ignored",
     b": keep-alive\nid: 7\nevent: message\nretry: 100\ndata: x\n\n: another\n\n", [b"x"]),
    ("blank lines without data make no event", b"\n\n\r\n\n", []),
    ("last event without blank line flushed at close", b"data: 1\n\ndata: 2", [b"1", b"2"]),
    ("last event ending in a single newline flushed at close", b"data: 1\n", [b"1"]),
    ("unknown field ignored", b"foo: bar\ndata: 1\n\n", [b"1"]),
    ("empty data line", b"data:\n\n", [b""]),
]


@pytest.mark.parametrize("name,stream,expected", CASES, ids=[c[0] for c in CASES])
def test_framing(name: str, stream: bytes, expected: list[bytes]) -> None:
    assert parse_all(stream) == expected


@pytest.mark.parametrize("name,stream,expected", CASES, ids=[c[0] for c in CASES])
def test_every_single_split_gives_the_same_events(name: str, stream: bytes, expected: list[bytes]) -> None:
    # A read may end anywhere, including between the CR and LF of one line ending.
    for cut in range(1, len(stream)):
        assert parse_all(stream, split_at=[cut]) == expected, f"split at {cut}"


def test_byte_by_byte() -> None:
    stream = b"data: {\"response\":{\"x\":\"\xc3\xa9\"}}\r\n\r\n: c\r\ndata: [1,\r\ndata: 2]\r\n\r\n"
    assert parse_all(stream, split_at=list(range(1, len(stream)))) == [
        b'{"response":{"x":"\xc3\xa9"}}', b"[1,\n2]"]


def test_events_are_returned_as_soon_as_complete() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: 1\r\n") == []
    assert parser.feed(b"\r") == [b"1"]  # the blank line is complete at its CR
    assert parser.feed(b"\ndata: 2\r\n\r\n") == [b"2"]  # the LF of the previous CRLF is not a new line
    assert parser.close() == []


async def _aiter(chunks: list[bytes]):
    for chunk in chunks:
        yield chunk


async def test_iter_events_drops_bad_json_and_keeps_order() -> None:
    chunks = [b"data: {\"n\":1}\r\n\r\ndata: {not json}\r\n\r\n", b"data: {\"n\":", b"2}\r\n\r\n", b"data: [3]"]
    got = [event async for event in iter_events(_aiter(chunks))]
    assert got == [{"n": 1}, {"n": 2}, [3]]


def _reference(stream: bytes) -> list[bytes]:
    """The framing rules applied to the whole stream at once (no reads to stitch together)."""
    events: list[bytes] = []
    data: list[bytes] = []
    for line in stream.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n"):
        if not line:
            if data:
                events.append(b"\n".join(data))
            data = []
        elif line.startswith(b"data:"):
            value = line[5:]
            data.append((value[1:] if value.startswith(b" ") else value).strip())
    if data:
        events.append(b"\n".join(data))
    return events


_PIECES = [b"data: ", b"data:", b"{\"a\":1}", b" x ", b"\r\n", b"\n", b"\r", b"\r\n\r\n", b"\n\n", b": ping",
           b"id: 4", b"event: m", b"[1,2]", b"\xc3\xa9", b"data: {\"x\":2}\r\n\r\n", b"data: {\"x\":3}\n\n",
           b"\r\n\r\ndata: ", b"\n\ndata: "]


def test_random_streams_and_reads_match_the_reference() -> None:
    # The per-read fast path and the line parser hand over to each other mid-stream; whatever
    # the mix of line endings and wherever the reads end, the events are the reference's.
    import random

    rng = random.Random(15)
    for _ in range(3000):
        stream = b"".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 30)))
        cuts = sorted(rng.sample(range(1, len(stream)), min(len(stream) - 1, rng.randint(0, 6)))) if len(stream) > 1 else []
        assert parse_all(stream, split_at=cuts) == _reference(stream), (stream, cuts)


def test_a_long_event_in_many_reads_is_one_event() -> None:
    body = b"{\"t\":\"" + b"x" * 300_000 + b"\"}"
    stream = b"data: " + body + b"\r\n\r\ndata: 2\r\n\r\n"
    assert parse_all(stream, split_at=list(range(4096, len(stream), 4096))) == [body, b"2"]


def test_an_event_over_the_cap_is_refused_in_either_path() -> None:
    from services.upstream.sse import EventTooLarge

    for stream in (b"data: " + b"x" * 200 + b"\n\n", b"data: " + b"x" * 200 + b"\r\r"):
        with pytest.raises(EventTooLarge):
            SSEParser(100).feed(stream)


def _complete(seen: bytes) -> list[bytes]:
    """The events a stream read up to here has completed: those before its last blank line
    (a CR alone ends a line, so a blank line is complete at its CR)."""
    normalized = seen.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    cut = normalized.rfind(b"\n\n")
    return _reference(normalized[:cut + 2]) if cut >= 0 else []


def test_random_streams_never_hold_a_complete_event_back() -> None:
    # After every read, the parser has returned every event completed so far, none later.
    import random

    rng = random.Random(1515)
    for _ in range(3000):
        stream = b"".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 30)))
        cuts = sorted(set(rng.sample(range(1, len(stream) + 1), min(len(stream), rng.randint(1, 6)))) | {len(stream)})
        parser = SSEParser()
        got: list[bytes] = []
        start = 0
        for cut in cuts:
            got += parser.feed(stream[start:cut])
            start = cut
            assert got == _complete(stream[:cut]), (stream, cuts, cut)
