"""The /metrics endpoint both services serve on a port of their own (not the public one).

prometheus-client's HTTP server runs in a thread of its own: a scrape never waits on, or
delays, the event loop. A port already taken (another instance on the same host) is logged and
the service runs on without metrics rather than refusing to start.
"""
from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

log = logging.getLogger("metrics")


class MetricsServer:
    def __init__(self, server: Any, thread: Any) -> None:
        self._server = server
        self._thread = thread
        self.port: int = server.server_address[1]

    @classmethod
    def start(cls, registry: CollectorRegistry, listen: str, port: int, service: str) -> MetricsServer | None:
        if port < 0:
            return None
        try:
            server, thread = start_http_server(port, addr=listen, registry=registry)
        except OSError as exc:
            log.warning("%s metrics not served: cannot listen on %s:%d (%s)", service, listen, port, exc)
            return None
        log.info("%s metrics on http://%s:%d/metrics", service, listen, server.server_address[1])
        return cls(server, thread)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
