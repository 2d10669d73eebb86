"""Embeddings, under the same keys, allow-lists, limits and ledger as generation.

    POST /v1/embeddings                                          OpenAI (route here)
    POST /{v1beta,v1,v1alpha}/models/{model}:embedContent        Gemini-native (the Gemini
    POST /{v1beta,v1,v1alpha}/models/{model}:batchEmbedContents  router's models/{target}
                                                                 route hands them to `native`)

All three become one Embed RPC carrying a Gemini batchEmbedContents body; the upstream sends it
to a pool member whose backend has embeddings (AI Studio, Vertex AI — Code Assist has none).
When the pool has none for the model the client gets a 404 model_not_found in its API's format.
"""
from __future__ import annotations

import logging

import grpc
import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from gemini_cli.upstream.v1 import upstream_pb2 as pb
from services.edge.apidoc import operations as api_doc
from services.edge.apidoc.common import documented
from services.edge.admission import admit
from services.edge.auth import authenticate
from services.edge.body import parse_object, read_body
from services.edge.context import EdgeContext, get_ctx, request_id
from services.edge.errors import ApiError
from services.edge.models import MAX_MODEL_ID, ModelRef, allow_list_id, parse_model
from services.edge.store import KeyRecord
from services.edge.streaming import unless_disconnected, with_trace
from services.edge.translate.embeddings import (batch_embed_to_batch, embed_content_response,
                                                embed_content_to_batch, embeddings_request_to_gemini,
                                                embeddings_response)
from services.edge.translate.errors import TranslationError
from services.edge.upstream_errors import UpstreamError
from services.edge.upstream_stream import Usage
from services.edge.usage import Meter, metered

log = logging.getLogger("edge.embeddings")
router = APIRouter()

# The pool has no member with embeddings (FAILED_PRECONDITION + NO_EMBEDDINGS_MEMBER), or an
# upstream without the Embed RPC (UNIMPLEMENTED): for the client, the model is not found here.
_NO_EMBEDDINGS_REASON = "no_embeddings_member"


def _not_served(exc: UpstreamError, model: str) -> ApiError | None:
    if exc.grpc_code == grpc.StatusCode.NOT_FOUND:
        return ApiError(404, exc.message, param="model", code="model_not_found")
    if exc.grpc_code == grpc.StatusCode.UNIMPLEMENTED or (exc.reason or "").lower() == _NO_EMBEDDINGS_REASON:
        return ApiError(404, f"no backend of this gateway serves embeddings for model '{model}' (embeddings "
                             "need an AI Studio or Vertex AI credential in the pool)", param="model",
                        code="model_not_found")
    return None


async def _embed(request: Request, ctx: EdgeContext, key: KeyRecord, meter: Meter, batch: dict) -> pb.EmbedResponse:
    try:
        resp = await unless_disconnected(request, ctx.upstream.embed(
            meter.model, orjson.dumps(batch), request_id=meter.request_id, caller=key.name))
    except UpstreamError as exc:
        # Not bound to a local: this frame, in the error's traceback, would hold the error (a
        # reference cycle only the cyclic GC frees).
        raise (_not_served(exc, meter.model) or exc) from None
    meter.served_by(resp.credential_kind, resp.credential_id)
    meter.trace_id = resp.trace_id
    return resp


def _usage(resp: pb.EmbedResponse) -> Usage:
    return Usage(prompt=resp.prompt_tokens, total=resp.prompt_tokens)


def _bad_answer(meter: Meter, resp: pb.EmbedResponse, exc: Exception) -> ApiError:
    log.error("embeddings answer not usable (request %s): %s", meter.request_id, exc)
    meter.finish(502, _usage(resp))
    return ApiError(502, "the backend's embeddings answer could not be read")


def _translation_error(exc: TranslationError) -> ApiError:
    return ApiError(400, exc.message, param=exc.param, code=exc.code)


def _model_ref(raw: object, meter: Meter) -> ModelRef:
    ref = parse_model(raw)
    meter.model = ref.base
    if ref.suffix is not None:
        raise ApiError(400, f"'{ref.requested}': thinking suffixes do not apply to embedding models",
                       param="model", code="invalid_model")
    return ref


async def _admit(ctx: EdgeContext, key: KeyRecord, meter: Meter, ref: ModelRef, body_bytes: int) -> None:
    # Same admission as generation (allow-list after aliases, RPM, quota/TPM reservation);
    # an embedding costs its input tokens only.
    await admit(ctx, key, meter, await allow_list_id(key, ref, ctx.upstream), body_bytes=body_bytes,
                generates=False)


# --- OpenAI ------------------------------------------------------------------------------------------

async def openai_embeddings(request: Request) -> Response:
    key = await authenticate(request)
    ctx = get_ctx(request)
    meter = Meter(ctx.recorder, key.id, "openai", "embed", "", request_id(request))
    return await metered(meter, _openai(request, ctx, key, meter))


async def _openai(request: Request, ctx: EdgeContext, key: KeyRecord, meter: Meter) -> Response:
    raw = await read_body(request, ctx.settings.max_body_bytes)
    body_bytes = len(raw)
    body = parse_object(raw)
    del raw
    ref = _model_ref(body.get("model"), meter)
    try:
        req = embeddings_request_to_gemini({**body, "model": ref.base})
    except TranslationError as exc:
        raise _translation_error(exc) from None
    del body
    await _admit(ctx, key, meter, ref, body_bytes)
    resp = await _embed(request, ctx, key, meter, req.batch)
    try:
        out = embeddings_response(orjson.loads(resp.body.data), req, model=req.model,
                                  prompt_tokens=resp.prompt_tokens)
    except ValueError as exc:  # orjson.JSONDecodeError is one too
        raise _bad_answer(meter, resp, exc) from None
    meter.finish(200, _usage(resp))
    return Response(orjson.dumps(out), media_type="application/json",
                    headers=with_trace({"x-request-id": meter.request_id}, resp.trace_id))


# --- Gemini-native ---------------------------------------------------------------------------------

NATIVE_METHODS = ("embedContent", "batchEmbedContents")


async def native(request: Request, key: KeyRecord, ctx: EdgeContext, model: str, method: str) -> Response:
    """models/{model}:embedContent or :batchEmbedContents, authenticated and parsed by the caller."""
    meter = Meter(ctx.recorder, key.id, "gemini", "embed", model[:MAX_MODEL_ID], request_id(request))
    return await metered(meter, _native_call(request, ctx, key, meter, model, method == "batchEmbedContents"))


async def _native_call(request: Request, ctx: EdgeContext, key: KeyRecord, meter: Meter, model: str,
                       batch_call: bool) -> Response:
    ref = _model_ref(model, meter)
    raw = await read_body(request, ctx.settings.max_body_bytes)
    body_bytes = len(raw)
    body = parse_object(raw)
    del raw
    try:
        if batch_call:
            batch, _count = batch_embed_to_batch(ref.base, body)
        else:
            batch = embed_content_to_batch(ref.base, body)
    except TranslationError as exc:
        raise _translation_error(exc) from None
    del body
    await _admit(ctx, key, meter, ref, body_bytes)
    resp = await _embed(request, ctx, key, meter, batch)
    headers = with_trace({"x-request-id": meter.request_id}, resp.trace_id)
    if batch_call:
        # Google's batchEmbedContents shape already: sent on as the upstream produced it.
        meter.finish(200, _usage(resp))
        return Response(resp.body.data, media_type="application/json", headers=headers)
    try:
        out = embed_content_response(orjson.loads(resp.body.data))
    except ValueError as exc:
        raise _bad_answer(meter, resp, exc) from None
    meter.finish(200, _usage(resp))
    return Response(orjson.dumps(out), media_type="application/json", headers=headers)


# A plain Starlette route with authentication called explicitly (see routes/gemini.py for why).
documented(api_doc.EMBEDDINGS)(openai_embeddings)
router.add_route("/v1/embeddings", openai_embeddings, methods=["POST"], name="openai_embeddings",
                 include_in_schema=False)
