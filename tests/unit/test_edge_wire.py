"""The edge writes GenerateRequest in wire form itself (one copy of the body): it must parse to
exactly the message protobuf would have built."""
from __future__ import annotations

import os

import pytest

from gemini_cli.upstream.v1 import upstream_pb2 as pb
from services.edge.generate_wire import generate_request


@pytest.mark.parametrize("size", [0, 2, 127, 128, 300, 16383, 16384, 70_000, 3_000_000])
@pytest.mark.parametrize("stream", [True, False])
def test_wire_request_equals_protobuf(size: int, stream: bool) -> None:
    body = os.urandom(size)
    wire = generate_request("gemini-2.5-pro", body, stream, "rid-1", "key-name")
    # A stream asks the upstream to coalesce the events that arrive together, and for its
    # headers at once (see tests/unit/test_edge_upstream_early_leave.py).
    expected = pb.GenerateRequest(model="gemini-2.5-pro", stream=stream, request_id="rid-1", caller="key-name",
                                  coalesce=stream, early_headers=stream)
    expected.body.content_type = "application/json"
    expected.body.data = body
    assert pb.GenerateRequest.FromString(wire) == expected
