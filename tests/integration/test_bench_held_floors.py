"""bench/held_floors.py, as phase `floors` of `make bench` runs it (held_round): each bare part
really holds its streams to the end, whole, and every process it names is measured (what the
held-streams floor is computed from)."""
from __future__ import annotations

import pytest

from bench.held_floors import PARTS, PROCESSES, held_round

MEASURED = {"grpc": {"grpc_server", "grpc_client"}, "http": {"http_server", "http_client"}, "envoy": {"envoy"}}


def test_the_gateways_processes_are_built_of_every_measured_process_once() -> None:
    built = [p for parts in PROCESSES.values() for p in parts]
    assert sorted(built) == sorted(set().union(*MEASURED.values()))


@pytest.mark.parametrize("part", PARTS)
def test_a_part_holds_every_stream_whole(part: str) -> None:
    got = held_round(20, 2, parts=(part,))
    assert got["intact"] == {part: 20}
    assert set(got["kib_per_stream"]) == MEASURED[part]
    assert all(isinstance(v, float) for v in got["kib_per_stream"].values())
