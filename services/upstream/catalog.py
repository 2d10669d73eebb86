"""The models the pool offers, with their limits and thinking ranges (protocol notes §6).

Ids are the ones the current Gemini CLI lists (backends.md §3, §4), each with the backends
that serve it: Code Assist knows gemini-3-flash (what the CLI's gemini-3.5-flash becomes
there), AI Studio and Vertex AI serve the embedding models. ListModels shows the models some
member of the pool can serve. The catalog does not gate calls: an id missing here is still
sent to the backend, whose 404 becomes NOT_FOUND. The MODELS setting adds ids (for every
backend).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from gemini_cli.upstream.v1 import upstream_pb2


@dataclass(frozen=True)
class Thinking:
    min_budget: int
    max_budget: int
    can_disable: bool
    uses_level: bool
    # thinkingLevel values accepted, lowest first (empty: all four when uses_level).
    levels: tuple[str, ...] = ()
    # Does not think unless asked.
    default_off: bool = False


CODE_ASSIST = "gemini-cli-oauth"
AI_STUDIO = "ai-studio-key"
VERTEX = "vertex-ai"
ALL_KINDS = frozenset({CODE_ASSIST, AI_STUDIO, VERTEX})
CLOUD = frozenset({AI_STUDIO, VERTEX})


@dataclass(frozen=True)
class ModelInfo:
    id: str
    display_name: str
    input_token_limit: int = 1_048_576
    output_token_limit: int = 65_536
    thinking: Thinking | None = None
    kinds: frozenset[str] = ALL_KINDS
    embedding: bool = False

    def to_proto(self) -> upstream_pb2.Model:
        msg = upstream_pb2.Model(id=self.id, display_name=self.display_name,
                                 input_token_limit=self.input_token_limit, output_token_limit=self.output_token_limit,
                                 embedding=self.embedding)
        if self.thinking:
            t = self.thinking
            msg.thinking.CopyFrom(upstream_pb2.ThinkingRange(min_budget=t.min_budget, max_budget=t.max_budget,
                                                             can_disable=t.can_disable, uses_level=t.uses_level,
                                                             levels=list(t.levels), default_off=t.default_off))
        return msg


# Gemini docs' thinking table (2025-11-18): 2.5 Pro 128–32768, cannot disable; 2.5 Flash
# 0–24576; 2.5 Flash-Lite 512–24576, off by 0 and off by default; Gemini 3 takes thinkingLevel
# (a budget is accepted but discouraged) and cannot switch thinking off. 3 Pro knows low/high,
# 3.1 Pro adds medium, the Flash models take all four levels.
_PRO_25 = Thinking(128, 32768, can_disable=False, uses_level=False)
_FLASH_25 = Thinking(0, 24576, can_disable=True, uses_level=False)
_LITE_25 = Thinking(512, 24576, can_disable=True, uses_level=False, default_off=True)
_PRO_3 = Thinking(128, 32768, can_disable=False, uses_level=True, levels=("LOW", "HIGH"))
_PRO_31 = Thinking(128, 32768, can_disable=False, uses_level=True, levels=("LOW", "MEDIUM", "HIGH"))
_FLASH_3 = Thinking(128, 24576, can_disable=False, uses_level=True, levels=("MINIMAL", "LOW", "MEDIUM", "HIGH"))

BUILTIN: tuple[ModelInfo, ...] = (
    ModelInfo("gemini-2.5-pro", "Gemini 2.5 Pro", thinking=_PRO_25),
    ModelInfo("gemini-2.5-flash", "Gemini 2.5 Flash", thinking=_FLASH_25),
    ModelInfo("gemini-2.5-flash-lite", "Gemini 2.5 Flash-Lite", thinking=_LITE_25),
    ModelInfo("gemini-3-pro-preview", "Gemini 3 Pro Preview", thinking=_PRO_3),
    ModelInfo("gemini-3-flash-preview", "Gemini 3 Flash Preview", thinking=_FLASH_3),
    ModelInfo("gemini-3.1-pro-preview", "Gemini 3.1 Pro Preview", thinking=_PRO_31),
    ModelInfo("gemini-3.1-pro-preview-customtools", "Gemini 3.1 Pro Preview (custom tools)", thinking=_PRO_31),
    ModelInfo("gemini-3.1-flash-lite", "Gemini 3.1 Flash-Lite", thinking=_FLASH_3),
    ModelInfo("gemini-3.1-flash-lite-preview", "Gemini 3.1 Flash-Lite Preview", thinking=_FLASH_3),
    # The CLI's "flash"; Code Assist serves it as gemini-3-flash (code_assist_backend.MODEL_MAPPINGS).
    ModelInfo("gemini-3.5-flash", "Gemini 3.5 Flash", thinking=_FLASH_3),
    ModelInfo("gemini-3-flash", "Gemini 3 Flash", thinking=_FLASH_3, kinds=frozenset({CODE_ASSIST})),
    ModelInfo("gemma-4-31b-it", "Gemma 4 31B IT", input_token_limit=262_144, output_token_limit=32_768),
    ModelInfo("gemma-4-26b-a4b-it", "Gemma 4 26B A4B IT", input_token_limit=262_144, output_token_limit=32_768),
    ModelInfo("gemini-embedding-001", "Gemini Embedding 001", input_token_limit=2048, output_token_limit=1,
              kinds=CLOUD, embedding=True),
    ModelInfo("text-embedding-005", "Text Embedding 005", input_token_limit=2048, output_token_limit=1,
              kinds=frozenset({VERTEX}), embedding=True),
)


def _thinking(value: Any) -> Thinking | None:
    if not isinstance(value, dict):
        return None
    levels = value.get("levels") or ()
    return Thinking(int(value.get("min_budget", 0)), int(value.get("max_budget", 0)),
                    bool(value.get("can_disable", False)), bool(value.get("uses_level", False)),
                    tuple(str(x).upper() for x in levels), bool(value.get("default_off", False)))


def _extra(entry: Any) -> ModelInfo:
    if isinstance(entry, str):
        entry = {"id": entry}
    if isinstance(entry, dict) and isinstance(entry.get("id"), str):
        # Google's embedding model ids all say so; an entry can say otherwise with "embedding".
        embedding = bool(entry.get("embedding", "embedding" in entry["id"]))
        return ModelInfo(entry["id"], str(entry.get("display_name") or entry["id"]),
                         int(entry.get("input_token_limit", 1_048_576)),
                         int(entry.get("output_token_limit", 65_536)), _thinking(entry.get("thinking")),
                         kinds=CLOUD if embedding else ALL_KINDS, embedding=embedding)
    raise ValueError(f"MODELS entry must be an id or an object with an id: {entry!r}")


def build_catalog(extra: Iterable[Any] = ()) -> list[ModelInfo]:
    """Built-in models, then MODELS entries (an entry with a built-in id replaces it)."""
    models = {m.id: m for m in BUILTIN}
    for entry in extra:
        info = _extra(entry)
        models[info.id] = info
    return list(models.values())
