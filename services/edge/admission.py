"""Admission of one generation request: estimate its cost, reserve it against the key's limits.

Every route that makes the backend generate calls `admit()` once, after it knows the model and
before any costly work (media fetching, the backend call). The reservation rides on the
request's `Meter`, which settles it when the request ends (services/edge/usage.py), on every
path: success, error, client gone.

The estimate is deliberately cheap (no tokenizer on the request path):
    prompt  = request body bytes / PROMPT_BYTES_PER_TOKEN (4: about one token per 4 bytes of
              English text and JSON; inline media counts by its base64 size, an over-estimate
              that only makes such requests wait for room)
    output  = the request's own cap (max_completion_tokens / max_tokens / maxOutputTokens), else
              the model's outputTokenLimit from the upstream's model list, else DEFAULT_OUTPUT_CAP
Only keys with a token quota or TPM need the output cap; for the others it is not looked up.
"""
from __future__ import annotations

from typing import Any

from services.edge import catalog
from services.edge.store import KeyRecord
from services.edge.upstream_errors import UpstreamError

PROMPT_BYTES_PER_TOKEN = 4
# Gemini 2.5 and 3 models' output limit, for a model the list does not know.
DEFAULT_OUTPUT_CAP = 65536


def prompt_estimate(body_bytes: int) -> int:
    return -(-body_bytes // PROMPT_BYTES_PER_TOKEN)


def _positive_int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def openai_output_cap(body: dict) -> int | None:
    """The output cap an OpenAI request asks for (chat: max_completion_tokens / max_tokens;
    Responses: max_output_tokens), or None."""
    for name in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        cap = _positive_int(body.get(name))
        if cap is not None:
            return cap
    return None


def gemini_output_cap(body: dict) -> int | None:
    """generationConfig.maxOutputTokens of a Gemini request (either spelling), or None."""
    config = body.get("generationConfig", body.get("generation_config"))
    if not isinstance(config, dict):
        return None
    return _positive_int(config.get("maxOutputTokens", config.get("max_output_tokens")))


async def model_output_cap(upstream, model: str) -> int:
    """The model's own output limit from the (cached) model list."""
    try:
        models = await upstream.list_models()
    except UpstreamError:
        return DEFAULT_OUTPUT_CAP
    m = catalog.find(models, model)
    return (m.output_token_limit if m is not None else 0) or DEFAULT_OUTPUT_CAP


def needs_estimate(key: KeyRecord) -> bool:
    return key.quota is not None or key.tpm is not None


async def admit(ctx, key: KeyRecord, meter, model: str, *, body_bytes: int = 0,
                max_output: int | None = None, generates: bool = True) -> None:
    """Refuse the request (ApiError) or reserve its estimated cost on `meter`.

    `body_bytes` is the size of the request body as received; `max_output` the output cap the
    request sets itself, if any; `generates=False` for calls whose cost is their input only
    (embeddings)."""
    prompt = prompt_estimate(body_bytes)
    estimate = 0
    if needs_estimate(key):
        estimate = prompt
        if generates:
            estimate += max_output or await model_output_cap(ctx.upstream, model)
    meter.reservation = await ctx.limiter.reserve(key, model, estimate, prompt=prompt)
