"""The upstream's model list in each API's list format (pure functions)."""
from __future__ import annotations

from typing import Iterable, Sequence

from gemini_cli.upstream.v1 import upstream_pb2 as pb
from services.edge.store import model_allowed
from services.edge.translate.thinking import LEVELS, ThinkingSpec

THINKING_SUFFIXES = ("thinking", "nothinking", "maxthinking")
GENERATION_METHODS = ["generateContent", "streamGenerateContent", "countTokens"]
EMBEDDING_METHODS = ["embedContent", "batchEmbedContents"]
# OpenAI's model objects need a creation time; the upstream does not know one.
_CREATED = 1735689600  # 2025-01-01


def visible(models: Iterable[pb.Model], allow: Sequence[str]) -> list[pb.Model]:
    return [m for m in models if model_allowed(allow, m.id)]


def has_thinking(m: pb.Model) -> bool:
    return m.HasField("thinking")


def is_embedding(m: pb.Model) -> bool:
    return m.embedding


def thinking_spec(m: pb.Model | None) -> ThinkingSpec | None:
    """The model's thinking range as the translators take it; None when the catalogue has none."""
    if m is None or not m.HasField("thinking"):
        return None
    t = m.thinking
    levels = tuple(lv.upper() for lv in t.levels if lv.upper() in LEVELS) or (LEVELS if t.uses_level else ())
    return ThinkingSpec(levels=levels or None, min_budget=t.min_budget, max_budget=t.max_budget,
                        can_disable=t.can_disable, default_off=t.default_off)


def google_model(m: pb.Model) -> dict:
    d = {
        "name": f"models/{m.id}",
        "baseModelId": m.id,
        "version": m.id,
        "displayName": m.display_name or m.id,
        "description": f"{m.display_name or m.id} served through the gemini-cli gateway",
        "inputTokenLimit": m.input_token_limit,
        "outputTokenLimit": m.output_token_limit,
    }
    if is_embedding(m):
        # As Google lists its embedding models: no sampling parameters, no thinking.
        d["supportedGenerationMethods"] = list(EMBEDDING_METHODS)
        return d
    d |= {
        "supportedGenerationMethods": list(GENERATION_METHODS),
        "temperature": 1.0,
        "maxTemperature": 2.0,
        "topP": 0.95,
        "topK": 64,
        "thinking": has_thinking(m),
    }
    return d


def google_list(models: Iterable[pb.Model]) -> dict:
    return {"models": [google_model(m) for m in models]}


def openai_ids(m: pb.Model) -> list[str]:
    ids = [m.id]
    if has_thinking(m):
        ids += [f"{m.id}-{s}" for s in THINKING_SUFFIXES]
    return ids


def openai_model(model_id: str) -> dict:
    return {"id": model_id, "object": "model", "created": _CREATED, "owned_by": "google"}


def openai_list(models: Iterable[pb.Model]) -> dict:
    return {"object": "list", "data": [openai_model(i) for m in models for i in openai_ids(m)]}


def find(models: Iterable[pb.Model], model_id: str) -> pb.Model | None:
    for m in models:
        if m.id == model_id:
            return m
    return None
