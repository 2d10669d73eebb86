"""The real upstream process against a misbehaving backend (a raw-socket HTTP/1.1 server in this
test process): what the backend HTTP client must never do. Each of these passed through the
old hand-written client: it re-sent a POST when a kept-alive connection dropped, took
`100 Continue` for the answer, and read and inflated answers without any bound."""
from __future__ import annotations

import asyncio
import threading
import zlib
from pathlib import Path
from typing import Callable

import grpc
import orjson
import pytest
from google.api import httpbody_pb2

from gemini_cli.upstream.v1 import upstream_pb2
from tests import harness
from tests.faults.rig import Rig

pytestmark = pytest.mark.timeout(120)

MODEL = "gemini-2.5-flash"
CAP = 1 << 20
ANSWER = orjson.dumps({"response": {"candidates": [{"content": {"role": "model", "parts": [{"text": "ok"}]},
                                                    "finishReason": "STOP"}]}, "traceId": "fake"})


def sized(body: bytes, status: str = "200 OK", extra: bytes = b"") -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nContent-Type: application/json\r\n".encode()
            + extra + b"\r\n" + body)


def sse(*events: bytes) -> bytes:
    body = b"".join(b"data: " + e + b"\r\n\r\n" for e in events)
    return (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: " + str(len(body)).encode()
            + b"\r\n\r\n" + body)


class FakeBackend:
    """Answers each backend request with `script(op, index) -> list[bytes | float | None]` (op:
    the RPC name, e.g. "generateContent"; index: requests this connection served before; a
    float pauses that long; None closes the connection). Runs its own event loop in a thread; records (op, index)."""

    def __init__(self) -> None:
        self.script: Callable[[str, int], list[bytes | float | None]] = lambda op, index: [sized(ANSWER)]
        self.requests: list[tuple[str, int]] = []
        self._writers: list[asyncio.StreamWriter] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    def __enter__(self) -> "FakeBackend":
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _shutdown(self) -> None:
        self._server.close()
        for writer in self._writers:
            writer.close()  # the handlers see the end of their connection and return
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ops(self, op: str) -> list[tuple[str, int]]:
        return [r for r in self.requests if r[0] == op]

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = 0
        self._writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(l.split(b":", 1)[1]) for l in head.split(b"\r\n")
                               if l.lower().startswith(b"content-length:")), 0)
                await reader.readexactly(length)
                path = head.split(b" ", 2)[1].decode()
                op = path.rsplit(":", 1)[-1].split("?", 1)[0]
                self.requests.append((op, index))
                for piece in self.script(op, index):
                    if piece is None:
                        writer.close()
                        return
                    if isinstance(piece, float):
                        await asyncio.sleep(piece)
                        continue
                    writer.write(piece)
                    await writer.drain()
                index += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
def backend():
    with FakeBackend() as fake:
        yield fake


def start(rigs, backend: FakeBackend, label: str, credentials: int = 1) -> Rig:
    # GOOGLE_CLOUD_PROJECT: no project discovery, so the backend only sees the calls under test;
    # tokens come from the session simulator.
    return rigs(label=label, credentials=credentials, edge=False,
                upstream_env={"CODE_ASSIST_ENDPOINT": backend.url, "GOOGLE_CLOUD_PROJECT": "fake-project",
                              "BACKEND_MAX_RESPONSE_BYTES": str(CAP), "MAX_ATTEMPTS": "3"})


def generate(rig: Rig, *, stream: bool) -> list[upstream_pb2.GenerateResponse]:
    assert rig.upstream is not None
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    req = upstream_pb2.GenerateRequest(model=MODEL, stream=stream, caller="faults",
                                       body=httpbody_pb2.HttpBody(content_type="application/json",
                                                                  data=orjson.dumps(body)))
    with grpc.insecure_channel(rig.upstream.addr) as ch:
        return list(harness.AuthedStub(ch).Generate(req, timeout=30))


def text(msgs: list[upstream_pb2.GenerateResponse]) -> str:
    return "".join(p.get("text", "") for m in msgs for c in orjson.loads(m.chunk.data).get("candidates", [])
                   for p in c.get("content", {}).get("parts", []))


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_a_post_is_sent_once_when_the_backend_drops_a_kept_alive_connection(rigs, backend, stream):
    """The backend reads the second call's POST on the kept-alive connection, then closes it
    without a word. Re-sending it could run (and bill) the generation twice: the backend must
    see it once and the caller gets UNAVAILABLE."""
    op = "streamGenerateContent" if stream else "generateContent"
    calls = []

    def script(name: str, index: int) -> list[bytes | float | None]:
        if name != op:
            return [sized(b"{}")]  # e.g. the pool's quota poll
        calls.append(index)
        if len(calls) > 1 and index > 0:
            return [None]
        return [sse(ANSWER)] if stream else [sized(ANSWER)]

    backend.script = script
    rig = start(rigs, backend, f"drop-{op}")
    assert text(generate(rig, stream=stream)) == "ok"
    with pytest.raises(grpc.RpcError) as err:
        generate(rig, stream=stream)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "127.0.0.1" not in (err.value.details() or "")
    sent = backend.ops(op)
    assert len(sent) == 2 and sent[1][1] > 0  # the second went on a reused connection, and only once


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_100_continue_is_not_taken_for_the_answer(rigs, backend, stream):
    def script(name: str, index: int) -> list[bytes | float | None]:
        if name not in ("generateContent", "streamGenerateContent"):
            return [sized(b"{}")]
        # The pause keeps the interim answer in a read of its own, as over a real network.
        return [b"HTTP/1.1 100 Continue\r\n\r\n", 0.3, sse(ANSWER) if stream else sized(ANSWER)]

    backend.script = script
    rig = start(rigs, backend, "continue")
    assert text(generate(rig, stream=stream)) == "ok"
    assert text(generate(rig, stream=stream)) == "ok"  # and the connection stays usable


def gzip_bomb(size: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1 << 20)
    return b"".join(packer.compress(block) for _ in range(size >> 20)) + packer.flush()


def test_a_gzip_bomb_is_refused_with_bounded_memory_and_not_retried(rigs, backend):
    bomb = gzip_bomb(512 << 20)  # 512 MiB of zeros in about half a MiB
    backend.script = lambda name, index: ([sized(bomb, extra=b"Content-Encoding: gzip\r\n")]
                                          if name == "generateContent" else [sized(b"{}")])
    rig = start(rigs, backend, "bomb", credentials=2)
    assert rig.upstream is not None
    before = peak_rss_kib(rig.upstream.popen.pid)
    with pytest.raises(grpc.RpcError) as err:
        generate(rig, stream=False)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    grown = peak_rss_kib(rig.upstream.popen.pid) - before
    assert grown < 64 * 1024, f"the upstream's peak RSS grew by {grown} KiB"
    # The backend did the work: another credential must not be spent on the same call.
    assert len(backend.ops("generateContent")) == 1


def test_an_answer_over_the_cap_is_refused_and_not_retried(rigs, backend):
    big = orjson.dumps({"response": {"candidates": [{"content": {"parts": [{"text": "x" * (8 * CAP)}]}}]}})
    backend.script = lambda name, index: [sized(big)] if name == "generateContent" else [sized(b"{}")]
    rig = start(rigs, backend, "big", credentials=2)
    with pytest.raises(grpc.RpcError) as err:
        generate(rig, stream=False)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "larger than" in (err.value.details() or "")
    assert len(backend.ops("generateContent")) == 1


def test_a_streamed_event_over_the_cap_is_refused_and_not_retried(rigs, backend):
    big = orjson.dumps({"response": {"candidates": [{"content": {"parts": [{"text": "x" * (8 * CAP)}]}}]}})
    backend.script = lambda name, index: [sse(big)] if name == "streamGenerateContent" else [sized(b"{}")]
    rig = start(rigs, backend, "bigevent", credentials=2)
    with pytest.raises(grpc.RpcError) as err:
        generate(rig, stream=True)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert len(backend.ops("streamGenerateContent")) == 1


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_a_post_whose_connection_drops_is_not_run_again_on_another_credential(rigs, backend, stream):
    """The backend reads the generation's POST and closes the connection without answering: it
    may have run (and billed) it. With a second credential at hand the pool must still not send
    the same generation again: the caller gets UNAVAILABLE and the backend saw it once."""
    op = "streamGenerateContent" if stream else "generateContent"
    backend.script = lambda name, index: [None] if name == op else [sized(b"{}")]
    rig = start(rigs, backend, f"dropped-{op}", credentials=2)
    with pytest.raises(grpc.RpcError) as err:
        generate(rig, stream=stream)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert len(backend.ops(op)) == 1
