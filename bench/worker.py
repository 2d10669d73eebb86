"""A client process for one layer of the latency phase at concurrency 1 (`python -m bench.worker`).

Why a process of its own: a gRPC channel open in the measuring process (for layer b) made the
HTTP layers measured from that process about 0.5 ms slower, and that difference would be
booked against the gateway. Each layer now has its own client process, the same for all, and
only layer b's loads gRPC.

Protocol, one JSON object per line: the first line on stdin describes the layer
({"layer", "url", "headers", "body" (latin-1), "grpc_addr", "metadata", "model"}); then each line {"n": N} runs N
streamed requests one after another and answers {"results": [[ttfc, total], ...], "errors": E}
(seconds). End of input ends the process. LineWorker drives such a process (bench.floor_parts'
client speaks the same protocol).
"""
from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]


class LineWorker:
    """A load process speaking this module's line protocol (bench.worker, bench.floor_parts
    client): the spec on its first line, then {"n": N, ...} orders, each answered by one line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def spawn(cls, spec: dict, module: str = "bench.worker", *args: str):
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", module, *args, cwd=str(ROOT),
                                                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                    limit=1 << 24)  # an answer line holds every request's times
        assert proc.stdin is not None
        proc.stdin.write(orjson.dumps(spec) + b"\n")
        return cls(proc)

    async def run(self, n: int, **order) -> tuple[list[tuple[float, float]], int]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(orjson.dumps({"n": n, **order}) + b"\n")
        await self.proc.stdin.drain()
        line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError("bench worker died")
        answer = orjson.loads(line)
        return [tuple(r) for r in answer["results"]], answer["errors"]

    async def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()


async def stream_http(client: httpx.AsyncClient, url: str, headers: dict, body: bytes) -> tuple[float, float]:
    t0 = time.perf_counter()
    ttfc = None
    async with client.stream("POST", url, content=body, headers=headers) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{url}: {r.status_code} {(await r.aread())[:200]!r}")
        async for piece in r.aiter_raw():
            if ttfc is None and b"data:" in piece:
                ttfc = time.perf_counter() - t0
    return (ttfc if ttfc is not None else float("nan")), time.perf_counter() - t0


async def main() -> int:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    spec = orjson.loads(await reader.readline())
    body = spec["body"].encode("latin-1")
    async with httpx.AsyncClient(timeout=60, trust_env=False) as client:
        if spec["layer"] == "b_upstream_grpc":
            import grpc

            from gemini_cli.upstream.v1 import upstream_pb2, upstream_pb2_grpc
            from google.api import httpbody_pb2

            channel = grpc.aio.insecure_channel(spec["grpc_addr"])
            stub = upstream_pb2_grpc.UpstreamStub(channel)
            # The upstream serves internal callers only (INTERNAL_TOKENS_FILE).
            metadata = tuple(tuple(kv) for kv in spec.get("metadata", ()))

            async def one() -> tuple[float, float]:
                t0 = time.perf_counter()
                ttfc = None
                call = stub.Generate(upstream_pb2.GenerateRequest(
                    model=spec["model"], stream=True, coalesce=spec.get("coalesce", True), body=httpbody_pb2.HttpBody(content_type="application/json", data=body)),
                    metadata=metadata)
                async for _ in call:
                    if ttfc is None:
                        ttfc = time.perf_counter() - t0
                return ttfc or float("nan"), time.perf_counter() - t0
        else:
            def one():
                return stream_http(client, spec["url"], spec["headers"], body)

        while line := await reader.readline():
            n = orjson.loads(line)["n"]
            results, errors = [], 0
            for _ in range(n):
                try:
                    results.append(await one())
                except Exception:
                    errors += 1
            sys.stdout.buffer.write(orjson.dumps({"results": results, "errors": errors}) + b"\n")
            sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    sys.exit(asyncio.run(main()))
