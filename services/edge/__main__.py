"""`python -m services.edge`: serve the edge with uvicorn (uvloop + httptools, with the
protocol of services/edge/http_server.py).

On SIGTERM/SIGINT uvicorn stops accepting connections and lets in-flight requests — streams
included — finish for up to SHUTDOWN_GRACE_SECONDS; then the lifespan flushes the usage ledger
and closes the gRPC channel.

Uvicorn's access log is off: it would print query strings, and `?key=` carries license keys.
"""
from __future__ import annotations

from services import docstrings

if __name__ == "__main__":
    docstrings.drop()  # first: re-executes this command under -OO

import gc  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

# Before grpc is imported: gRPC's EventEngine client moves every socket event through its own
# thread pool and then the asyncio poller thread; the classic I/O manager polls in the poller
# thread itself: ~40% fewer thread hops and a few tenths of a millisecond less per streamed
# call (measured with bench/). An operator's own GRPC_EXPERIMENTS wins.
os.environ.setdefault("GRPC_EXPERIMENTS", "-event_engine_client,-event_engine_listener")

from services import unused_extras  # noqa: E402

unused_extras.refuse(*unused_extras.EDGE_UNUSED)
unused_extras.uvicorn_without_command_line()

import uvicorn  # noqa: E402


def _import_fastapi_with_lazy_models() -> None:
    """FastAPI imports its 37 OpenAPI models (fastapi.openapi.models) to write its own OpenAPI
    document, which the edge does not serve (services/edge/apidoc writes it, routes/docs.py
    serves it): built at import, their validators held ~1.2 MiB for good (issue #15). Models
    defined during this import build on first use instead (pydantic's defer_build); classes
    defined later, ours included, are not affected."""
    from pydantic import BaseModel

    BaseModel.model_config["defer_build"] = True
    try:
        import fastapi  # noqa: F401
    finally:
        del BaseModel.model_config["defer_build"]


_import_fastapi_with_lazy_models()

from services.edge.app import create_app  # noqa: E402
from services.edge.http_server import EdgeHttpProtocol  # noqa: E402
from services.edge.settings import load_settings  # noqa: E402
from services.logging_setup import configure as configure_logging  # noqa: E402


# The cyclic GC's young generation is collected after this many more container allocations than
# deallocations (CPython's default: 700). A request leaves no cyclic garbage (tests/unit/
# test_edge_http_server.py; the edge's own error paths drop the tracebacks that would make
# cycles), so a young collection finds nothing to free: it only walks the objects of the
# requests in flight, ~0.4 ms each time, every ~50 requests at concurrency 64. Rarer young
# collections walk little more each; what cyclic garbage a path might still make waits for at
# most this many objects (a few MiB). tests/integration/test_edge_memory.py: flat under load.
GC_YOUNG_THRESHOLD = 10_000


class _Server(uvicorn.Server):
    async def startup(self, sockets=None) -> None:
        await super().startup(sockets=sockets)
        # Everything built so far — modules, the app, and what the lifespan built (the gRPC
        # channel, stores, caches, metrics) — lives as long as the process: keep it out of the
        # cyclic GC's full collections, which would otherwise walk it all (~25 ms each time).
        # What startup left as garbage is freed first: frozen, it would stay for good.
        gc.collect()
        gc.freeze()

    def handle_exit(self, sig, frame) -> None:
        super().handle_exit(sig, frame)
        # uvicorn re-raises the signal after draining, so the exit status would say "killed";
        # a drained shutdown is a normal exit (status 0).
        self._captured_signals.clear()


def main() -> int:
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    config = uvicorn.Config(create_app(settings), host=settings.edge_host, port=settings.edge_port,
                            loop="uvloop", http=EdgeHttpProtocol, ws="none", lifespan="on", access_log=False,
                            server_header=False, log_config=None, log_level=settings.log_level.lower(),
                            timeout_graceful_shutdown=settings.shutdown_grace_seconds or None,
                            timeout_keep_alive=75,
                            # The edge trusts only Envoy's proof (x-gateway-proxy-token) for what
                            # X-Forwarded-* say (routes/admin.py), never the peer address.
                            proxy_headers=False)
    server = _Server(config)
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    server.run()
    return 0 if server.started else 3


if __name__ == "__main__":
    sys.exit(main())
