"""The OpenAPI 3.1 document of the edge's public API, built from the app's routes.

Every route endpoint that carries `Operation`s (common.documented) contributes them; each
operation's path must be one its route really serves (checked here, so the document cannot
drift from the routes). Schemas come from the pydantic models of this package.
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Iterator

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.routing import BaseRoute, Match

from services.edge.apidoc.common import Operation
from services.edge.streaming import TRACE_HEADER

REF = "#/components/schemas/{model}"

# The four ways a license key travels; any one of them is enough.
SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "bearer": {"type": "http", "scheme": "bearer",
               "description": "`Authorization: Bearer KEY` (OpenAI SDKs, Claude Code's ANTHROPIC_AUTH_TOKEN)"},
    "authorization": {"type": "apiKey", "in": "header", "name": "Authorization",
                      "description": "the bare key: `Authorization: KEY`"},
    "googApiKey": {"type": "apiKey", "in": "header", "name": "x-goog-api-key",
                   "description": "`x-goog-api-key: KEY` (Google SDKs, Gemini CLI)"},
    "anthropicApiKey": {"type": "apiKey", "in": "header", "name": "x-api-key",
                        "description": "`x-api-key: KEY` (Anthropic SDK, Claude Code)"},
    "queryKey": {"type": "apiKey", "in": "query", "name": "key", "description": "`?key=KEY` (Google's REST habit)"},
}
SECURITY = [{name: []} for name in SECURITY_SCHEMES]

_ERRORS: dict[str, str] = {
    "400": "The request is malformed or names something that does not exist for it",
    "401": "No license key, or one that is unknown, revoked or disabled",
    "403": "The key may not use this model",
    "404": "Unknown model or method",
    "413": "The body (or its media) is larger than the gateway accepts",
    "429": "The key's limits, or every backend credential, are exhausted: see Retry-After",
    "502": "The backend failed to answer",
    "503": "The backend or the upstream service is unavailable: see Retry-After",
}
_HEADERS = {
    "x-request-id": {"description": "The request's id (its ledger row and log line)", "schema": {"type": "string"}},
}
_TRACE = {TRACE_HEADER: {"description": "Google's trace id of the backend call (Code Assist traceId, "
                                        "AI Studio / Vertex AI responseId)", "schema": {"type": "string"}}}
_PARAM = re.compile(r"{([^}:]+)(:[^}]*)?}")


def _served(route: BaseRoute, method: str, path: str) -> bool:
    """Whether `route` serves `method path` (path parameters filled with a sample value)."""
    sample = _PARAM.sub("sample", path)
    scope = {"type": "http", "method": method.upper(), "path": sample, "root_path": ""}
    match, _ = route.matches(scope)
    return match is Match.FULL


def flat_routes(routes: Iterable[BaseRoute]) -> Iterator[BaseRoute]:
    """The app's routes as matched, included routers opened (FastAPI keeps an included
    router as one entry whose effective routes carry the prefix)."""
    for route in routes:
        candidates = getattr(route, "effective_candidates", None)
        if candidates is not None:
            yield from flat_routes(candidates())
        else:
            yield getattr(route, "starlette_route", None) or route


def operations(routes: Iterable[BaseRoute], root: str) -> list[tuple[str, Operation]]:
    """(full path, operation) for every operation the routes declare, checked against them."""
    found: dict[str, tuple[str, Operation]] = {}
    declared: dict[str, Operation] = {}
    for route in flat_routes(routes):
        for op in getattr(getattr(route, "endpoint", None), "api_operations", ()):
            declared[op.operation_id] = op
            full = root + op.path
            if op.operation_id not in found and _served(route, op.method, full):
                found[op.operation_id] = (full, op)
    missing = sorted(set(declared) - set(found))
    if missing:
        raise RuntimeError(f"documented operations no route serves at their path: {missing}")
    return list(found.values())


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _operation(op: Operation) -> dict[str, Any]:
    out: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary, "tags": [op.tag],
                           "security": SECURITY}
    if op.description:
        out["description"] = op.description
    params = [{"name": name, "in": "path", "required": True, "schema": schema}
              for name, schema in op.path_params.items()]
    params += [{"name": name, "in": "query", "required": False, "schema": schema}
               for name, schema in op.query.items()]
    if params:
        out["parameters"] = params
    if op.body is not None:
        out["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(op.body)}}}
    ok: dict[str, Any] = {"description": "OK", "headers": dict(_HEADERS)}
    content: dict[str, Any] = {}
    if op.response is not None:
        content["application/json"] = {"schema": _ref(op.response)}
    if op.stream_event is not None:
        content["text/event-stream"] = {"schema": {"type": "string", "description": (
            f"Server-sent events, each `data:` a {op.stream_event.__name__}")},
            "x-event-schema": _ref(op.stream_event)}
    if op.traced:
        ok["headers"].update(_TRACE)
    if content:
        ok["content"] = content
    responses: dict[str, Any] = {"200": ok}
    error = {"application/json": {"schema": _ref(op.error)}}
    for status, text in _ERRORS.items():
        if status == "413" and op.body is None:
            continue
        responses[status] = {"description": text, "content": error}
    if op.tag == "Anthropic":
        responses["529"] = {"description": "Overloaded (Anthropic's name for 503)", "content": error}
    out["responses"] = responses
    return out


def openapi(routes: Iterable[BaseRoute], root: str, *, title: str, version: str) -> dict[str, Any]:
    ops = operations(routes, root)
    paths: dict[str, dict[str, Any]] = {}
    models: dict[str, type[BaseModel]] = {}
    for path, op in ops:
        paths.setdefault(path, {})[op.method] = _operation(op)
        for model in (op.body, op.response, op.stream_event, op.error):
            if model is not None:
                models[model.__name__] = model
    _, schemas = models_json_schema([(m, "validation") for m in models.values()], ref_template=REF)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": (
            "The gateway's public API: OpenAI chat completions, Responses and embeddings, Google's "
            "Gemini API and Anthropic's Messages API, served from Gemini backends. Every call needs "
            "a license key, in any one of the documented places. Errors come in each API's own shape.")},
        "paths": paths,
        "components": {"schemas": schemas.get("$defs", {}), "securitySchemes": SECURITY_SCHEMES},
        "security": SECURITY,
    }
