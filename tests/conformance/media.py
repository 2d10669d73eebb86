"""A small HTTP server on loopback serving media files, for the tests of remote media URLs."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest

from tests import fixtures, harness

MEDIA = {
    "/cat.png": ("image/png", fixtures.png()),
    "/talk.mp3": ("application/octet-stream", fixtures.mp3()),  # wrong type on purpose: sniffed
    "/clip.mp4": ("video/mp4", fixtures.mp4()),
}


class _MediaHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        if self.path not in MEDIA:
            self.send_error(404)
            return
        mime, body = MEDIA[self.path]
        self.send_response(200)
        self.send_header("Content-Type", mime)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def media_server() -> Iterator[str]:
    srv = ThreadingHTTPServer((harness.LOOPBACK, 0), _MediaHandler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://{harness.LOOPBACK}:{srv.server_address[1]}"
    srv.shutdown()
