"""Raw-socket helpers for tests that speak HTTP/1.1 by hand (to stall, flood or cut a request)."""
from __future__ import annotations

import socket


def read_head(sock: socket.socket, got: bytes = b"", size: int = 65536) -> bytes:
    """`got` and what arrives after it until the end of an HTTP head, EOF or a socket error (a
    refusal may close the connection while we still write): the caller asserts on what it got."""
    try:
        while b"\r\n\r\n" not in got:
            data = sock.recv(size)
            if not data:
                break
            got += data
    except OSError:
        pass
    return got


class HeldPost:
    """A JSON POST sent over a raw socket and left waiting for its answer until close(): what it
    holds at the server (a concurrency slot, a backend call) is held exactly until the test lets
    go, however slow the machine (an HTTP client's own timeout let it go at a time of its own)."""

    def __init__(self, url: str, headers: dict[str, str], body: bytes) -> None:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        head = (f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n")
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
        self.sock.sendall(head.encode() + body)

    def close(self) -> None:
        """Hang up: the server sees its client leave."""
        self.sock.close()
