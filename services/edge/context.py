"""Everything a request handler needs, created once per process by the app's lifespan."""
from __future__ import annotations

import hmac
import itertools
import secrets
from dataclasses import dataclass

from fastapi import Request

from services.edge.auth import KeyCache
from services.edge.limits import Limits
from services.edge.media_fetch import MediaFetcher
from services.edge.settings import EdgeSettings
from services.edge.store import LicenseStore
from services.edge.upstream_client import UpstreamClient
from services.edge.usage import UsageRecorder


@dataclass
class EdgeContext:
    settings: EdgeSettings
    store: LicenseStore
    keys: KeyCache
    limiter: Limits
    recorder: UsageRecorder
    upstream: UpstreamClient
    media: MediaFetcher


def get_ctx(request: Request) -> EdgeContext:
    return request.app.state.ctx


# Ids unique per process run without a urandom call per request (uuid4 costs ~20 us here).
_ID_PREFIX = secrets.token_hex(6)
_ID_COUNTER = itertools.count(1)


def new_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):010x}"


def request_id(request: Request) -> str:
    """Envoy's x-request-id when the request came through the gateway's Envoy, else a fresh id.

    Envoy replaces any id a client sends and proves it forwarded the request with the edge's
    internal token in x-gateway-proxy-token; without that proof (a client that reached the
    edge directly) an x-request-id is not taken, so no client chooses the id of its ledger rows."""
    rid = request.headers.get("x-request-id", "")
    if rid and len(rid) <= 128 and rid.isascii() and rid.isprintable():
        expected: bytes = request.app.state.proxy_token
        proof = request.headers.get("x-gateway-proxy-token", "")
        if expected and hmac.compare_digest(proof.encode(), expected):
            return rid
    return new_id()
