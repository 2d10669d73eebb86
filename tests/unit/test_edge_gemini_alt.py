"""How the Gemini-native stream route reads `alt` from the query string: the common
`?alt=sse` without parsing the query, anything else as Starlette parses it (same answers)."""
from __future__ import annotations

import pytest
from starlette.requests import Request

from services.edge.routes.gemini import _alt


def _request(query: bytes) -> Request:
    return Request({"type": "http", "method": "POST", "path": "/", "query_string": query, "headers": []})


@pytest.mark.parametrize("query, alt", [
    (b"alt=sse", "sse"),
    (b"", "json"),
    (b"alt=json", "json"),
    (b"alt=SSE", "sse"),
    (b"key=abc&alt=sse", "sse"),
    (b"alt=sse&key=abc", "sse"),
    (b"alt=%73se", "sse"),
    (b"alt=xml", "xml"),
    (b"key=abc", "json"),
    (b"alt=", ""),
])
def test_alt_is_what_the_query_says(query: bytes, alt: str) -> None:
    assert _alt(_request(query)) == alt
    # The same answer as parsing the whole query.
    assert _alt(_request(query)) == _request(query).query_params.get("alt", "json").lower()
