"""The edge's channel to the upstreams: how calls spread, and what is never done to them."""
from __future__ import annotations

import json

from services.edge.upstream_client import SERVICE_CONFIG


def test_calls_spread_round_robin_over_healthy_upstreams():
    config = json.loads(SERVICE_CONFIG)
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    # The standard grpc.health.v1 service, overall status: an upstream that is draining
    # (NOT_SERVING) gets no new calls.
    assert config["healthCheckConfig"] == {"serviceName": ""}


def test_no_call_is_retried_by_policy():
    """A Generate that reached an upstream may have started at the backend: a retryPolicy (or
    hedging) would run it twice. Only gRPC's transparent retry of calls never sent remains."""
    config = json.loads(SERVICE_CONFIG)
    assert "methodConfig" not in config and "retryThrottling" not in config
    assert "retryPolicy" not in SERVICE_CONFIG and "hedgingPolicy" not in SERVICE_CONFIG
