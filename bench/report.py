"""What `make bench` prints, and the goals of issue #15 judged on one run's figures."""
from __future__ import annotations

from bench.held_floors import PROCESSES as HELD_PROCESSES, per_process
from bench.media import print_rows as print_media_rows

GATEWAY = ("upstream", "edge", "envoy")
LAYERS = ("a_simulator", "b_upstream_grpc", "c_edge", "d_envoy_full")
# The layer each one adds to (the time it adds is its figure minus that one's).
BELOW = {"b_upstream_grpc": "a_simulator", "c_edge": "b_upstream_grpc", "d_envoy_full": "c_edge"}

# Issue #15's goals.
STREAM_CPU_C50_MS = 2.5
STREAM_CPU_C1_MS = 4.0
ADDED_TTFC_P50_MS = 1.5
ADDED_TTFC_P99_MS = 5.0
UNARY_CPU_MS = 0.7
IDLE_RSS_MIB = 200.0
STREAMS_RSS_MIB = 300.0


def gateway_cpu(row: dict) -> float:
    """CPU of the three gateway processes per streamed request (ms)."""
    cpu = row.get("cpu_ms_per_request", {})
    return sum(cpu.get(n, 0.0) for n in GATEWAY)


def annotate(latency: list[dict]) -> None:
    """Adds to each row the time to first chunk it adds over the backend alone and over the
    layer below it (p50 and p99), and CPU per event."""
    index = {(r["layer"], r["concurrency"], r.get("events"), r.get("delay_ms", 0), r.get("coalesce", True)): r
             for r in latency}
    for r in latency:
        key = (r["concurrency"], r.get("events"), r.get("delay_ms", 0), r.get("coalesce", True))
        base = index.get(("a_simulator", *key))
        below = index.get((BELOW.get(r["layer"], ""), *key))
        for q in ("p50", "p99"):
            r[f"added_ttfc_{q}_ms"] = r[f"ttfc_{q}_ms"] - base[f"ttfc_{q}_ms"] if base else float("nan")
            r[f"layer_ttfc_{q}_ms"] = r[f"ttfc_{q}_ms"] - below[f"ttfc_{q}_ms"] if below else r[f"added_ttfc_{q}_ms"]
        r["ratio_to_direct"] = r["ttfc_p50_ms"] / base["ttfc_p50_ms"] if base and base["ttfc_p50_ms"] else float("nan")
        events = r.get("events") or 1
        r["cpu_ms_per_event"] = {n: round(v / events, 4) for n, v in r.get("cpu_ms_per_request", {}).items()}
        r["gateway_cpu_ms"] = gateway_cpu(r)


def print_latency(latency: list[dict]) -> None:
    if not latency:
        return
    annotate(latency)
    print("\nStreamed answers: time to first chunk (TTFC) and total, ms; +layer = TTFC this layer adds over the one "
          "below it (simulator → upstream gRPC → edge → Envoy); gateway CPU ms per stream and µs per event")
    print(f"{'layer':<16}{'ev':>4}{'gap':>4}{'conc':>5}{'ok':>6}{'err':>4}{'ttfc p50':>9}{'p99':>8}{'tot p50':>9}"
          f"{'+layer p50':>11}{'p99':>8}{'+all p50':>9}{'p99':>8}{'cpu up/edge/envoy ms':>22}{'sum':>7}"
          f"{'µs/event':>9}")
    for r in latency:
        cpu = r.get("cpu_ms_per_request", {})
        cpu_text = "/".join(f"{cpu.get(n, float('nan')):.2f}" for n in GATEWAY)
        per_event = r["gateway_cpu_ms"] * 1000 / (r.get("events") or 1)
        name = r["layer"] if r.get("coalesce", True) else r["layer"][:13] + " nc"
        print(f"{name:<16}{r.get('events', 0):>4}{r.get('delay_ms', 0):>4g}{r['concurrency']:>5}"
              f"{r['requests'] - r['errors']:>6}{r['errors']:>4}{r['ttfc_p50_ms']:>9.2f}{r['ttfc_p99_ms']:>8.2f}"
              f"{r['total_p50_ms']:>9.2f}{r['layer_ttfc_p50_ms']:>11.2f}{r['layer_ttfc_p99_ms']:>8.2f}"
              f"{r['added_ttfc_p50_ms']:>9.2f}{r['added_ttfc_p99_ms']:>8.2f}{cpu_text:>22}{r['gateway_cpu_ms']:>7.2f}"
              f"{per_event:>9.1f}")


def print_table(latency: list[dict], rps: dict | None, streams: dict | None, image: dict | None,
                media: dict | None = None) -> None:
    print_latency(latency)
    if rps:
        cpu = rps.get("cpu_ms_per_request", {})
        print(f"\nNon-streaming through Envoy→edge→upstream at concurrency {rps['concurrency']}: "
              f"{rps['rps']:.0f} req/s, {rps['requests_per_cpu_s']:.0f} req per gateway CPU-second, CPU ms per "
              "request " + ", ".join(f"{n} {cpu.get(n, float('nan')):.3f}" for n in GATEWAY)
              + f" ({rps['errors']} errors)")
    if streams:
        idle = streams.get("idle_rss_mib", {})
        sized = f" ({streams['request_kib']} KiB requests)" if streams.get("request_kib") else ""
        print(f"\n{streams['streams']} concurrent streams held {streams['hold_s']} s{sized}: {streams['intact']} intact, "
              f"failures {streams['failures'] or 'none'}; RSS MiB idle / peak "
              + ", ".join(f"{n} {idle.get(n, float('nan')):.0f}/{v:.0f}" for n, v in streams["peak_rss_mib"].items()))
        if streams.get("hold_rss_mib"):  # runs before it was measured have none
            print("  halfway through the hold (peak above it: a transient of the opening burst) "
                  + ", ".join(f"{n} {v:.0f}" for n, v in streams["hold_rss_mib"].items()))
    if image:
        print(f"\n{image['image_mib']} MiB image inline via /v1/chat/completions: status {image['status']}, "
              f"intact {image['intact']}, {image['seconds']:.2f} s; whole stack grew "
              f"{image['stack_growth_mib']:.0f} MiB; peak RSS MiB "
              + ", ".join(f"{n} {v:.0f}" for n, v in image["peak_rss_mib"].items()))
    if media:
        print_media_rows(media)
    verdicts = targets(latency, rps, streams)
    if verdicts:
        print("\nGoals (issue #15)")
        for name, (held, detail) in verdicts.items():
            print(f"  {'HOLDS' if held else 'SHORT':<7}{name}: {detail}")


def print_bodies(tiny: dict | None, schema: dict | None) -> None:
    if tiny:
        print(f"\nLargest accepted body of tiny messages ({tiny['messages']} messages, {tiny['body_mib']:.1f} MiB) "
              f"via /v1/chat/completions: status {tiny['status']}, {tiny['seconds']:.1f} s; peak growth MiB "
              + ", ".join(f"{n} {v:.0f} ({v / tiny['body_mib']:.1f}×)" for n, v in tiny["growth_mib"].items())
              + f"; whole stack {tiny['stack_growth_mib']:.0f} MiB ({tiny['stack_growth_mib'] / tiny['body_mib']:.1f}× the body)")
    if schema:
        for label in ("accepted", "refused"):
            w = schema[label]
            print(f"{'Worst schema accepted' if label == 'accepted' else 'First schema refused'}: $ref fan-out depth "
                  f"{w['depth']} ({w['schema_bytes']} bytes), status {w['statuses']}, edge CPU {w['edge_cpu_ms']:.1f} ms "
                  "per request")


def full_row(latency: list[dict], concurrency: int, events: int | None = None) -> dict | None:
    """The whole-stack row (Envoy → edge → upstream) at a concurrency, for the shortest
    realistic answer unless `events` says which."""
    rows = [r for r in latency if r["layer"] == "d_envoy_full" and r["concurrency"] == concurrency
            and not r.get("delay_ms") and r.get("coalesce", True) and (events is None or r.get("events") == events)]
    return min(rows, key=lambda r: r.get("events", 0)) if rows else None


def targets(latency: list[dict], rps: dict | None, streams: dict | None) -> dict[str, tuple[bool, str]]:
    """Issue #15's goals, judged on this run's figures."""
    annotate(latency)
    out: dict[str, tuple[bool, str]] = {}
    for conc, budget in ((50, STREAM_CPU_C50_MS), (1, STREAM_CPU_C1_MS)):
        row = full_row(latency, conc)
        if row is not None:
            cpu = row["gateway_cpu_ms"]
            out[f"CPU per {row.get('events')}-event stream, all three processes, concurrency {conc}"] = (
                cpu <= budget, f"{cpu:.2f} ms (goal ≤ {budget:g} ms)")
    row = full_row(latency, 1)
    if row is not None:
        for q, budget in (("p50", ADDED_TTFC_P50_MS), ("p99", ADDED_TTFC_P99_MS)):
            added = row[f"added_ttfc_{q}_ms"]
            out[f"added time to first chunk vs the backend alone, {q}, concurrency 1"] = (
                added <= budget, f"{added:.2f} ms (goal ≤ {budget:g} ms)")
    if rps and rps.get("requests"):
        cpu = rps["gateway_cpu_s"] * 1000 / rps["requests"]
        out["non-streaming gateway CPU per request"] = (cpu <= UNARY_CPU_MS, f"{cpu:.2f} ms (goal ≤ {UNARY_CPU_MS:g} ms)")
    if streams:
        idle = sum(streams.get("idle_rss_mib", {}).get(n, 0.0) for n in GATEWAY)
        if idle:
            out["idle RSS of the three processes"] = (idle <= IDLE_RSS_MIB, f"{idle:.0f} MiB (goal ≤ {IDLE_RSS_MIB:g} MiB)")
        held = sum(streams["peak_rss_mib"].get(n, 0.0) for n in GATEWAY)
        out[f"RSS of the three processes holding {streams['streams']} streams"] = (
            held <= STREAMS_RSS_MIB, f"{held:.0f} MiB, sum of peaks (goal ≤ {STREAMS_RSS_MIB:g} MiB)")
        lost = streams["streams"] - streams["intact"]
        out[f"{streams['streams']} streams, none lost"] = (lost == 0, f"{lost} lost")
    return out


# --- floors: what the bare parts allow (phase `floors`, bench/floors.py) --------------------

# The parts one request crosses in our topology, and whose CPU each part's figure holds:
# Envoy, the edge's HTTP server, the gRPC hop (both ends) and the upstream's aiohttp client.
FLOOR_UNARY = ("envoy", "http", "grpc_unary", "aiohttp_unary")
FLOOR_STREAM = ("envoy", "http", "grpc_stream_1", "aiohttp_stream")


def floor_sums(floors: dict) -> dict[str, float]:
    """The floors the bare parts impose on one request through Envoy → edge → upstream → backend:
    CPU as the sum of every part's processes, at concurrency 1 and at the phase's concurrency
    (a stream with its events in one gRPC message, as coalesced, and one message per event);
    the time to first chunk it adds over the backend alone as Envoy-in-front-of-an-HTTP-app
    plus one gRPC hop plus the aiohttp client's share of the backend call (p99: the larger of
    the first two); idle
    RSS as the bare server processes' (a lower bound: ours hold more code)."""
    parts, conc, events = floors["parts"], floors["concurrency"], floors["events"]

    def cpu(names: tuple[str, ...], key: str) -> float:
        return sum(sum(parts[n][key].values()) for n in names)

    each = tuple(f"grpc_stream_{events}" if n == "grpc_stream_1" else n for n in FLOOR_STREAM)
    out: dict[str, float] = {}
    for c in (1, conc):
        key = f"cpu_ms_c{c}"
        out[f"unary_cpu_ms_c{c}"] = cpu(FLOOR_UNARY, key)
        out[f"stream_cpu_ms_c{c}"] = cpu(FLOOR_STREAM, key)
        out[f"stream_each_cpu_ms_c{c}"] = cpu(each, key)
    if all("cpu_ms_paced" in parts[n] for n in FLOOR_UNARY):
        out["unary_cpu_ms_paced"] = cpu(FLOOR_UNARY, "cpu_ms_paced")
    hops = (parts["envoy"], parts["grpc_stream_1"])
    # The upstream's own HTTP call to the backend is one more hop: the client still makes its
    # call (to Envoy instead of the backend), so that call replaces nothing. What it adds is the
    # aiohttp client's share of its first byte: aiohttp to the backend less a bare keep-alive
    # client to the same backend ("backend"; runs before 2026-12-01 have none: left out then).
    backend = parts.get("backend")
    client_hop = max(0.0, parts["aiohttp_stream"]["first_p50_ms"] - backend["first_p50_ms"]) if backend else 0.0
    out["added_ttfc_p50_ms"] = sum(p["first_p50_ms"] for p in hops) + client_hop
    # A sum of p99s is no floor (the slow tails rarely meet); the p99 of a sum of delays is at
    # least the largest of their p99s, and no less than the p50 floor.
    out["added_ttfc_p99_ms"] = max(out["added_ttfc_p50_ms"], *(p["first_p99_ms"] for p in hops))
    out["idle_rss_mib"] = sum(floors.get("rss_mib", {}).values())
    held = floors.get("held")
    # Growth per held stream (bench/held_floors.py), only when every part carried every stream
    # whole: a part that dropped or cut streams grew less than holding them costs.
    if held and all(n == held["streams"] for n in held["intact"].values()):
        grouped = per_process(held["kib_per_stream"])
        out.update({f"held_kib_per_stream_{proc}": kib for proc, kib in grouped.items()})
        out["held_kib_per_stream"] = sum(grouped.values())
    return out


def held_text(floors: dict) -> str | None:
    """The held-streams floor's figures as one line (what make bench prints and the README shows)."""
    held = floors.get("held")
    if not held:
        return None
    n = held["streams"]
    lost = {part: whole for part, whole in held["intact"].items() if whole != n}
    if lost:
        return ("not every stream arrived whole (" + ", ".join(f"{p} {w}/{n}" for p, w in lost.items())
                + "): no floor")
    s = floor_sums(floors)
    return (", ".join(f"{proc} {s[f'held_kib_per_stream_{proc}']:.1f}" for proc in HELD_PROCESSES)
            + f" KiB per stream; {s['held_kib_per_stream'] * n / 1024:.0f} MiB for {n:,} streams")


def growth_text(row: dict) -> str:
    """For the held-streams row: the stack's growth over its idle RSS against the parts' own."""
    if "growth_mib" not in row:
        return ""
    return (f"; grew {row['growth_mib']:.0f} MiB over idle vs the parts' {row['floor_growth_mib']:.0f} "
            f"({row['growth_times']:.2f}×)")


def floor_report(latency: list[dict], rps: dict | None, streams: dict | None,
                 floors: dict) -> list[dict]:
    """Each goal of issue #15 that has a floor: the measured figure, the floor the parts impose,
    and the goal (goal below floor: the parts alone cannot meet it on this machine)."""
    annotate(latency)
    sums, conc = floor_sums(floors), floors["concurrency"]
    rows: list[dict] = []

    def add(goal: str, measured: float, floor: float, budget: float, unit: str, **more: float) -> None:
        rows.append({"goal": goal, "measured": measured, "floor": floor, "budget": budget, "unit": unit,
                     "holds": measured <= budget, "goal_below_floor": budget < floor,
                     "digits": 0 if unit == "MiB" else 2,
                     "times_floor": measured / floor if floor else float("nan"), **more})

    for c, budget in ((50, STREAM_CPU_C50_MS), (1, STREAM_CPU_C1_MS)):
        row = full_row(latency, c)
        floor = sums.get(f"stream_cpu_ms_c{c}")
        if row is not None and floor is not None:
            add(f"CPU per {row.get('events')}-event stream, concurrency {c}", row["gateway_cpu_ms"], floor, budget, "ms")
    row = full_row(latency, 1)
    if row is not None:
        for q, budget in (("p50", ADDED_TTFC_P50_MS), ("p99", ADDED_TTFC_P99_MS)):
            add(f"added time to first chunk, {q}, concurrency 1", row[f"added_ttfc_{q}_ms"],
                sums[f"added_ttfc_{q}_ms"], budget, "ms")
    if rps and rps.get("requests"):
        if "unary_cpu_ms_paced" in sums:
            where, floor = f"floor at the same {floors['paced_rps']:.0f} req/s", sums["unary_cpu_ms_paced"]
        else:
            where, floor = f"floor at {conc}", sums[f"unary_cpu_ms_c{conc}"]
        add(f"non-streaming gateway CPU per request (concurrency {rps['concurrency']}; {where})",
            rps["gateway_cpu_s"] * 1000 / rps["requests"], floor, UNARY_CPU_MS, "ms")
    if streams and streams.get("idle_rss_mib") and sums["idle_rss_mib"]:
        add("idle RSS of the three processes", sum(streams["idle_rss_mib"].get(n, 0.0) for n in GATEWAY),
            sums["idle_rss_mib"], IDLE_RSS_MIB, "MiB")
    if streams and streams.get("idle_rss_mib") and "held_kib_per_stream" in sums:
        # The stack's own idle processes carry our code, which the bare parts lack: the floor
        # starts from them as measured and adds what the parts grow by for as many streams.
        idle = sum(streams["idle_rss_mib"].get(n, 0.0) for n in GATEWAY)
        peak = sum(streams["peak_rss_mib"].get(n, 0.0) for n in GATEWAY)
        parts_growth = sums["held_kib_per_stream"] * streams["streams"] / 1024
        add(f"RSS of the three processes holding {streams['streams']} streams (floor: idle as measured + the "
            "parts' growth)", peak, idle + parts_growth, STREAMS_RSS_MIB, "MiB",
            growth_mib=peak - idle, floor_growth_mib=parts_growth,
            growth_times=(peak - idle) / parts_growth if parts_growth else float("nan"))
    return rows


def print_floors(floors: dict | None, latency: list[dict], rps: dict | None, streams: dict | None) -> None:
    if not floors:
        return
    conc = floors["concurrency"]
    print(f"\nFloors: the bare parts alone (no gateway logic), each driven from its own client process; "
          f"CPU ms per request at c=1 / c={conc}, latency ms at c=1")
    print(f"{'part':<16}{'first p50':>10}{'p99':>8}{'total p50':>10}{'err':>5}  CPU (process: c=1 / c={conc})")
    for name, p in floors["parts"].items():
        cpu = ", ".join(f"{proc} {v:.3f} / {p[f'cpu_ms_c{conc}'][proc]:.3f}" for proc, v in p["cpu_ms_c1"].items()) or "-"
        print(f"{name:<16}{p['first_p50_ms']:>10.3f}{p['first_p99_ms']:>8.2f}{p['total_p50_ms']:>10.3f}"
              f"{p['errors']:>5}  {cpu}")
    s = floor_sums(floors)
    print(f"Sum along one request (Envoy + uvicorn + gRPC both ends + aiohttp): non-streaming CPU "
          f"{s['unary_cpu_ms_c1']:.2f} / {s[f'unary_cpu_ms_c{conc}']:.2f} ms"
          + (f" ({s['unary_cpu_ms_paced']:.2f} at the stack's {floors['paced_rps']:.0f} req/s)"
             if "unary_cpu_ms_paced" in s else "") + f"; {floors['events']}-event stream CPU "
          f"{s['stream_cpu_ms_c1']:.2f} / {s[f'stream_cpu_ms_c{conc}']:.2f} ms coalesced, "
          f"{s['stream_each_cpu_ms_c1']:.2f} / {s[f'stream_each_cpu_ms_c{conc}']:.2f} ms one message per event; "
          f"added time to first chunk p50 {s['added_ttfc_p50_ms']:.2f}, p99 {s['added_ttfc_p99_ms']:.2f} ms; "
          f"idle RSS of the bare servers {s['idle_rss_mib']:.0f} MiB")
    if held := floors.get("held"):
        print(f"Held streams ({held['streams']} at once, {held['hold_s']} s each, one round; peak RSS growth, "
              f"upstream = grpc.aio server + aiohttp client, edge = uvicorn + grpc.aio client): {held_text(floors)}")
    rows = floor_report(latency, rps, streams, floors)
    short = [r for r in rows if not r["holds"]]
    if short:
        print("Goals SHORT, measured vs the floor the parts impose:")
    for r in short:
        print(f"  {r['goal']}: {r['measured']:.{r['digits']}f} {r['unit']}, floor {r['floor']:.{r['digits']}f} {r['unit']} "
              f"({r['times_floor']:.1f}× the floor), goal ≤ {r['budget']:g} {r['unit']}"
              + (" — below the floor: the parts alone cannot meet it here" if r["goal_below_floor"] else "")
              + growth_text(r))
