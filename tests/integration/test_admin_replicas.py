"""A credential switched off or on from the admin console (SetCredentialEnabled on whichever
upstream replica the edge reached) is switched on every replica sharing state through Redis,
in each replica's own copy of the file too, and a replica started later comes up switched off.
Without the shared switch, the other replica keeps serving with it."""
from __future__ import annotations

import json
import time
from pathlib import Path

import grpc

from gemini_cli.upstream.v1 import upstream_pb2
from tests import harness
from tests.integration.test_upstream_replicas import FAST, seats

OFF = upstream_pb2.CredentialStatus.DISABLED


def _state(stub: harness.AuthedStub, cid: str) -> int:
    listed = stub.ListModels(upstream_pb2.ListModelsRequest(), timeout=30)
    return next(c.state for c in listed.credentials if c.id == cid)


def _until(check, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not reached in {timeout}s: {what}"
        time.sleep(0.1)


def test_switch_reaches_every_replica(upstream_factory, redis_url: str, tmp_path: Path):
    dirs, _ = seats(tmp_path, 3, ["seat"])
    env = {"REDIS_URL": redis_url, **FAST}
    first, second = upstream_factory(dirs[0], env), upstream_factory(dirs[1], env)
    with grpc.insecure_channel(first.addr) as ch0, grpc.insecure_channel(second.addr) as ch1:
        one, two = harness.AuthedStub(ch0, "edge"), harness.AuthedStub(ch1, "edge")
        _until(lambda: _state(two, "seat") != 0, "the second replica loaded its member")
        off = one.SetCredentialEnabled(upstream_pb2.SetCredentialEnabledRequest(id="seat", enabled=False), timeout=30)
        assert off.state == OFF
        _until(lambda: _state(two, "seat") == OFF, "the other replica switched off")
        _until(lambda: json.loads((dirs[1] / "seat.json").read_text()).get("disabled") is True,
               "the other replica's own file records it")
        # A replica starting now reads the switch from Redis.
        third = upstream_factory(dirs[2], env)
        with grpc.insecure_channel(third.addr) as ch2:
            late = harness.AuthedStub(ch2, "edge")
            _until(lambda: _state(late, "seat") == OFF, "a later replica comes up switched off")
        # Switched on from the other replica: back everywhere.
        on = two.SetCredentialEnabled(upstream_pb2.SetCredentialEnabledRequest(id="seat", enabled=True), timeout=30)
        assert on.state == upstream_pb2.CredentialStatus.READY
        _until(lambda: _state(one, "seat") == upstream_pb2.CredentialStatus.READY, "switched on again everywhere")
        _until(lambda: "disabled" not in json.loads((dirs[0] / "seat.json").read_text()), "the flag left the file")
