"""The edge application: `create_app(settings)`.

The lifespan builds the per-process resources once — one gRPC channel to the upstream, the key
store and its cache, the limiter, the ledger writer, one HTTP client for media — and tears them
down in reverse order (the ledger is flushed after the last request finished).

Routes live under ROOT_PATH (default /gemini_cli); /healthz and /readyz also at the root.
"""
from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI

from services.edge.auth import KeyCache
from services.edge.context import EdgeContext
from services.edge.errors import install_error_handlers
from services.edge.limits import Limiter
from services.edge.media import MediaFetcher
from services.edge.routes import gemini, health, openai
from services.edge.settings import EdgeSettings, load_settings
from services.edge.store import open_store
from services.edge.upstream_client import UpstreamClient
from services.edge.usage import UsageRecorder

log = logging.getLogger("edge")


async def _prune_forever(limiter: Limiter, every: float = 60.0) -> None:
    # Rate windows of keys that went quiet would otherwise stay in memory for good.
    while True:
        await asyncio.sleep(every)
        limiter.prune()


def create_app(settings: EdgeSettings | None = None) -> FastAPI:
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        secret = settings.resolve_secret()
        store = open_store(settings.license_db_location)
        limiter = Limiter()
        recorder = UsageRecorder(store, limiter, flush_interval=settings.ledger_flush_seconds,
                                 spill_dir=Path(settings.data_dir))
        keys = KeyCache(store, secret, limiter=limiter, pending_tokens=recorder.pending_tokens,
                        refresh=settings.auth_refresh_seconds, ttl=settings.auth_cache_ttl)
        upstream = UpstreamClient.connect(settings.upstream_addr, timeout=settings.upstream_timeout,
                                          small_timeout=settings.upstream_small_timeout,
                                          models_ttl=settings.models_cache_seconds)
        http = httpx.AsyncClient(trust_env=False, follow_redirects=False,
                                 timeout=settings.media_fetch_timeout,
                                 headers={"User-Agent": "gemini-cli-gateway-media/1"})
        media = MediaFetcher(http, max_bytes=settings.media_max_bytes, timeout=settings.media_fetch_timeout,
                             max_redirects=settings.media_max_redirects, allow_private=settings.media_allow_private)
        await keys.poll_once()
        keys.start()
        recorder.start()
        housekeeping = asyncio.create_task(_prune_forever(limiter), name="limiter-prune")
        app.state.ctx = EdgeContext(settings=settings, store=store, keys=keys, limiter=limiter,
                                    recorder=recorder, upstream=upstream, http=http, media=media)
        log.info("edge ready: root path %r, upstream %s, license db %s", settings.root_path,
                 settings.upstream_addr, settings.license_db_location)
        try:
            yield
        finally:
            housekeeping.cancel()
            await keys.stop()
            await recorder.stop()
            await upstream.close(grace=1.0)
            await http.aclose()
            await store.close()
            log.info("edge stopped; %d ledger rows written", recorder.written)

    # FastAPI's built-in OpenTelemetry hooks are off: they cost time on every request and the
    # gateway reports through its own ledger and logs.
    app = FastAPI(title="gemini-cli gateway edge", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None, telemetry={"tracing": False, "metrics": False, "logs": False})
    app.state.root_path = settings.root_path
    app.state.settings = settings
    install_error_handlers(app)
    # Routes are matched in order: the busiest first.
    app.include_router(gemini.router, prefix=settings.root_path)
    app.include_router(openai.router, prefix=settings.root_path)
    app.include_router(health.router)
    if settings.root_path:
        app.include_router(health.router, prefix=settings.root_path)
    return app
