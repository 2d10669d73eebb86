"""bench/held_floors.py: each bare part really holds its streams to the end, whole, and every
process it names is measured (what the README's held-streams floor is computed from)."""
from __future__ import annotations

import pytest

from bench.held_floors import PARTS, measure

MEASURED = {"grpc": {"grpc_server", "grpc_client"}, "http": {"http_server", "http_client"}, "envoy": {"envoy"}}


@pytest.mark.parametrize("part", PARTS)
def test_a_part_holds_every_stream_whole(part: str) -> None:
    got = measure(part, n=20, hold_s=2)
    assert got.pop("intact") == 20
    assert set(got) == MEASURED[part]
    assert all(isinstance(v, float) for v in got.values())
