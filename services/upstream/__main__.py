"""`python -m services.upstream`: run the upstream gRPC service until SIGTERM."""
from __future__ import annotations

import asyncio
import logging
import sys

from pydantic import ValidationError

from .server import serve
from .settings import Settings


def _configure_logging(level: str) -> None:
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, level, logging.INFO),
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    # httpx logs every request line at INFO; the servicer already logs one line per call.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


def main() -> int:
    try:
        settings = Settings()
    except (ValidationError, ValueError) as exc:
        print(f"upstream: invalid settings: {exc}", file=sys.stderr)
        return 2
    _configure_logging(settings.log_level)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(serve(settings))
    return uvloop.run(serve(settings))


if __name__ == "__main__":
    sys.exit(main())
