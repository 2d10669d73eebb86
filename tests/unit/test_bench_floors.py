"""bench/report.py's floors: the bare parts summed along one request, set against the goals."""
from __future__ import annotations

import math

import pytest

from bench.report import annotate, floor_report, floor_sums, targets


def _part(first_p50: float, first_p99: float, c1: dict[str, float], c50: dict[str, float]) -> dict:
    return {"first_p50_ms": first_p50, "first_p99_ms": first_p99, "total_p50_ms": first_p50,
            "total_p99_ms": first_p99, "errors": 0, "cpu_ms_c1": c1, "cpu_ms_c50": c50}


FLOORS = {
    "concurrency": 50, "events": 21, "rss_mib": {"grpc_server": 40.0, "http_server": 30.0, "envoy": 70.0},
    "parts": {
        "grpc_unary": _part(0.5, 2.0, {"grpc_server": 0.3, "grpc_unary": 0.2}, {"grpc_server": 0.25, "grpc_unary": 0.15}),
        "grpc_stream_1": _part(0.6, 3.0, {"grpc_server": 0.4, "grpc_stream_1": 0.4},
                               {"grpc_server": 0.3, "grpc_stream_1": 0.3}),
        "grpc_stream_21": _part(0.7, 4.0, {"grpc_server": 1.5, "grpc_stream_21": 1.8},
                                {"grpc_server": 0.8, "grpc_stream_21": 0.9}),
        "http": _part(0.06, 0.3, {"http_server": 0.03}, {"http_server": 0.02}),
        "envoy": _part(0.3, 1.0, {"envoy": 0.2}, {"envoy": 0.07}),
        "aiohttp_unary": _part(0.45, 1.0, {"aiohttp_unary": 0.2}, {"aiohttp_unary": 0.18}),
        "aiohttp_stream": _part(0.55, 1.1, {"aiohttp_stream": 0.27}, {"aiohttp_stream": 0.25}),
    },
}


def test_floor_sums_add_the_parts_along_one_request() -> None:
    s = floor_sums(FLOORS)
    # Envoy + uvicorn + both ends of the gRPC hop + the aiohttp client.
    assert s["unary_cpu_ms_c1"] == pytest.approx(0.2 + 0.03 + 0.3 + 0.2 + 0.2)
    assert s["unary_cpu_ms_c50"] == pytest.approx(0.07 + 0.02 + 0.25 + 0.15 + 0.18)
    assert s["stream_cpu_ms_c1"] == pytest.approx(0.2 + 0.03 + 0.4 + 0.4 + 0.27)
    assert s["stream_each_cpu_ms_c50"] == pytest.approx(0.07 + 0.02 + 0.8 + 0.9 + 0.25)
    # Envoy in front of an HTTP app, then one gRPC hop to the first message (a run with no
    # "backend" part: the backend call's client share is not known, and left out).
    assert s["added_ttfc_p50_ms"] == pytest.approx(0.3 + 0.6)
    assert s["added_ttfc_p99_ms"] == pytest.approx(3.0)  # the larger p99: a sum of tails is no floor
    assert s["idle_rss_mib"] == pytest.approx(140.0)


def test_the_upstreams_backend_call_is_a_hop_of_its_own() -> None:
    # The client still makes its call (to Envoy); the upstream's aiohttp call to the backend
    # comes on top, less what of it is the backend's own (a bare client to the same backend).
    parts = {**FLOORS["parts"], "backend": _part(0.2, 0.5, {}, {})}
    s = floor_sums({**FLOORS, "parts": parts})
    assert s["added_ttfc_p50_ms"] == pytest.approx(0.3 + 0.6 + (0.55 - 0.2))
    # CPU sums are unchanged: the backend's CPU is nobody's of ours.
    assert s["stream_cpu_ms_c1"] == pytest.approx(floor_sums(FLOORS)["stream_cpu_ms_c1"])
    # A bare client slower than aiohttp (noise) adds nothing rather than taking off.
    parts["backend"] = _part(0.7, 1.0, {}, {})
    assert floor_sums({**FLOORS, "parts": parts})["added_ttfc_p50_ms"] == pytest.approx(0.9)


def test_the_p99_floor_is_never_below_the_p50_floor() -> None:
    # Quiet tails: each part's p99 below the sum of the p50s (a run of 2026-12-01 printed
    # "p50 0.84 ms, p99 0.77 ms"). The p99 of the sum is at least its p50.
    parts = {**FLOORS["parts"], "envoy": _part(0.5, 0.55, {"envoy": 0.2}, {"envoy": 0.07}),
             "grpc_stream_1": _part(0.6, 0.65, {"grpc_server": 0.4, "grpc_stream_1": 0.4},
                                    {"grpc_server": 0.3, "grpc_stream_1": 0.3})}
    s = floor_sums({**FLOORS, "parts": parts})
    assert s["added_ttfc_p50_ms"] == pytest.approx(1.1)
    assert s["added_ttfc_p99_ms"] == pytest.approx(1.1)


def _row(layer: str, conc: int, ttfc_p50: float, ttfc_p99: float, cpu: dict[str, float]) -> dict:
    return {"layer": layer, "events": 21, "delay_ms": 0, "concurrency": conc, "requests": 100, "errors": 0,
            "ttfc_p50_ms": ttfc_p50, "ttfc_p99_ms": ttfc_p99, "total_p50_ms": ttfc_p50, "total_p99_ms": ttfc_p99,
            "cpu_ms_per_request": cpu}


LATENCY = [
    _row("a_simulator", 1, 1.0, 2.0, {}),
    _row("d_envoy_full", 1, 3.5, 4.0, {"upstream": 1.0, "edge": 1.2, "envoy": 0.5}),
    _row("a_simulator", 50, 1.0, 2.0, {}),
    _row("d_envoy_full", 50, 9.0, 20.0, {"upstream": 0.9, "edge": 1.0, "envoy": 0.4}),
]
RPS = {"concurrency": 64, "requests": 1000, "gateway_cpu_s": 2.0, "errors": 0}
STREAMS = {"streams": 1000, "intact": 1000, "idle_rss_mib": {"upstream": 90.0, "edge": 95.0, "envoy": 65.0},
           "peak_rss_mib": {"upstream": 130.0, "edge": 150.0, "envoy": 120.0}}


def test_floor_report_sets_each_goal_against_its_floor() -> None:
    rows = {r["goal"]: r for r in floor_report(LATENCY, RPS, STREAMS, FLOORS)}
    c50 = rows["CPU per 21-event stream, concurrency 50"]
    assert c50["measured"] == pytest.approx(2.3) and c50["floor"] == pytest.approx(0.94)
    assert c50["holds"] and not c50["goal_below_floor"]
    assert c50["times_floor"] == pytest.approx(2.3 / 0.94)
    p50 = rows["added time to first chunk, p50, concurrency 1"]
    assert p50["measured"] == pytest.approx(2.5) and p50["floor"] == pytest.approx(0.9)
    assert not p50["holds"] and not p50["goal_below_floor"]
    unary = next(r for name, r in rows.items() if name.startswith("non-streaming"))
    # 2 ms per request measured; the parts alone need 0.67 ms, under the 0.7 ms goal.
    assert unary["measured"] == pytest.approx(2.0) and unary["floor"] == pytest.approx(0.67)
    assert not unary["holds"] and not unary["goal_below_floor"]
    rss = rows["idle RSS of the three processes"]
    assert rss["measured"] == pytest.approx(250.0) and rss["floor"] == pytest.approx(140.0) and not rss["holds"]


def test_a_goal_below_the_floor_is_named() -> None:
    heavy = {**FLOORS, "parts": {**FLOORS["parts"], "grpc_unary": _part(
        0.5, 2.0, {"grpc_server": 0.3, "grpc_unary": 0.2}, {"grpc_server": 0.4, "grpc_unary": 0.3})}}
    unary = next(r for r in floor_report(LATENCY, RPS, STREAMS, heavy) if r["goal"].startswith("non-streaming"))
    assert unary["floor"] == pytest.approx(0.97) and unary["goal_below_floor"]


def test_every_cpu_and_latency_goal_has_a_floor_and_agrees_with_its_verdict() -> None:
    verdicts = targets(LATENCY, RPS, STREAMS)
    rows = floor_report(LATENCY, RPS, STREAMS, FLOORS)
    annotate(LATENCY)
    # Every goal but the 1,000 streams' RSS and losses has a floor, judged as targets() judges it.
    judged = [name for name in verdicts if "streams" not in name]
    assert len(rows) == len(judged)
    assert [r["holds"] for r in rows] == [verdicts[name][0] for name in judged]
    assert all(not math.isnan(r["times_floor"]) for r in rows)


def test_no_run_figures_no_rows() -> None:
    assert floor_report([], None, None, FLOORS) == []


def test_non_streaming_is_held_against_the_floor_at_the_stacks_own_rate_when_measured() -> None:
    paced = {name: {**part, "cpu_ms_paced": {proc: v * 2 for proc, v in part["cpu_ms_c50"].items()}}
             for name, part in FLOORS["parts"].items()}
    floors = {**FLOORS, "parts": paced, "paced_rps": 566.0, "paced_concurrency": 64}
    s = floor_sums(floors)
    assert s["unary_cpu_ms_paced"] == pytest.approx(2 * (0.07 + 0.02 + 0.25 + 0.15 + 0.18))
    unary = next(r for r in floor_report(LATENCY, RPS, STREAMS, floors) if r["goal"].startswith("non-streaming"))
    assert unary["floor"] == pytest.approx(1.34) and "566 req/s" in unary["goal"]
    # Without the paced run (an older result file), the saturated floor stands.
    assert "unary_cpu_ms_paced" not in floor_sums(FLOORS)
