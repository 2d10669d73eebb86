"""The held-streams floor (phase `floors`, bench/held_floors.py) in bench/report.py and the
README table: the stack's idle RSS as measured + what the bare parts grow by per held stream."""
from __future__ import annotations

import pytest

from bench.readme import rows as readme_rows
from bench.report import floor_report, floor_sums, print_floors
from tests.unit.test_bench_floors import FLOORS, LATENCY, RPS

# Per held stream (KiB): upstream = 20 + 16, edge = 10 + 28, Envoy 56; 130 KiB in all.
KIB = {"grpc_server": 20.0, "grpc_client": 28.0, "http_server": 10.0, "http_client": 16.0, "envoy": 56.0}
WHOLE = {"grpc": 1000, "http": 1000, "envoy": 1000}
HELD_ROW = "RSS of the three processes holding {n} streams (floor: idle as measured + the parts' growth)"


def _floors(intact: dict[str, int] = WHOLE, streams: int = 1000) -> dict:
    return {**FLOORS, "held": {"streams": streams, "hold_s": 10, "intact": intact, "kib_per_stream": KIB}}


def _streams(n: int, idle: tuple[float, float, float], peak: tuple[float, float, float]) -> dict:
    names = ("upstream", "edge", "envoy")
    return {"streams": n, "hold_s": 20, "intact": n, "failures": {},
            "idle_rss_mib": dict(zip(names, idle)), "peak_rss_mib": dict(zip(names, peak))}


def test_the_parts_growth_is_grouped_as_the_processes_are_built() -> None:
    s = floor_sums(_floors())
    assert (s["held_kib_per_stream_upstream"], s["held_kib_per_stream_edge"], s["held_kib_per_stream_envoy"]) == (
        pytest.approx(36.0), pytest.approx(38.0), pytest.approx(56.0))
    assert s["held_kib_per_stream"] == pytest.approx(130.0)


@pytest.mark.parametrize("floors, streams, measured, floor, growth, parts_growth, holds, below", [
    # The stack idles at 199 MiB and grows by 135 for 1,000 streams; the parts grow by 127.
    (_floors(), _streams(1000, (66, 66, 67), (101, 109, 124)), 334, 199 + 130_000 / 1024, 135, 130_000 / 1024,
     False, True),
    # Lean idle processes: the goal holds and is above the floor.
    (_floors(), _streams(1000, (50, 50, 50), (90, 95, 135)), 320, 150 + 130_000 / 1024, 170, 130_000 / 1024,
     False, False),
    (_floors(), _streams(1000, (40, 40, 40), (80, 85, 125)), 290, 120 + 130_000 / 1024, 170, 130_000 / 1024,
     True, False),
    # The parts' growth per stream, scaled to the streams phase's own count.
    (_floors(streams=1000), _streams(500, (66, 66, 67), (90, 95, 110)), 295, 199 + 65_000 / 1024, 96,
     65_000 / 1024, True, False),
])
def test_the_held_streams_goal_is_set_against_idle_as_measured_plus_the_parts_growth(
        floors, streams, measured, floor, growth, parts_growth, holds, below) -> None:
    got = {r["goal"]: r for r in floor_report(LATENCY, RPS, streams, floors)}
    r = got[HELD_ROW.format(n=streams["streams"])]
    assert r["measured"] == pytest.approx(measured) and r["floor"] == pytest.approx(floor)
    assert r["growth_mib"] == pytest.approx(growth) and r["floor_growth_mib"] == pytest.approx(parts_growth)
    assert r["growth_times"] == pytest.approx(growth / parts_growth)
    assert (r["holds"], r["goal_below_floor"]) == (holds, below)


@pytest.mark.parametrize("floors, streams", [
    (_floors(intact={**WHOLE, "envoy": 998}), _streams(1000, (66, 66, 67), (101, 109, 124))),  # a part cut streams
    (FLOORS, _streams(1000, (66, 66, 67), (101, 109, 124))),  # a result from before the held round
    (_floors(), None),  # no streams phase in this run
])
def test_no_held_streams_floor_without_whole_streams_on_both_sides(floors, streams) -> None:
    goals = [r["goal"] for r in floor_report(LATENCY, RPS, streams, floors)]
    assert not any("holding" in g for g in goals)


def test_a_short_held_streams_goal_prints_with_growth_vs_growth(capsys) -> None:
    print_floors(_floors(), LATENCY, RPS, _streams(1000, (66, 66, 67), (101, 109, 124)))
    out = capsys.readouterr().out
    assert ("Held streams (1000 at once, 10 s each, one round; peak RSS growth, upstream = grpc.aio server + "
            "aiohttp client, edge = uvicorn + grpc.aio client): upstream 36.0, edge 38.0, envoy 56.0 KiB per stream; "
            "127 MiB for 1,000 streams") in out
    short = out[out.index("Goals SHORT"):]
    assert (f"  {HELD_ROW.format(n=1000)}: 334 MiB, floor 326 MiB (1.0× the floor), goal ≤ 300 MiB — below the "
            "floor: the parts alone cannot meet it here; grew 135 MiB over idle vs the parts' 127 (1.06×)") in short


@pytest.mark.parametrize("floors, held_row, short_row", [
    (_floors(), "upstream 36.0, edge 38.0, envoy 56.0 KiB per stream; 127 MiB for 1,000 streams",
     "334 MiB measured, floor 326 (1.0×), goal ≤ 300 (below the floor); grew 135 MiB over idle vs the parts' 127 "
     "(1.06×)"),
    (_floors(intact={**WHOLE, "grpc": 990}), "not every stream arrived whole (grpc 990/1000): no floor", None),
    (FLOORS, None, None),
])
def test_readme_rows_carry_the_held_streams_floor(floors, held_row, short_row) -> None:
    result = {"floors": floors, "latency": LATENCY, "throughput": {**RPS, "rps": 500.0},
              "streams": _streams(1000, (66, 66, 67), (101, 109, 124))}
    got = dict(readme_rows(result))
    held = [v for k, v in got.items() if k.startswith("floors: the bare parts holding 1,000 streams (10 s, one round)")]
    assert held == ([held_row] if held_row else [])
    short = got.get(f"SHORT goal against its floor: {HELD_ROW.format(n=1000)}")
    assert short == short_row
