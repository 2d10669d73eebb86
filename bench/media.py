"""The media phase of `make bench`: peak memory of the whole stack for media fetched by URL.

Two rows: one 20 MiB image fetched from a URL and accepted, and a small request naming nine
20 MiB images (more than MEDIA_MAX_TOTAL_BYTES in total), which the edge refuses with 413 as
soon as the budget is passed, so the stack's memory stays low. The images come from a loopback
HTTP server in this process; the stack runs with MEDIA_ALLOW_PRIVATE=true to reach it.
"""
from __future__ import annotations

import asyncio
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx


EDGE_ENV = {"MEDIA_ALLOW_PRIVATE": "true", "MEDIA_FETCH_TIMEOUT": "120"}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, blob: bytes) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.blob = blob


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        blob = self.server.blob
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(blob)))
        self.end_headers()
        try:
            view = memoryview(blob)
            for off in range(0, len(blob), 1 << 18):
                self.wfile.write(view[off:off + (1 << 18)])
        except OSError:
            pass  # refused by the edge part-way: what the budget is for


async def _measure(stack, peak_cls, rss_mib, urls: list[str]) -> dict:
    procs = {"envoy": stack.envoy, "edge": stack.edge, "upstream": stack.upstream}
    content = [{"type": "text", "text": "describe"}] + [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    body = {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": content}]}
    async with httpx.AsyncClient(timeout=300, trust_env=False) as client, peak_cls(procs, interval=0.005) as peak:
        before = {n: rss_mib(p.popen.pid) for n, p in procs.items()}
        t0 = time.perf_counter()
        r = await client.post(f"{stack.envoy.url}/gemini_cli/v1/chat/completions", json=body,
                              headers={"Authorization": f"Bearer {stack.key}"})
        took = time.perf_counter() - t0
    growth = sum(peak.peak[n] - before[n] for n in procs)
    return {"urls": len(urls), "status": r.status_code, "seconds": took, "rss_before_mib": before,
            "error": None if r.status_code == 200 else r.text[:300],
            "peak_rss_mib": dict(peak.peak), "stack_growth_mib": growth}


async def media_rows(stack, peak_cls, rss_mib, mib: int = 20) -> dict:
    server = _Server(b"\x89PNG\r\n\x1a\n" + os.urandom((mib << 20) - 8))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        # The refusal first, on a fresh edge: afterwards its RSS would still hold the accepted
        # image's pages and show no growth at all.
        refused = await _measure(stack, peak_cls, rss_mib, [f"{base}/{i}.png" for i in range(9)])
        await asyncio.sleep(1.0)
        accepted = await _measure(stack, peak_cls, rss_mib, [f"{base}/one.png"])
    finally:
        server.shutdown()
        server.server_close()
    return {"image_mib": mib, "accepted": accepted, "over_budget": refused}


def print_rows(media: dict) -> None:
    mib = media["image_mib"]
    for label, row in ((f"one {mib} MiB image by URL", media["accepted"]),
                       (f"{row_urls(media)} x {mib} MiB by URL (over MEDIA_MAX_TOTAL_BYTES)", media["over_budget"])):
        print(f"\n{label}: status {row['status']}, {row['seconds']:.2f} s; whole stack grew "
              f"{row['stack_growth_mib']:.0f} MiB; peak RSS MiB "
              + ", ".join(f"{n} {v:.0f}" for n, v in row["peak_rss_mib"].items()))


def row_urls(media: dict) -> int:
    return media["over_budget"]["urls"]
