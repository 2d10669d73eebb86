"""Model ids as clients write them → one normalised form, the same on every route.

Every route passes the id it was given (body field or URL segment) through `parse_model`
before anything else looks at it: the allow-list, the ledger, the gRPC call. That gives

* validation before the gRPC call: at most MAX_MODEL_ID characters of [A-Za-z0-9._-] (the
  upstream's own rule), so an absurd id is a clear 400 instead of a gRPC metadata overflow;
* one spelling: surrounding whitespace and a `models/` prefix dropped, a thinking suffix
  (`-thinking`, `-nothinking`, `-maxthinking`) split off on every route;
* the id the request will really reach (`allow_list_id`): aliases (the upstream's
  MODEL_ALIASES, learnt from its ListModels answer, so there is one source of truth) are applied
  before the allow-list is checked, so a pattern such as `gemini-2.0-*` cannot admit the 2.5
  model an alias leads to.

The edge still sends the un-aliased base id; the upstream applies its map once, as before.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from services.edge.errors import ApiError
from services.edge.store import KeyRecord
from services.edge.translate.thinking import split_model
from services.edge.upstream_client import UpstreamClient
from services.edge.upstream_errors import UpstreamError

MAX_MODEL_ID = 128
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]*")


@dataclass(frozen=True, slots=True)
class ModelRef:
    requested: str  # as the client wrote it, trimmed (echoed back in OpenAI answers)
    base: str       # prefix and thinking suffix removed: what is sent to the upstream
    suffix: str | None


def parse_model(raw: object, *, param: str = "model") -> ModelRef:
    """The normalised model id, or a 400 naming what is wrong with it."""
    if not isinstance(raw, str) or not raw.strip():
        raise ApiError(400, f"'{param}' is required and must be a non-empty string", param=param,
                       code="invalid_type")
    text = raw.strip()
    if len(text) > MAX_MODEL_ID + len("models/"):
        raise ApiError(400, f"'{param}' is too long: a model id has at most {MAX_MODEL_ID} characters",
                       param=param, code="invalid_model")
    name = text.removeprefix("models/")
    if len(name) > MAX_MODEL_ID or not _ID.fullmatch(name):
        shown = name if len(name) <= 64 else name[:64] + "…"
        raise ApiError(400, f"invalid model id {shown!r}: use letters, digits, '.', '_' and '-'",
                       param=param, code="invalid_model")
    base, suffix = split_model(name)
    return ModelRef(requested=text, base=base, suffix=suffix)


async def allow_list_id(key: KeyRecord, ref: ModelRef, upstream: UpstreamClient) -> str:
    """The id the key's allow-list must judge: the base id after the upstream's aliases. Keys
    without an allow-list need no aliases (nothing is fetched for them). When the aliases
    cannot be had (the upstream is unreachable and nothing is cached) a model the base id does
    not admit is refused, and one it does admit waits for the upstream: never a guess."""
    if not key.models:
        return ref.base
    try:
        aliases = await upstream.aliases()
    except UpstreamError:
        if not key.allows_model(ref.base):
            return ref.base
        raise
    return aliases.get(ref.base, ref.base)
