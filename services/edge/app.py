"""The edge application: `create_app(settings)`.

The lifespan builds the per-process resources once — one gRPC channel to the upstream, the key
store and its cache, the limiter, the ledger writer, one HTTP client for media — and tears them
down in reverse order (the ledger is flushed after the last request finished).

Routes live under ROOT_PATH (default /gemini_cli); /healthz and /readyz also at the root.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import APIRouter, FastAPI
from starlette.requests import Request
from starlette.routing import Match, Route
from starlette.types import Message, Receive, Scope, Send

from services.edge import stats
from services.edge import retention
from services.edge.auth import KeyCache
from services.edge.context import EdgeContext
from services.edge.errors import install_error_handlers
from services.edge.limits import Limiter, Limits
from services.edge.body_budget import BodyBudget
from services.edge.media_fetch import MediaFetcher, media_http_client
from services.edge.metrics import EdgeMetrics
from services.metrics_server import MetricsServer
from services.edge.routes import admin, anthropic, docs, embeddings, gemini, health, index, openai, responses
from services.edge.admin_service import AdminService
from services.edge.admin_token import AdminTokenCheck, FailedLogins, ensure_admin_token
from services.edge.settings import EdgeSettings, load_settings
from services.edge.store import describe_location, open_store
from services.edge.upstream_client import UpstreamClient
from services.edge.usage import UsageRecorder

log = logging.getLogger("edge")


async def _load_catalogue(upstream: UpstreamClient) -> None:
    # Metric labels name only models of the upstream's catalogue (see metrics.py): have it
    # from the start, retrying while the upstream is not up yet.
    while True:
        try:
            await upstream.list_models()
            return
        except Exception:
            await asyncio.sleep(1.0)


def shared_limits(settings: EdgeSettings, store):
    """(limiter, store, key-change listener) from the settings: with REDIS_URL, limits every
    replica shares and a store that announces key changes; without, limits of this process
    alone (and no listener)."""
    url = settings.redis_url_value
    if not url:
        return Limiter(), store, None
    # Imported only when configured: redis-py weighs ~6 MiB in a process that never uses it.
    from services.edge.key_events import KeyChangeListener, KeyChangePublisher, NotifyingStore
    from services.edge.redis_conn import connect as connect_redis
    from services.edge.redis_limits import RedisLimiter

    limiter = RedisLimiter(connect_redis(url, settings.redis_timeout), timeout=settings.redis_timeout)
    publisher = KeyChangePublisher.from_url(url, settings.redis_timeout)
    listener = KeyChangeListener(url, settings.redis_timeout)
    return limiter, NotifyingStore(store, publisher), listener


async def _prune_forever(limiter: Limits, every: float = 60.0) -> None:
    # Rate windows of keys that went quiet would otherwise stay in memory for good.
    while True:
        await asyncio.sleep(every)
        limiter.prune()


def _admin_check(settings: EdgeSettings, secret: bytes) -> AdminTokenCheck:
    configured = settings.admin_token.get_secret_value().strip() if settings.admin_token else ""
    if not configured:
        try:
            token = ensure_admin_token(settings.data_dir, secret)
        except OSError as exc:
            # The API still serves; only the console stays closed (every admin call: 401).
            log.error("admin console disabled: cannot keep a generated admin token in %s (%s); set ADMIN_TOKEN",
                      settings.data_dir, exc.strerror or exc)
            token = None
        if token:
            # The only time this token is shown: only its hash is kept.
            log.warning("admin console: %s/admin  admin token (shown once, keep it): %s  "
                        "(replace it: python -m services.edge.keys admin-token rotate)", settings.root_path, token)
    return AdminTokenCheck(secret, settings.data_dir, configured or None)


class EdgeApp(FastAPI):
    """FastAPI, with POST requests sent straight to their endpoint.

    Only the generation routes take POST. For them FastAPI's stack — error middleware,
    telemetry and body-limit wrappers, exception middleware, exit stack, nested routers — cost
    about 0.1 ms of the edge's ~1.5 ms CPU per streamed request, on the time-to-first-chunk
    path. Here a POST is matched against those routes (in router order, as the router does) and
    its endpoint runs with the app's exception handlers applied as ExceptionMiddleware and
    ServerErrorMiddleware apply them. The shortcut turns itself off if the app gets user
    middleware, a body limit, a root_path, or a POST route that is not a plain Starlette route
    (one whose handling FastAPI adds to); every other request takes the normal path.
    """

    _direct: list[Route] | None = None

    def direct_routes(self, routers: list[tuple[APIRouter, str]]) -> None:
        """Register the POST routes of `routers` (as included, with their prefixes)."""
        routes: list[Route] = []
        for router, prefix in routers:
            for route in router.routes:
                methods = getattr(route, "methods", None) or set()
                if "POST" not in methods:
                    continue
                if type(route) is not Route:
                    self._direct = []
                    return
                routes.append(Route(prefix + route.path, route.endpoint, methods=["POST"], name=route.name))
        self._direct = routes

    def _direct_enabled(self) -> bool:
        return bool(self._direct) and not self.user_middleware and self.max_body_size is None and not self.root_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # One coroutine from here to the endpoint's response (no dispatching coroutine between):
        # each one awaiting is a frame held for as long as a stream stays open.
        budget: BodyBudget | None = getattr(self.state, "body_budget", None)
        account = None
        if scope["type"] == "http" and scope["method"] == "POST" and budget is not None:
            account = budget.account(scope, receive)
            receive = account.receive
        try:
            route = self._direct_route(scope)
            if route is not None:
                await self._run_direct(route, scope, receive, send)
            else:
                await super().__call__(scope, receive, send)
        finally:
            if account is not None:
                account.release()

    def _direct_route(self, scope: Scope) -> Route | None:
        """The POST route that serves this request directly (its path parameters put in the
        scope, as the router does), or None: the normal path."""
        if scope["type"] == "http" and scope["method"] == "POST" and self._direct_enabled():
            for route in self._direct:  # type: ignore[union-attr]
                match, child = route.matches(scope)
                if match is Match.FULL:
                    scope["app"] = self
                    scope.setdefault("router", self.router)
                    scope.update(child)
                    return route
        return None

    async def _run_direct(self, route: Route, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def sender(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        request = Request(scope, receive, sender)
        try:
            response = await route.endpoint(request)
            await response(scope, receive, sender)
        except Exception as exc:
            handler, server_error = self._handler_for(exc)
            if started or handler is None:
                raise
            response = handler(request, exc)
            if inspect.isawaitable(response):
                response = await response
            await response(scope, receive, sender)
            if server_error:
                raise  # as ServerErrorMiddleware does: the server logs it too

    def _handler_for(self, exc: Exception):
        """(handler, is the 500 handler) the middleware stack would use for `exc`."""
        for cls in type(exc).__mro__:
            if cls is Exception:
                break
            handler = self.exception_handlers.get(cls)
            if handler is not None:
                return handler, False
        return self.exception_handlers.get(Exception) or self.exception_handlers.get(500), True


def create_app(settings: EdgeSettings | None = None) -> FastAPI:
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        secret = settings.resolve_secret()
        store = open_store(settings.license_db_location)
        limiter, store, listener = shared_limits(settings, store)
        recorder = UsageRecorder(store, limiter, flush_interval=settings.ledger_flush_seconds,
                                 spill_dir=Path(settings.data_dir))
        keys = KeyCache(store, secret, limiter=limiter, pending_tokens=recorder.pending_tokens,
                        refresh=settings.auth_refresh_seconds, ttl=settings.auth_cache_ttl)
        upstream = UpstreamClient.connect(settings.upstream_addr, timeout=settings.upstream_timeout,
                                          small_timeout=settings.upstream_small_timeout,
                                          models_ttl=settings.models_cache_seconds,
                                          authorization=settings.internal_authorization(),
                                          coalesce=settings.stream_coalesce)
        media = MediaFetcher(media_http_client(settings.media_fetch_timeout), max_bytes=settings.media_max_bytes, timeout=settings.media_fetch_timeout,
                             max_redirects=settings.media_max_redirects, allow_private=settings.media_allow_private,
                             max_total=settings.media_max_total_bytes,
                             max_inflight=settings.media_max_inflight_bytes)
        metrics = EdgeMetrics(known_model=upstream.known_model, key_name=keys.names.get)
        recorder.metrics = metrics
        metrics.watch_quotas(lambda: [(keys.names.get(kid, str(kid)), quota, limiter.used_tokens(kid))
                                      for kid, quota in list(keys.quotas.items())])
        recorder.key_names = keys.names
        upstream.open_streams = metrics.open_streams
        metrics_server = MetricsServer.start(metrics.registry, settings.metrics_listen,
                                             settings.edge_metrics_port, "edge")
        app.state.metrics = metrics
        await keys.poll_once()
        keys.start()
        await limiter.start()
        if listener is not None:
            listener.start(keys.invalidate)
        recorder.start()
        housekeeping = asyncio.create_task(_prune_forever(limiter), name="limiter-prune")
        catalogue = asyncio.create_task(_load_catalogue(upstream), name="catalogue-warmup")
        retain = (asyncio.create_task(retention.run_forever(store, settings.usage_retention_days,
                                                            settings.usage_rollup_seconds), name="usage-retention")
                  if settings.usage_retention_days > 0 else None)
        app.state.ctx = EdgeContext(settings=settings, store=store, keys=keys, limiter=limiter,
                                    recorder=recorder, upstream=upstream, media=media)
        app.state.admin = admin.AdminState(_admin_check(settings, secret), FailedLogins(),
                                           AdminService(store, secret, upstream))
        stats.install("edge", lambda: {"ledger_queue": recorder.queued})
        log.info("edge ready: root path %r, upstream %s, license db %s, limits %s", settings.root_path,
                 settings.upstream_addr, describe_location(settings.license_db_location),
                 "shared in Redis" if listener is not None else "per process")
        try:
            yield
        finally:
            stats.uninstall()
            housekeeping.cancel()
            catalogue.cancel()
            if retain is not None:
                retain.cancel()
            if listener is not None:
                await listener.stop()
            await keys.stop()
            await recorder.stop()
            await limiter.close()
            await upstream.close(grace=1.0)
            await media.aclose()
            await store.close()
            if metrics_server is not None:
                metrics_server.stop()
            log.info("edge stopped; %d ledger rows written", recorder.written)

    # FastAPI's built-in OpenTelemetry hooks are off: they cost time on every request and the
    # gateway reports through its own ledger and logs.
    app = EdgeApp(title="gemini-cli gateway edge", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None, telemetry={"tracing": False, "metrics": False, "logs": False})
    app.state.root_path = settings.root_path
    app.state.settings = settings
    app.state.body_budget = BodyBudget(settings.inflight_body_limit)
    # What Envoy sends in x-gateway-proxy-token (see context.request_id); b"" trusts no one.
    app.state.proxy_token = settings.internal_token_value().encode()
    install_error_handlers(app)
    # Routes are matched in order: the busiest first.
    app.include_router(gemini.router, prefix=settings.root_path)
    app.include_router(openai.router, prefix=settings.root_path)
    app.include_router(responses.router, prefix=settings.root_path)
    app.include_router(anthropic.router, prefix=settings.root_path)
    app.include_router(embeddings.router, prefix=settings.root_path)
    app.include_router(health.router)
    app.include_router(index.router, prefix=settings.root_path)
    app.include_router(docs.router, prefix=settings.root_path)
    app.include_router(admin.router, prefix=settings.root_path)
    if settings.root_path:
        app.include_router(health.router, prefix=settings.root_path)
    app.direct_routes([(gemini.router, settings.root_path), (openai.router, settings.root_path),
                       (responses.router, settings.root_path), (anthropic.router, settings.root_path),
                       (embeddings.router, settings.root_path),
                       (health.router, ""), (health.router, settings.root_path)])
    return app
