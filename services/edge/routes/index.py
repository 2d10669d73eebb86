"""`GET {ROOT_PATH}/`: a short JSON pointer to the APIs and their docs, for whoever opens the base URL."""
from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

router = APIRouter()

_APIS = {
    "openai": ["POST /v1/chat/completions", "POST /v1/responses", "POST /v1/embeddings", "GET /v1/models"],
    "gemini": ["POST /v1beta/models/{model}:generateContent", "POST /v1beta/models/{model}:streamGenerateContent",
               "POST /v1beta/models/{model}:countTokens", "GET /v1beta/models"],
    "anthropic": ["POST /v1/messages", "POST /v1/messages/count_tokens"],
}


async def index(request: Request) -> Response:
    root = request.app.state.root_path
    body = {
        "service": "gemini-cli gateway",
        "base_url": root + "/",
        "auth": "a license key in 'Authorization: Bearer KEY', 'x-goog-api-key', 'x-api-key' or ?key=",
        "apis": {name: [f"{verb} {root}{path}" for verb, path in (r.split(" ", 1) for r in routes)]
                 for name, routes in _APIS.items()},
        "docs": root + "/docs",
        "openapi": root + "/openapi.json",
    }
    return Response(orjson.dumps(body), media_type="application/json")


router.add_route("/", index, methods=["GET"], name="index", include_in_schema=False)
