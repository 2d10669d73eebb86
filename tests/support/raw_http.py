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
