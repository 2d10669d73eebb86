"""The media phase of `make bench`: peak memory of the whole stack for big media.

Three rows: a small request naming nine 20 MiB images (more than MEDIA_MAX_TOTAL_BYTES in
total), which the edge refuses with 413 as soon as the budget is passed, so the stack's memory
stays low; one 20 MiB image fetched from a URL and accepted; the same image sent inline as a
base64 data URL. The images come from a loopback HTTP server in this process; the stack runs
with MEDIA_ALLOW_PRIVATE=true to reach it.

Growth is each process's peak (VmHWM, reset through /proc/<pid>/clear_refs before the request,
so no peak falls between two samples) over its RSS just before, summed over Envoy, edge and
upstream. Issue #10 item 4 bounds it at 4x the media payload for what is accepted: printed as
HOLDS or SHORT.
"""
from __future__ import annotations

import asyncio
import base64
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import httpx
import orjson


EDGE_ENV = {"MEDIA_ALLOW_PRIVATE": "true", "MEDIA_FETCH_TIMEOUT": "120"}
BOUND = 4.0  # whole-stack peak growth, in media payloads (issue #10 item 4)


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


def _reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM restarts from the current RSS


async def _measure(stack, rss_mib, body: bytes) -> dict:
    procs = {"envoy": stack.envoy, "edge": stack.edge, "upstream": stack.upstream}
    async with httpx.AsyncClient(timeout=300, trust_env=False) as client:
        before = {}
        for n, p in procs.items():
            _reset_peak(p.popen.pid)
            before[n] = rss_mib(p.popen.pid)
        t0 = time.perf_counter()
        r = await client.post(f"{stack.envoy.url}/gemini_cli/v1/chat/completions", content=body,
                              headers={"Authorization": f"Bearer {stack.key}", "Content-Type": "application/json"})
        took = time.perf_counter() - t0
    peak = {n: rss_mib(p.popen.pid, "VmHWM") for n, p in procs.items()}
    growth = {n: peak[n] - before[n] for n in procs}
    return {"status": r.status_code, "seconds": took, "request_mib": len(body) / (1 << 20),
            "error": None if r.status_code == 200 else r.text[:300], "rss_before_mib": before,
            "peak_rss_mib": peak, "growth_mib": growth, "stack_growth_mib": sum(growth.values())}


def _chat(parts: list[dict]) -> bytes:
    return orjson.dumps({"model": "gemini-2.5-flash", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "describe"}, *parts]}]})


async def by_url(stack, rss_mib, urls: list[str]) -> dict:
    row = await _measure(stack, rss_mib, _chat([{"type": "image_url", "image_url": {"url": u}} for u in urls]))
    return {"urls": len(urls), **row}


async def media_rows(stack, peak_cls, rss_mib, mib: int = 20, fresh: Callable[[], Any] | None = None) -> dict:
    """`peak_cls` is unused (growth comes from VmHWM). The inline image goes through a stack of
    its own when `fresh` starts one: after the image by URL, the edge would reuse the memory
    that one freed and show almost no growth."""
    blob = b"\x89PNG\r\n\x1a\n" + os.urandom((mib << 20) - 8)
    server = _Server(blob)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        # The refusal first, on a fresh edge: afterwards its RSS would still hold the accepted
        # image's pages and show no growth at all.
        refused = await by_url(stack, rss_mib, [f"{base}/{i}.png" for i in range(9)])
        await asyncio.sleep(1.0)
        accepted = await by_url(stack, rss_mib, [f"{base}/one.png"])
    finally:
        server.shutdown()
        server.server_close()
    body = _chat([{"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(blob).decode()}}])
    del blob
    own = fresh() if fresh is not None else None
    try:
        await asyncio.sleep(1.0)
        inline = await _measure(own or stack, rss_mib, body)
    finally:
        if own is not None:
            own.stop()
    return {"image_mib": mib, "accepted": accepted, "inline": inline, "over_budget": refused,
            "bound": {label: verdict(row, mib) for label, row in (("url", accepted), ("inline", inline))}}


def verdict(row: dict, mib: int) -> dict:
    times = row["stack_growth_mib"] / mib
    return {"holds": row["status"] == 200 and times <= BOUND, "times_payload": times}


def print_rows(media: dict) -> None:
    mib = media["image_mib"]
    rows = [(f"one {mib} MiB image by URL", media["accepted"]),
            (f"one {mib} MiB image inline (data URL, {media['inline']['request_mib']:.1f} MiB request)", media["inline"])
            if "inline" in media else None,
            (f"{row_urls(media)} x {mib} MiB by URL (over MEDIA_MAX_TOTAL_BYTES)", media["over_budget"])]
    for label, row in filter(None, rows):
        print(f"\n{label}: status {row['status']}, {row['seconds']:.2f} s; whole stack grew "
              f"{row['stack_growth_mib']:.0f} MiB ({row['stack_growth_mib'] / mib:.1f}x the image); peak growth MiB "
              + ", ".join(f"{n} {v:.0f}" for n, v in row["growth_mib"].items()))
    for label, v in media.get("bound", {}).items():
        how = "by URL" if label == "url" else "inline"
        print(f"  {'HOLDS' if v['holds'] else 'SHORT':<7}whole stack for an accepted {mib} MiB image {how}: "
              f"{v['times_payload']:.1f}x the payload (bound {BOUND:g}x)")


def row_urls(media: dict) -> int:
    return media["over_budget"]["urls"]
