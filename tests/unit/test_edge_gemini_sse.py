"""The Gemini-native route's SSE framing of one upstream message's events: the one-join path
for events on one line each gives exactly the bytes of framing each event alone."""
from __future__ import annotations

import pytest

from services.edge.routes.gemini import _sse_event, _sse_events

ONE_LINE = [b'{"candidates":[{"content":{"parts":[{"text":"a"}]}}]}', b'{"candidates":[]}', b'{"x":1}']


@pytest.mark.parametrize("events", [
    ONE_LINE,
    ONE_LINE[:1],
    [],
    # An event spanning lines (pretty-printed JSON) anywhere among them: each line its own data: field.
    [ONE_LINE[0], b'{\n  "a": 1\r\n}', ONE_LINE[1]],
    [b'{\n"a": 1}', *ONE_LINE],
])
def test_events_are_framed_as_each_alone(events: list[bytes]) -> None:
    assert _sse_events(events) == b"".join(_sse_event(e) for e in events)


def test_a_multi_line_event_keeps_one_data_field_per_line() -> None:
    assert _sse_events([b'{"a":1}', b'{\n"b":2}']) == b'data: {"a":1}\r\n\r\ndata: {\ndata: "b":2}\r\n\r\n'
