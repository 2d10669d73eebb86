"""Thinking ranges as the upstream's ListModels sends them, for the translator tests.

The edge has no table of its own: the translators take a model's range as an argument. These are
the `ThinkingRange` messages of the upstream's catalogue for the models the tests name
(test_translate_thinking checks they still agree with services/upstream/catalog.py).
"""
from __future__ import annotations

from gemini_cli.upstream.v1 import upstream_pb2 as pb
from services.edge.catalog import thinking_spec
from services.edge.translate.thinking import ThinkingSpec, split_model

_ALL = ["MINIMAL", "LOW", "MEDIUM", "HIGH"]

RANGES: dict[str, pb.ThinkingRange] = {
    "gemini-2.5-pro": pb.ThinkingRange(min_budget=128, max_budget=32768, can_disable=False),
    "gemini-2.5-flash": pb.ThinkingRange(min_budget=0, max_budget=24576, can_disable=True),
    "gemini-2.5-flash-lite": pb.ThinkingRange(min_budget=512, max_budget=24576, can_disable=True, default_off=True),
    "gemini-3-pro-preview": pb.ThinkingRange(min_budget=128, max_budget=32768, uses_level=True, levels=["LOW", "HIGH"]),
    "gemini-3-flash-preview": pb.ThinkingRange(min_budget=128, max_budget=24576, uses_level=True, levels=_ALL),
    "gemini-3.1-pro-preview": pb.ThinkingRange(min_budget=128, max_budget=32768, uses_level=True,
                                               levels=["LOW", "MEDIUM", "HIGH"]),
    "gemini-3.1-flash-lite": pb.ThinkingRange(min_budget=128, max_budget=24576, uses_level=True, levels=_ALL),
}


def model_entry(model_id: str) -> pb.Model | None:
    """The ListModels entry for a model (None: not in the catalogue, e.g. gemini-2.0-pro)."""
    rng = RANGES.get(model_id)
    return pb.Model(id=model_id, display_name=model_id, thinking=rng) if rng is not None else None


def spec_for(model: str) -> ThinkingSpec | None:
    """What the edge passes to the translators for a requested model name (suffix and all)."""
    return thinking_spec(model_entry(split_model(model)[0]))
