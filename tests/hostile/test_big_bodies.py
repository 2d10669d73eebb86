"""Big legal bodies (issue #10 item 5): the largest body the edge accepts, made of the tiniest
values (the shape that costs most once parsed), through Envoy. Each process of ours (edge,
upstream) grows by at most 8× the body, and the edge keeps answering /healthz while it works.

Today's failure: a 31 MB body of 1 M tiny messages grew the edge by 951 MB and the upstream by
1.02 GB, and /healthz stalled for seconds (23 s on a loaded machine).

Memory is the processes' peak RSS (VmHWM from /proc, reset through clear_refs before the
attack), compared with their RSS just before it.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable

import httpx
import orjson
import pytest

from tests.faults.rig import Rig

pytestmark = pytest.mark.timeout(600)

MIB = 1024 * 1024
LIMIT = 16 * MIB
CEILING = 8  # peak growth per process, in bodies


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for pid {pid}")


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def filling(make: Callable[[int], bytes], limit: int) -> bytes:
    """The largest body `make(n)` under `limit` (its size grows linearly with n, by pairs)."""
    small, large = len(make(1000)), len(make(3000))
    per = (large - small) / 2000
    n = int(1000 + (limit - small) / per) // 2 * 2 + 2
    body = make(n)
    while len(body) > limit:
        n -= 2
        body = make(n)
    return body


def chat_of(n: int) -> bytes:
    return orjson.dumps({"model": "gemini-2.5-flash", "messages": [
        {"role": "user" if i % 2 == 0 else "assistant", "content": "x"} for i in range(n)]})


def native_of(n: int) -> bytes:
    return orjson.dumps({"contents": [
        {"role": "user" if i % 2 == 0 else "model", "parts": [{"text": "x"}]} for i in range(n)]})


@pytest.fixture(scope="module")
def rig(rigs) -> Rig:
    return rigs(label="bigbody", envoy=True, edge_env={"MAX_BODY_BYTES": str(LIMIT)})


def attack(rig: Rig, key: str, path: str, body: bytes) -> dict:
    """Send `body`, polling /healthz meanwhile; the response, each process's growth and the
    health checks answered while the request was in flight."""
    procs = {"edge": rig.edge.popen.pid, "upstream": rig.upstream.popen.pid}
    before = {}
    for name, pid in procs.items():
        reset_peak(pid)
        before[name] = status_kib(pid, "VmRSS")
    result: dict = {"healthz": 0, "stalled": None}

    def send() -> None:
        with httpx.Client(timeout=500, trust_env=False) as c:
            result["r"] = c.post(f"{rig.public}{path}", content=body, headers={
                "Authorization": f"Bearer {key}", "x-goog-api-key": key, "Content-Type": "application/json"})

    t = threading.Thread(target=send)
    t.start()
    with httpx.Client(timeout=10, trust_env=False) as c:
        while t.is_alive():
            try:
                result["healthz"] += c.get(f"{rig.edge.url}/healthz").status_code == 200
            except httpx.TimeoutException:
                result["stalled"] = "the edge did not answer /healthz for 10 s while it handled the body"
            time.sleep(0.05)
    t.join()
    result["growth_mib"] = {n: (status_kib(p, "VmHWM") - before[n]) / 1024 for n, p in procs.items()}
    return result


@pytest.mark.parametrize("route", ["openai", "gemini"])
def test_largest_body_of_tiny_values_stays_within_8x(rig: Rig, route: str):
    key = rig.key()
    if route == "openai":
        body, path = filling(chat_of, LIMIT), "/v1/chat/completions"
    else:
        body, path = filling(native_of, LIMIT), "/v1beta/models/gemini-2.5-flash:generateContent"
    out = attack(rig, key, path, body)
    r = out["r"]
    assert r.status_code == 200, r.text[:300]
    assert "echo: x" in r.text
    body_mib = len(body) / MIB
    for name, growth in out["growth_mib"].items():
        assert growth <= CEILING * body_mib, (
            f"{name} grew by {growth:.0f} MiB for a {body_mib:.1f} MiB body ({growth / body_mib:.1f}×)")
    assert out["stalled"] is None, out["stalled"]
    assert out["healthz"] > 0, "no health check was answered while the body was handled"


def test_one_over_the_limit_is_413(rig: Rig):
    key = rig.key()
    body = filling(chat_of, LIMIT + 4096)
    assert len(body) > LIMIT
    with httpx.Client(timeout=120, trust_env=False) as c:
        r = c.post(f"{rig.public}/v1/chat/completions", content=body,
                   headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    assert r.status_code == 413, r.text[:300]
