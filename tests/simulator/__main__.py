"""`python -m tests.simulator --host 127.0.0.1 --port N [--strict-accounts] [--chunk-delay S] [--latency S]
[--tls-dir DIR] [--embed-response-ids]`. With --tls-dir it serves HTTPS with DIR/server.pem (a test CA in DIR/ca.pem,
both made there first when missing; see tls.py)."""
from __future__ import annotations

import argparse
import logging

import uvicorn

from .app import create_app

# Idle seconds before the simulator closes a kept-alive connection. Google's front ends keep an
# idle HTTP/1.1 connection 610 s ("GFE uses a client HTTP keepalive timeout of 610 seconds",
# https://cloud.google.com/load-balancing/docs/https/request-distribution); uvicorn's default, 5 s,
# is shorter than the upstream's pool keep-alive (60 s, transport.py), so a POST sent on a pooled
# connection just as the simulator closed it failed with ServerDisconnectedError under load (a
# 503 upstream_unreachable the real backend never causes: the upstream rightly never re-sends a
# POST).
KEEP_ALIVE_SECONDS = 610


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.simulator", description="Code Assist simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--strict-accounts", action="store_true",
                        help="only accounts registered through POST /_sim/accounts exist")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between streamed chunks")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before the first byte")
    parser.add_argument("--embed-response-ids", action="store_true",
                        help="embedding answers carry a responseId (Google's carry none)")
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--access-log", action="store_true")
    parser.add_argument("--tls-dir", default="", help="serve HTTPS with the test PKI in this directory")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app = create_app(strict_accounts=args.strict_accounts, chunk_delay=args.chunk_delay, latency=args.latency,
                     embed_response_ids=args.embed_response_ids)
    tls: dict[str, str] = {}
    if args.tls_dir:
        from pathlib import Path

        from .tls import load_pki

        pki = load_pki(Path(args.tls_dir))
        tls = {"ssl_certfile": str(pki.cert), "ssl_keyfile": str(pki.key)}
    # uvicorn's defaults pick uvloop and httptools when installed; a short graceful timeout
    # keeps a `hang` fault from holding up shutdown.
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=args.access_log,
                timeout_graceful_shutdown=1, timeout_keep_alive=KEEP_ALIVE_SECONDS, **tls)


if __name__ == "__main__":
    main()
