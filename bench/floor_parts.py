"""The bare parts our topology is built of, with no gateway logic (`python -m bench.floor_parts`).

    python -m bench.floor_parts grpc-server PORT PAYLOADS_JSON   a grpc.aio server (the upstream's side)
    python -m bench.floor_parts http-server PORT                 uvicorn + uvloop + httptools (the edge's side)
    python -m bench.floor_parts client                           a load process (see below)

bench/floors.py runs each as a process of its own and reads their CPU from /proc, so what a
part costs is never mixed with what drives it. The gRPC server answers `Unary` with a whole
Gemini answer and `Stream` with N messages (the request body is N as text): the answer's SSE
events one per message, or all of them in one message (as the upstream coalesces them). The
HTTP app answers every request with the same 1 KiB JSON after reading its body.

The client speaks the same line protocol as bench/worker.py: a first JSON line says what to
drive ({"kind": "grpc_unary" | "grpc_stream" | "http" | "aiohttp", "target", "messages",
"path", "headers", "body"}), then each line {"n": N, "concurrency": C} runs N requests, C at a
time, and answers {"results": [[first byte or message, total], ...], "errors": E} (seconds).
"""
from __future__ import annotations

import asyncio
import sys
import time

import orjson

GRPC_UNARY = "/floor.Floor/Unary"
GRPC_STREAM = "/floor.Floor/Stream"
# 1 KiB of JSON, the size of a short non-streamed answer as the edge sends it.
JSON_1K = orjson.dumps({"text": "x" * 1013})
assert len(JSON_1K) == 1024


# --- servers --------------------------------------------------------------------------------

async def grpc_server(port: int, payloads: dict) -> None:
    import grpc

    answer = payloads["answer"].encode()
    events = [e.encode() for e in payloads["events"]]
    joined = b"".join(events)

    async def unary(request: bytes, context) -> bytes:
        return answer

    async def stream(request: bytes, context):
        n = int(request or b"1")
        if n == 1:
            yield joined
            return
        for i in range(n):
            yield events[i % len(events)]

    # No (de)serializers: bytes in, bytes out, so protobuf costs nothing here either.
    handler = grpc.method_handlers_generic_handler("floor.Floor", {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Stream": grpc.unary_stream_rpc_method_handler(stream)})
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


async def http_app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return  # lifespan: nothing to set up
    more = True
    while more:
        msg = await receive()
        more = msg.get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"1024")]})
    await send({"type": "http.response.body", "body": JSON_1K})


def http_server(port: int) -> None:
    import uvicorn

    # Keep-alive as the edge's (75 s): uvicorn's default 5 s would close a client's connection
    # while the other parts take their turn.
    uvicorn.run(http_app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", lifespan="off",
                access_log=False, log_level="warning", timeout_keep_alive=75)


# --- client ---------------------------------------------------------------------------------

class RawHttp:
    """A minimal HTTP/1.1 keep-alive connection: the cheapest client there is, so that the
    latency it measures is the server's (and Envoy's), not an HTTP library's."""

    def __init__(self, host: str, port: int, request: bytes, first_body: bool = False) -> None:
        self.host, self.port, self.request = host, port, request
        # Time the first body bytes rather than the head (a streamed answer's first event, as
        # the aiohttp part times it).
        self.first_body = first_body
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def one(self) -> tuple[float, float]:
        try:
            return await self._one()
        except Exception:
            # A broken connection fails this request only: the next one opens a new connection.
            if self.writer is not None:
                self.writer.close()
            self.reader = self.writer = None
            raise

    async def _one(self) -> tuple[float, float]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        t0 = time.perf_counter()
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        first = time.perf_counter() - t0
        status = int(head.split(b" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(b":") for line in head.split(b"\r\n")[1:] if line)}
        if b"content-length" in headers:
            await self.reader.readexactly(int(headers[b"content-length"]))
        elif headers.get(b"transfer-encoding") == b"chunked":
            timed = not self.first_body
            while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
                await self.reader.readexactly(size + 2)
                if not timed:
                    first, timed = time.perf_counter() - t0, True
            await self.reader.readuntil(b"\r\n")
        if status != 200:
            raise RuntimeError(f"status {status}")
        return first, time.perf_counter() - t0


async def client() -> int:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    spec = orjson.loads(await reader.readline())
    kind, body = spec["kind"], spec.get("body", "").encode()
    closers = []
    if kind.startswith("grpc"):
        import grpc

        channel = grpc.aio.insecure_channel(spec["target"])
        closers.append(channel.close)
        if kind == "grpc_unary":
            call = channel.unary_unary(GRPC_UNARY)

            async def one(_: int) -> tuple[float, float]:
                t0 = time.perf_counter()
                await call(body)
                took = time.perf_counter() - t0
                return took, took
        else:
            call = channel.unary_stream(GRPC_STREAM)
            count = str(spec["messages"]).encode()

            async def one(_: int) -> tuple[float, float]:
                t0 = time.perf_counter()
                first = None
                async for _msg in call(count):
                    if first is None:
                        first = time.perf_counter() - t0
                return first or float("nan"), time.perf_counter() - t0
    elif kind == "http":
        host, port = spec["target"].rsplit(":", 1)
        extra = "".join(f"{k}: {v}\r\n" for k, v in spec.get("headers", {}).items() if k.lower() != "content-type")
        request = (f"POST {spec['path']} HTTP/1.1\r\nHost: {spec['target']}\r\n{extra}"
                   f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
        conns: list[RawHttp] = []

        async def one(slot: int) -> tuple[float, float]:
            while len(conns) <= slot:
                conns.append(RawHttp(host, int(port), request, first_body=spec.get("first_body", False)))
            return await conns[slot].one()
    else:  # aiohttp: the upstream's way to the backend
        import aiohttp

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), trust_env=False)
        closers.append(session.close)
        url, headers = spec["target"], spec.get("headers", {})

        async def one(_: int) -> tuple[float, float]:
            t0 = time.perf_counter()
            first = None
            async with session.post(url, data=body, headers=headers) as r:
                async for _chunk in r.content.iter_any():
                    if first is None:
                        first = time.perf_counter() - t0
                if r.status != 200:
                    raise RuntimeError(f"status {r.status}")
            return first or float("nan"), time.perf_counter() - t0

    while line := await reader.readline():
        order = orjson.loads(line)
        n, conc = order["n"], max(1, order.get("concurrency", 1))
        # `rate`: requests start on a fixed schedule (open loop, as clients arrive), not as fast
        # as the part answers; CPU per request depends on how many requests share a wake-up.
        rate, started, due = order.get("rate"), time.perf_counter(), 0
        results: list[tuple[float, float]] = []
        errors = 0

        async def worker(slot: int, count: int) -> None:
            nonlocal errors, due
            for _ in range(count):
                if rate:
                    wait = started + due / rate - time.perf_counter()
                    due += 1
                    if wait > 0:
                        await asyncio.sleep(wait)
                try:
                    results.append(await one(slot))
                except Exception as exc:
                    if not errors:  # the first error of a run says what goes wrong
                        print(f"floor client {kind}: {exc!r}", file=sys.stderr, flush=True)
                    errors += 1

        await asyncio.gather(*(worker(i, n // conc + (1 if i < n % conc else 0)) for i in range(min(conc, n))))
        sys.stdout.buffer.write(orjson.dumps({"results": results, "errors": errors}) + b"\n")
        sys.stdout.buffer.flush()
    for close in closers:
        await close()
    return 0


def main(argv: list[str]) -> int:
    import uvloop

    if argv[0] == "grpc-server":
        with open(argv[2], "rb") as f:
            payloads = orjson.loads(f.read())
        uvloop.run(grpc_server(int(argv[1]), payloads))
        return 0
    if argv[0] == "http-server":
        http_server(int(argv[1]))
        return 0
    if argv[0] == "client":
        return uvloop.run(client())
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
