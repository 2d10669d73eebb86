"""Liveness and readiness. Both are mounted at the root and under ROOT_PATH."""
from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

router = APIRouter()


@router.get("/healthz", include_in_schema=False)
async def healthz() -> Response:
    # Liveness only: the process serves HTTP. Dependencies are /readyz's business.
    return Response(b'{"status":"ok"}', media_type="application/json")


@router.get("/readyz", include_in_schema=False)
async def readyz(request: Request) -> Response:
    ctx = request.app.state.ctx
    upstream_ok = await ctx.upstream.ready()
    body = {"status": "ok" if upstream_ok else "unavailable", "upstream": upstream_ok,
            "ledger_queue": ctx.recorder.queued}
    return Response(orjson.dumps(body), status_code=200 if upstream_ok else 503, media_type="application/json")
