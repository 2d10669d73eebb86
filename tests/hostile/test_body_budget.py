"""Large bodies in flight are bounded per edge process (MAX_INFLIGHT_BODY_BYTES; issue #10 item 5).

The edge's memory limit in Kubernetes is derived from MAX_BODY_BYTES and how many such bodies
it holds at once. A key holder opens several requests through Envoy that send most of a large
body and then stall: once the budget is taken, the next large body is refused at once with a
503 in the API's own error format (Retry-After, before its body is read), while small requests
are still served; when the stalled requests go away, large bodies are accepted again.
"""
from __future__ import annotations

import socket
import time

import httpx
import orjson
import pytest

from tests.faults.rig import Rig
from tests.support.raw_http import read_head

pytestmark = pytest.mark.timeout(180)

MIB = 1024 * 1024
MAX_BODY = 4 * MIB
BUDGET = 8 * MIB
PATH = "/gemini_cli/v1/chat/completions"


@pytest.fixture(scope="module")
def rig(rigs) -> Rig:
    return rigs(label="bodybudget", envoy=True,
                edge_env={"MAX_BODY_BYTES": str(MAX_BODY), "MAX_INFLIGHT_BODY_BYTES": str(BUDGET)})


def big_body(size: int) -> bytes:
    head = b'{"model":"gemini-2.5-flash","messages":[{"role":"user","content":"'
    tail = b'"}]}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


class Stalled:
    """A request that declares `len(body)` bytes, sends all but the last KiB, and waits."""

    def __init__(self, port: int, key: str, body: bytes) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.sendall(
            f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        self.sock.sendall(body[:-1024])

    def close(self) -> None:
        self.sock.close()


def post(rig: Rig, key: str, body: bytes) -> httpx.Response:
    with httpx.Client(timeout=60, trust_env=False) as c:
        return c.post(f"{rig.public}/v1/chat/completions", content=body,
                      headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})


def refused_while_full(rig: Rig, key: str, body: bytes, deadline: float = 60.0) -> httpx.Response:
    """The edge counts a stalled body as its bytes arrive: wait until the budget is taken."""
    end = time.monotonic() + deadline
    while True:
        r = post(rig, key, body)
        if r.status_code == 503 or time.monotonic() > end:
            return r
        time.sleep(0.2)


def test_large_bodies_past_the_budget_are_refused_and_small_ones_served(rig: Rig):
    key = rig.key()
    body = big_body(MAX_BODY - 4096)
    stalled = [Stalled(rig.envoy.port, key, body) for _ in range(2)]  # 2 × ~4 MiB = the budget
    try:
        r = refused_while_full(rig, key, body)
        assert r.status_code == 503, r.text[:300]
        err = r.json()["error"]
        assert err["code"] == "server_busy" and "retry" in err["message"]
        assert r.headers.get("retry-after") == "1"
        small = post(rig, key, orjson.dumps({"model": "gemini-2.5-flash",
                                             "messages": [{"role": "user", "content": "hi"}]}))
        assert small.status_code == 200, small.text[:300]
    finally:
        for s in stalled:
            s.close()
    # The stalled requests are gone: their budget comes back.
    end = time.monotonic() + 60
    while True:
        r = post(rig, key, body)
        if r.status_code == 200 or time.monotonic() > end:
            break
        time.sleep(0.2)
    assert r.status_code == 200, r.text[:300]


def test_a_declared_length_past_the_budget_is_refused_before_its_body(rig: Rig):
    """One request alone cannot take more than the budget: with MAX_INFLIGHT_BODY_BYTES below
    MAX_BODY_BYTES it would be refused; here two stalled bodies fill it and a third request is
    refused from its headers, having sent none of its body."""
    key = rig.key()
    body = big_body(MAX_BODY - 4096)
    stalled = [Stalled(rig.envoy.port, key, body) for _ in range(2)]
    try:
        assert refused_while_full(rig, key, body).status_code == 503
        with socket.create_connection(("127.0.0.1", rig.envoy.port), timeout=30) as sock:
            sock.sendall(f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
                         f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode())
            answer = read_head(sock)
        assert answer.startswith(b"HTTP/1.1 503"), answer[:200]
    finally:
        for s in stalled:
            s.close()
