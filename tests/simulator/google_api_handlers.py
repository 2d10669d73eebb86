"""Request handling of the AI Studio and Vertex AI routes (see google_api.py for the protocol)."""
from __future__ import annotations

import time
from typing import Any

import orjson

from . import errors, responder
from .call import SSE, Call, now_iso, read_json, response_id
from .faults import Fault
from .google_api import _dims, _texts, api_key_invalid, fault_body, vector, vertex_403
from .models import CLOUD_MODELS, EMBEDDING_MODELS
from .reply import Reply
from .request_fields import RequestError, word_count
from .validation import validate

OPS = {"generateContent": "generate", "streamGenerateContent": "stream", "countTokens": "count",
       "batchEmbedContents": "embed", "embedContent": "embed", "predict": "embed"}
UNREGISTERED = ("Method doesn't allow unregistered callers (callers without established identity). Please use API "
                "Key or other form of API consumer identity to call this API.")


def _error(call: Call, backend: str, status: int, body: dict[str, Any]) -> Reply:
    # Vertex wraps streamed errors in an array; AI Studio sends the object.
    wrapped = backend != "ai-studio" and call.op == "stream"
    return call.json(status, [body] if wrapped else body)


def crashed(call: Call, backend: str) -> Reply:
    """The simulator's own failure (a bug in it) on this route, answered as the backend answers
    a 500 there: on a Vertex stream an array, with or without alt=sse, even when the failure came
    before the method was read."""
    if call.op == "unknown":
        call.op = OPS.get(_split(call.request.path_params.get("rest", ""))[1], "unknown")
        call.entry["op"] = call.op
    return _error(call, backend, 500, errors.google_error(500))


def _key(call: Call) -> str:
    return call.request.headers.get("x-goog-api-key") or call.request.query_params.get("key") or ""


def _check_key(call: Call, backend: str) -> tuple[str | None, Reply | None]:
    key = _key(call)
    if not key:
        if backend == "ai-studio":
            return None, _error(call, backend, 403, errors.google_error(403, UNREGISTERED))
        return None, _error(call, backend, 401, errors.unauthenticated("CREDENTIALS_MISSING"))
    store = call.sim.cloud
    known = store.keys.get(key)
    if (known is None and call.sim.accounts.strict) or (known is not None and known.revoked):
        return key, _error(call, backend, 400, api_key_invalid())
    if known is not None and known.leaked:
        return key, _error(call, backend, 403, errors.google_error(
            403, "Your API key was reported as leaked. Please use another API key."))
    return key, None


def _check_bearer(call: Call, project: str, location: str, model: str) -> tuple[str | None, Reply | None]:
    header = call.request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None, _error(call, "vertex", 401, errors.unauthenticated("CREDENTIALS_MISSING"))
    found = call.sim.cloud.tokens.get(token.strip())
    if found is not None:
        email, expires = found
        if expires <= time.time():
            return email, _error(call, "vertex", 401, errors.unauthenticated("ACCESS_TOKEN_EXPIRED"))
        sa = call.sim.cloud.service_accounts.get(email)
        if sa is not None and sa.project and sa.project != project:
            return email, _error(call, "vertex", 403, vertex_403(project, location, model))
        return email, None
    # An ADC user's token from the OAuth refresh grant.
    acct, problem = call.sim.accounts.identify(header)
    if acct is None or problem is not None:
        return acct.refresh_token if acct else None, _error(call, "vertex", 401,
                                                             errors.unauthenticated(problem or "CREDENTIALS_MISSING"))
    return acct.refresh_token, None


def _split(rest: str) -> tuple[str, str]:
    model, _, method = rest.partition(":")
    return model, method


def _take(call: Call, backend: str, account: str | None) -> tuple[Fault | None, Reply | None]:
    fault = call.sim.faults.take(account, call.op, call.model)
    if fault is None:
        return None, None
    call.entry["fault"] = fault.kind
    if fault.kind == "hang":
        reply = call.json(200, {})
        reply.hang = True
        return None, reply
    if fault.status is not None:
        return None, _error(call, backend, fault.status, fault_body(backend, fault, call.model))
    return fault, None


async def ai_studio(call: Call, backend: str) -> tuple[Reply, Fault | None]:
    rest = call.request.path_params.get("rest", "")
    if call.request.method == "GET":
        return _list(call, rest), None
    model, method = _split(rest)
    return await _serve(call, backend, model, method, "", "")


async def vertex(call: Call, backend: str) -> tuple[Reply, Fault | None]:
    if call.request.method == "GET":
        return _list(call, call.request.path_params.get("rest", "")), None
    model, method = _split(call.request.path_params["rest"])
    return await _serve(call, backend, model, method, call.request.path_params.get("project", ""),
                        call.request.path_params.get("location", ""))


def _list(call: Call, rest: str) -> Reply:
    models = [*CLOUD_MODELS, *EMBEDDING_MODELS]
    if rest:
        if rest not in models:
            return call.json(404, errors.google_error(404, f"models/{rest} is not found for API version v1beta"))
        return call.json(200, {"name": f"models/{rest}", "baseModelId": rest, "displayName": rest})
    return call.json(200, {"models": [{"name": f"models/{m}", "baseModelId": m, "displayName": m} for m in models]})


async def _serve(call: Call, backend: str, model: str, method: str, project: str,
                 location: str) -> tuple[Reply, Fault | None]:
    call.op = OPS.get(method, "unknown")
    call.entry["op"] = call.op
    body, bad = await read_json(call)
    call.model = model
    call.entry["model"] = model
    if backend == "vertex":
        account, problem = _check_bearer(call, project, location, model)
    else:
        account, problem = _check_key(call, backend)
    call.entry["account"] = account
    if bad is not None:
        return bad, None
    fault, replaced = _take(call, backend, account)
    if replaced is not None:
        return replaced, None
    if problem is not None:
        return problem, fault
    if call.op == "unknown":
        return _error(call, backend, 404, errors.google_error(404)), None
    return _answer(call, backend, model, method, body), fault


def _not_found(call: Call, backend: str, model: str, method: str) -> Reply:
    if backend == "ai-studio":
        message = (f"models/{model} is not found for API version v1beta, or is not supported for {method}. "
                   "Call ListModels to see the list of available models and their supported methods.")
    else:
        # Vertex names the caller's project and location in the resource path.
        params = call.request.path_params
        resource = f"publishers/google/models/{model}"
        if params.get("project"):
            resource = f"projects/{params['project']}/locations/{params.get('location', '')}/{resource}"
        message = (f"Publisher Model `{resource}` was not found or your project does not have access to it. "
                   "Please ensure you are using a valid model version.")
    return _error(call, backend, 404, errors.google_error(404, message))


def _answer(call: Call, backend: str, model: str, method: str, body: dict[str, Any]) -> Reply:
    if call.op == "embed":
        if model not in EMBEDDING_MODELS or (backend == "ai-studio" and model == "text-embedding-005"):
            return _not_found(call, backend, model, method)
        return _embed(call, backend, model, method, body)
    if model not in CLOUD_MODELS:
        return _not_found(call, backend, model, method)
    if backend != "ai-studio":
        for i, content in enumerate(body.get("contents") or []):
            if isinstance(content, dict) and content.get("role") not in ("user", "model", "function"):
                return _error(call, backend, 400, errors.google_error(
                    400, "Unable to submit request because Please use a valid role: user, model."))
    if backend == "ai-studio":
        refused = [k for k in ("labels", "modelArmorConfig") if k in body] + \
            [k for k in ("routingConfig", "audioTimestamp") if k in (body.get("generationConfig") or {})]
        if refused:
            return _error(call, backend, 400, errors.google_error(
                400, f"Invalid JSON payload received. Unknown name \"{refused[0]}\": Cannot find field."))
    if call.op == "count":
        return _count(call, backend, body)
    try:
        validate(model, body)
        answer = responder.answer(model, body)
    except RequestError as exc:
        return _error(call, backend, 400, errors.google_error(400, str(exc)))
    seq = call.entry["seq"]
    rid, created = response_id(seq), now_iso()
    call.entry["trace_id"] = rid  # Google's id of the response: the trace id of these backends
    if call.op == "generate":
        reply = call.json(200, responder.unary_response(answer, model, rid, created))
    else:
        pieces = [b"data: " + orjson.dumps(chunk) + b"\r\n\r\n"
                  for chunk in responder.stream_responses(answer, model, rid, created)]
        reply = Reply(200, pieces, SSE, entry=call.entry, streaming=True, headers=[(b"cache-control", b"no-cache")])
    if answer.chunk_delay is not None:
        reply.between = answer.chunk_delay
    if answer.burst:
        reply.burst()
    return reply


def _count(call: Call, backend: str, body: dict[str, Any]) -> Reply:
    request = body
    inner = body.get("generateContentRequest")
    if isinstance(inner, dict):
        if backend != "ai-studio" or "contents" in body:
            return _error(call, backend, 400, errors.google_error(400, "Invalid countTokens request."))
        request = inner
    elif backend == "ai-studio" and set(body) - {"contents"}:
        return _error(call, backend, 400, errors.google_error(
            400, "Invalid JSON payload received. systemInstruction/tools/generationConfig go in "
            "generateContentRequest."))
    try:
        total = responder.count_tokens(request)
    except RequestError as exc:
        return _error(call, backend, 400, errors.google_error(400, str(exc)))
    return call.json(200, {"totalTokens": total})


def _embedded(call: Call, answer: dict[str, Any]) -> Reply:
    """An embeddings answer. Google's name no id; a simulator started with
    --embed-response-ids gives them a `responseId` as generations have, so that a test can see
    the gateway pass such an id on."""
    if call.sim.embed_response_ids:
        rid = response_id(call.entry["seq"])
        answer["responseId"] = rid
        call.entry["trace_id"] = rid
    return call.json(200, answer)


def _embed(call: Call, backend: str, model: str, method: str, body: dict[str, Any]) -> Reply:
    bad = _error(call, backend, 400, errors.google_error(400, "Request contains an invalid argument."))
    if method == "batchEmbedContents" and backend == "ai-studio":
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            return bad
        if len(requests) > 100:
            return _error(call, backend, 400, errors.google_error(
                400, "* BatchEmbedContentsRequest.requests: at most 100 requests can be in one batch"))
        out = []
        for req in requests:
            if not isinstance(req, dict) or req.get("model") != f"models/{model}":
                return _error(call, backend, 400, errors.google_error(
                    400, "* BatchEmbedContentsRequest.requests: model must match the request path."))
            out.append({"values": vector(_texts(req.get("content")), _dims(model, req.get("outputDimensionality")))})
        return _embedded(call, {"embeddings": out})
    if method == "embedContent":
        content = body.get("content")
        if not isinstance(content, dict):
            return bad
        config = body.get("embedContentConfig") if backend != "ai-studio" else body
        dims = _dims(model, (config or {}).get("outputDimensionality"))
        text = _texts(content)
        return _embedded(call, {"embedding": {"values": vector(text, dims)},
                                "usageMetadata": {"promptTokenCount": word_count(text)}})
    if method == "predict" and backend != "ai-studio":
        instances = body.get("instances")
        if not isinstance(instances, list) or not instances:
            return bad
        if model == "gemini-embedding-001" and len(instances) > 1:
            return _error(call, backend, 400, errors.google_error(
                400, "gemini-embedding-001 takes only one instance per request."))
        params = body.get("parameters") or {}
        dims = _dims(model, params.get("outputDimensionality"))
        preds = [{"embeddings": {"values": vector(str(i.get("content", "")), dims),
                                 "statistics": {"token_count": word_count(str(i.get("content", ""))),
                                                "truncated": False}}} for i in instances if isinstance(i, dict)]
        return _embedded(call, {"predictions": preds, "metadata": {"billableCharacterCount": 0}})
    return _not_found(call, backend, model, method)

