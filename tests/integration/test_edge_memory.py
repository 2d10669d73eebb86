"""The edge's memory stays flat under thousands of requests (services/edge/__main__.py's GC
settings: a young-generation threshold of GC_YOUNG_THRESHOLD, everything built at startup
frozen).

A real `python -m services.edge` (its own stack) serves rounds of a mix of what a day brings:
unary answers and streams, bad keys, bad JSON, backend errors, clients that leave before the
answer or in the middle of a stream, OpenAI-format calls. After a warm-up round, the edge's
tracked objects (its SIGUSR1 stats line: `gc_objects`) and RSS are read; after three more
rounds they must not have grown by more than what one young generation may hold
(GROWTH_OBJECTS) and a few MiB. No timing is asserted.
"""
from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Iterator

import httpx
import orjson
import pytest

from tests import harness
from tests.simulator.control import SimControl
from tests.stack_fixtures import Stack, start_stack

pytestmark = pytest.mark.timeout(600)

MODEL = "gemini-2.5-flash"
CONCURRENCY = 16
ROUNDS = 3
RSS_GROWTH_MIB = 16
# Cyclic garbage waits for a young collection, at most services/edge/__main__.py's
# GC_YOUNG_THRESHOLD (10,000) allocations; flat measured ~0 (2,830 -> 2,762 objects, +1.3 MiB).
# A request that left one cycle of 8 objects with collections that rare would add 30,000+.
GROWTH_OBJECTS = 20_000


@pytest.fixture(scope="module")
def own_stack(simulator: harness.Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # Its own edge: the stats line loads ctypes, which other tests expect an idle edge not to have.
    s = start_stack(simulator, tmp_path_factory.mktemp("edge-memory"))
    try:
        yield s
    finally:
        s.stop()


def _stats(edge: harness.Proc) -> dict:
    """The edge's next SIGUSR1 stats line (services/edge/stats.py), read from its log."""
    before = edge.log().count("stats {")
    os.kill(edge.popen.pid, signal.SIGUSR1)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        lines = [line for line in edge.log().splitlines() if line.startswith("stats {")]
        if len(lines) > before:
            return orjson.loads(lines[-1][len("stats "):])
        time.sleep(0.1)
    raise AssertionError("the edge wrote no stats line within 60 s of SIGUSR1")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def _leave_early(port: int, request: bytes, wait_for: bytes | None) -> None:
    """Send a request and close the connection: after `wait_for` arrived, or at once."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    if wait_for is not None:
        async with asyncio.timeout(60):
            await reader.readuntil(wait_for)
    else:
        await asyncio.sleep(0.02)
    writer.close()


def _raw_post(path: str, key: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nx-goog-api-key: {key}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body


async def _round(stack: Stack, key: str, statuses: dict) -> None:
    gen = f"{stack.base}/v1beta/models/{MODEL}:generateContent"
    stream = f"{stack.base}/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
    chat = f"{stack.base}/v1/chat/completions"
    body = orjson.dumps({"contents": [{"role": "user", "parts": [{"text": "memory"}]}]})
    long_body = orjson.dumps({"contents": [{"role": "user", "parts": [{"text": " ".join(["w"] * 40)}]}]})
    chat_body = orjson.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
    chat_stream = orjson.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True})
    headers = {"x-goog-api-key": key, "content-type": "application/json"}
    port = stack.edge.port
    gen_path = f"/gemini_cli/v1beta/models/{MODEL}:generateContent"
    stream_path = f"/gemini_cli/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(timeout=60, limits=limits, trust_env=False) as client:
        gate = asyncio.Semaphore(CONCURRENCY)

        async def drain(url: str, content: bytes) -> int:
            async with client.stream("POST", url, content=content, headers=headers) as r:
                async for _ in r.aiter_raw():
                    pass
                return r.status_code

        async def one(kind: str) -> None:
            async with gate:
                if kind == "unary":
                    status = (await client.post(gen, content=body, headers=headers)).status_code
                elif kind == "stream":
                    status = await drain(stream, long_body)
                elif kind == "bad_key":
                    status = (await client.post(gen, content=body, headers={**headers, "x-goog-api-key": "nope"})
                              ).status_code
                elif kind == "bad_json":
                    status = (await client.post(gen, content=b"{bad", headers=headers)).status_code
                elif kind == "chat":
                    status = (await client.post(chat, content=chat_body, headers=headers)).status_code
                elif kind == "chat_stream":
                    status = await drain(chat, chat_stream)
                elif kind == "leave_unary":
                    await _leave_early(port, _raw_post(gen_path, key, body), None)
                    status = "left"
                else:  # leave_stream: after the first event
                    await _leave_early(port, _raw_post(stream_path, key, long_body), b"data: ")
                    status = "left"
                statuses[(kind, status)] = statuses.get((kind, status), 0) + 1

        mix = (["unary"] * 600 + ["stream"] * 150 + ["bad_key"] * 100 + ["bad_json"] * 100 + ["chat"] * 50
               + ["chat_stream"] * 50 + ["leave_unary"] * 40 + ["leave_stream"] * 40)
        await asyncio.gather(*(one(kind) for kind in mix))
        # Backend errors: every generation of this stack's account meets the fault meanwhile.
        with SimControl(stack.simulator.url) as ctl:
            fault = ctl.add_fault(account=stack.refresh_token, op="generate", kind="400", times=-1)
            try:
                for _ in range(100):
                    r = await client.post(gen, content=body, headers=headers)
                    statuses[("backend_400", r.status_code)] = statuses.get(("backend_400", r.status_code), 0) + 1
            finally:
                ctl.remove_fault(fault)


def test_memory_stays_flat_under_a_mix_of_requests(own_stack: Stack) -> None:
    key = own_stack.key()
    statuses: dict = {}
    asyncio.run(_round(own_stack, key, statuses))  # warm-up: caches, connections, allocator arenas
    before = _stats(own_stack.edge)
    rss_before = _rss_mib(own_stack.edge.popen.pid)
    for _ in range(ROUNDS):
        asyncio.run(_round(own_stack, key, statuses))
    after = _stats(own_stack.edge)
    rss_after = _rss_mib(own_stack.edge.popen.pid)

    served = sum(n for (kind, status), n in statuses.items())
    assert served >= 4 * 1230, statuses
    assert statuses[("unary", 200)] == 4 * 600, statuses
    assert statuses[("stream", 200)] == 4 * 150, statuses
    assert statuses[("bad_key", 401)] == 4 * 100, statuses
    assert statuses[("bad_json", 400)] == 4 * 100, statuses
    assert statuses[("backend_400", 400)] == 4 * 100, statuses
    assert statuses[("leave_stream", "left")] == 4 * 40, statuses
    grew = after["gc_objects"] - before["gc_objects"]
    assert grew < GROWTH_OBJECTS, (before, after)
    assert rss_after - rss_before < RSS_GROWTH_MIB, (rss_before, rss_after, before, after)
