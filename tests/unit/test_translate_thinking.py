"""Thinking: model suffixes, reasoning_effort, the `thinking` body field and Google's
extra_body thinking_config → Gemini thinkingConfig, per model family (protocol §6, §8)."""
from __future__ import annotations

import pytest

from gemini_cli.upstream.v1 import upstream_pb2 as pb
from services.edge.catalog import thinking_spec
from services.edge.translate import ThinkingSpec, TranslationError, chat_request_to_gemini, split_model, thinking_config
from services.upstream.catalog import BUILTIN
from tests.unit.thinking_ranges import RANGES, spec_for


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("gemini-2.5-pro", ("gemini-2.5-pro", None)),
        ("gemini-2.5-pro-thinking", ("gemini-2.5-pro", "thinking")),
        ("gemini-2.5-flash-nothinking", ("gemini-2.5-flash", "nothinking")),
        ("gemini-3-pro-preview-maxthinking", ("gemini-3-pro-preview", "maxthinking")),
        ("models/gemini-2.5-flash-thinking", ("gemini-2.5-flash", "thinking")),
        ("models/gemini-2.5-flash", ("gemini-2.5-flash", None)),
        ("gemini-2.0-flash-thinking-exp", ("gemini-2.0-flash-thinking-exp", None)),
        ("-thinking", ("-thinking", None)),
    ],
)
def test_split_model(name, expected) -> None:
    assert split_model(name) == expected


def tc(model: str, suffix=None, effort=None, thinking=None, google=None):
    return thinking_config(spec_for(model), suffix=suffix, reasoning_effort=effort, thinking=thinking,
                           extra_google=google)


CASES = [
    # (model, suffix, reasoning_effort, thinking, extra_google, expected thinkingConfig)
    ("gemini-2.5-pro", None, None, None, None, None),
    ("gemini-2.5-pro", "thinking", None, None, None, {"includeThoughts": True}),
    ("gemini-2.5-pro", "nothinking", None, None, None, {"thinkingBudget": 128}),  # 2.5 Pro cannot turn it off
    ("gemini-2.5-flash", "nothinking", None, None, None, {"thinkingBudget": 0}),
    ("gemini-2.5-flash-lite", "nothinking", None, None, None, {"thinkingBudget": 0}),
    ("gemini-2.5-pro", "maxthinking", None, None, None, {"includeThoughts": True, "thinkingBudget": 32768}),
    ("gemini-2.5-flash", "maxthinking", None, None, None, {"includeThoughts": True, "thinkingBudget": 24576}),
    # Flash-Lite does not think by default: "thinking" switches dynamic thinking on.
    ("gemini-2.5-flash-lite", "thinking", None, None, None, {"includeThoughts": True, "thinkingBudget": -1}),
    ("gemini-3-pro-preview", "thinking", None, None, None, {"includeThoughts": True}),
    ("gemini-3-pro-preview", "nothinking", None, None, None, {"thinkingLevel": "LOW"}),
    ("gemini-3-flash-preview", "nothinking", None, None, None, {"thinkingLevel": "MINIMAL"}),
    ("gemini-3-pro-preview", "maxthinking", None, None, None, {"includeThoughts": True, "thinkingLevel": "HIGH"}),
    # reasoning_effort, Google's table: 2.5 budgets
    ("gemini-2.5-flash", None, "none", None, None, {"thinkingBudget": 0}),
    ("gemini-2.5-pro", None, "none", None, None, {"thinkingBudget": 128}),
    ("gemini-2.5-flash", None, "minimal", None, None, {"thinkingBudget": 1024}),
    ("gemini-2.5-flash", None, "low", None, None, {"thinkingBudget": 1024}),
    ("gemini-2.5-pro", None, "medium", None, None, {"thinkingBudget": 8192}),
    ("gemini-2.5-pro", None, "high", None, None, {"thinkingBudget": 24576}),
    ("gemini-2.5-flash-lite", None, "high", None, None, {"thinkingBudget": 24576}),
    ("gemini-2.5-pro", None, "xhigh", None, None, {"thinkingBudget": 32768}),
    ("gemini-2.5-pro", None, "HIGH", None, None, {"thinkingBudget": 24576}),
    # ... Gemini 3 levels, per model
    ("gemini-3-pro-preview", None, "minimal", None, None, {"thinkingLevel": "LOW"}),
    ("gemini-3-pro-preview", None, "low", None, None, {"thinkingLevel": "LOW"}),
    ("gemini-3-pro-preview", None, "medium", None, None, {"thinkingLevel": "HIGH"}),
    ("gemini-3-pro-preview", None, "high", None, None, {"thinkingLevel": "HIGH"}),
    ("gemini-3.1-pro-preview", None, "medium", None, None, {"thinkingLevel": "MEDIUM"}),
    ("gemini-3-flash-preview", None, "minimal", None, None, {"thinkingLevel": "MINIMAL"}),
    ("gemini-3-flash-preview", None, "medium", None, None, {"thinkingLevel": "MEDIUM"}),
    ("gemini-3.1-flash-lite", None, "low", None, None, {"thinkingLevel": "LOW"}),
    ("gemini-3-pro-preview", None, "none", None, None, {"thinkingLevel": "LOW"}),
    # the seed's `thinking` body field
    ("gemini-2.5-pro", None, None, True, None, {"includeThoughts": True}),
    ("gemini-2.5-flash", None, None, False, None, {"thinkingBudget": 0}),
    ("gemini-2.5-pro", None, None, {"type": "enabled", "budget_tokens": 2048}, None, {"includeThoughts": True, "thinkingBudget": 2048}),
    ("gemini-2.5-pro", None, None, {"type": "enabled", "budget_tokens": 10}, None, {"includeThoughts": True, "thinkingBudget": 128}),
    ("gemini-2.5-pro", None, None, {"type": "enabled", "budget_tokens": 100000}, None, {"includeThoughts": True, "thinkingBudget": 32768}),
    ("gemini-2.5-flash", None, None, {"type": "enabled", "budget_tokens": 100000}, None, {"includeThoughts": True, "thinkingBudget": 24576}),
    ("gemini-2.5-flash-lite", None, None, {"type": "enabled", "budget_tokens": 100}, None, {"includeThoughts": True, "thinkingBudget": 512}),
    ("gemini-2.5-flash", None, None, {"type": "enabled", "budget_tokens": -1}, None, {"includeThoughts": True, "thinkingBudget": -1}),
    ("gemini-2.5-pro", None, None, {"type": "enabled", "budget_tokens": 0}, None, {"includeThoughts": True, "thinkingBudget": 128}),
    ("gemini-2.5-pro", None, None, {"type": "enabled"}, None, {"includeThoughts": True}),
    ("gemini-2.5-flash", None, None, {"type": "disabled"}, None, {"thinkingBudget": 0}),
    ("gemini-3-pro-preview", None, None, {"type": "enabled", "budget_tokens": 500}, None, {"includeThoughts": True, "thinkingLevel": "LOW"}),
    ("gemini-3-flash-preview", None, None, {"type": "enabled", "budget_tokens": 4000}, None, {"includeThoughts": True, "thinkingLevel": "MEDIUM"}),
    ("gemini-3-pro-preview", None, None, {"type": "enabled", "budget_tokens": 4000}, None, {"includeThoughts": True, "thinkingLevel": "HIGH"}),
    ("gemini-3-flash-preview", None, None, {"type": "disabled"}, None, {"thinkingLevel": "MINIMAL"}),
    # Google's extra_body.google.thinking_config
    ("gemini-2.5-flash", None, None, None, {"thinking_config": {"thinking_budget": 3000, "include_thoughts": True}},
     {"includeThoughts": True, "thinkingBudget": 3000}),
    ("gemini-2.5-flash", None, None, None, {"thinking_config": {"thinking_budget": 99999}}, {"thinkingBudget": 24576}),
    ("gemini-2.5-pro", None, None, None, {"thinking_config": {"thinking_level": "low"}}, {"thinkingBudget": 1024}),
    ("gemini-3-pro-preview", None, None, None, {"thinking_config": {"thinking_level": "low", "include_thoughts": True}},
     {"includeThoughts": True, "thinkingLevel": "LOW"}),
    ("gemini-3-pro-preview", None, None, None, {"thinking_config": {"thinking_budget": 2048}}, {"thinkingBudget": 2048}),
    ("gemini-2.5-pro", None, None, None, {"thinkingConfig": {"includeThoughts": True}}, {"includeThoughts": True}),
    ("gemini-2.5-pro", None, "high", None, {"thinking_config": {"include_thoughts": True}}, {"includeThoughts": True, "thinkingBudget": 24576}),
    # explicit body fields win over the suffix, field by field
    ("gemini-2.5-pro", "nothinking", "high", None, None, {"thinkingBudget": 24576}),
    ("gemini-2.5-pro", "thinking", "low", None, None, {"includeThoughts": True, "thinkingBudget": 1024}),
    ("gemini-2.5-flash", "maxthinking", None, {"type": "disabled"}, None, {"thinkingBudget": 0}),
    ("gemini-2.5-flash", "thinking", None, None, {"thinking_config": {"include_thoughts": False}}, None),
    ("gemini-3-flash-preview", "maxthinking", "low", None, None, {"includeThoughts": True, "thinkingLevel": "LOW"}),
    ("gemini-2.5-pro", None, "high", True, None, {"includeThoughts": True, "thinkingBudget": 24576}),
    ("gemini-3-pro-preview", None, "low", {"type": "enabled"}, None, {"includeThoughts": True, "thinkingLevel": "LOW"}),
    # ... and the body `thinking` budget over reasoning_effort
    ("gemini-2.5-pro", None, "low", {"type": "enabled", "budget_tokens": 5000}, None, {"includeThoughts": True, "thinkingBudget": 5000}),
    # unknown families pass explicit budgets with the generic range
    ("gemini-2.0-pro", None, None, None, None, None),
    ("gemini-2.0-flash", "nothinking", None, None, None, {"thinkingBudget": 0}),
]


@pytest.mark.parametrize(("model", "suffix", "effort", "thinking", "google", "expected"), CASES)
def test_thinking_config(model, suffix, effort, thinking, google, expected) -> None:
    got = tc(model, suffix, effort, thinking, google)
    assert got == expected
    if got:
        assert not ("thinkingLevel" in got and "thinkingBudget" in got)  # the backend rejects both


@pytest.mark.parametrize(
    ("effort", "thinking", "google", "param"),
    [
        ("high", None, {"thinking_config": {"thinking_budget": 1024}}, "reasoning_effort"),
        ("low", None, {"thinking_config": {"thinking_level": "high"}}, "reasoning_effort"),
        ("extreme", None, None, "reasoning_effort"),
        (5, None, None, "reasoning_effort"),
        (None, "yes", None, "thinking"),
        (None, {"type": "sometimes"}, None, "thinking.type"),
        (None, {"type": "enabled", "budget_tokens": "lots"}, None, "thinking.budget_tokens"),
        (None, {"type": "enabled", "budget_tokens": -5}, None, "thinking.budget_tokens"),
        (None, {"type": "enabled", "budget_tokens": True}, None, "thinking.budget_tokens"),
        (None, {"type": "enabled", "budget_tokens": 2**40}, None, "thinking.budget_tokens"),
        (None, None, {"thinking_config": "on"}, "extra_body.google.thinking_config"),
        (None, None, {"thinking_config": {"thinking_budget": 1, "thinking_level": "low"}}, "extra_body.google.thinking_config"),
        (None, None, {"thinking_config": {"thinking_level": "ultra"}}, "extra_body.google.thinking_config.thinking_level"),
        (None, None, {"thinking_config": {"include_thoughts": "yes"}}, "extra_body.google.thinking_config.include_thoughts"),
    ],
)
def test_thinking_errors(effort, thinking, google, param) -> None:
    with pytest.raises(TranslationError) as info:
        tc("gemini-2.5-pro", None, effort, thinking, google)
    assert info.value.param == param


@pytest.mark.parametrize(
    ("body", "config", "include"),
    [
        ({"model": "gemini-2.5-pro-thinking"}, {"includeThoughts": True}, True),
        ({"model": "gemini-2.5-pro", "thinking": True}, {"includeThoughts": True}, True),
        ({"model": "gemini-2.5-flash", "reasoning_effort": "low"}, {"thinkingBudget": 1024}, False),
        # wire shape of the openai SDK's extra_body={"extra_body": {"google": ...}} (Google's documented form)
        ({"model": "gemini-2.5-flash", "extra_body": {"google": {"thinking_config": {"thinking_budget": 700, "include_thoughts": True}}}},
         {"includeThoughts": True, "thinkingBudget": 700}, True),
        # ... and of extra_body={"google": ...}
        ({"model": "gemini-2.5-flash", "google": {"thinking_config": {"thinking_budget": 700}}}, {"thinkingBudget": 700}, False),
        ({"model": "gemini-2.5-pro"}, None, False),
    ],
)
def test_thinking_through_the_request(body, config, include) -> None:
    req = chat_request_to_gemini({**body, "messages": [{"role": "user", "content": "hi"}]},
                                 thinking=spec_for(body["model"]))
    assert req.model == split_model(body["model"])[0]
    assert req.gemini.get("generationConfig", {}).get("thinkingConfig") == config
    assert req.include_thoughts is include


# --- ranges come from the upstream's catalogue ------------------------------------------------

def test_test_ranges_are_the_upstream_catalogue() -> None:
    """The ranges the tests use are what ListModels sends for these models today."""
    sent = {m.id: m.to_proto() for m in BUILTIN if m.thinking}
    shared = set(sent) & set(RANGES)
    assert shared, "the upstream catalogue lists none of the test models"
    for model_id in shared:
        assert sent[model_id].thinking == RANGES[model_id], model_id


@pytest.mark.parametrize(
    ("rng", "expected"),
    [
        (None, None),
        (pb.ThinkingRange(min_budget=128, max_budget=32768), ThinkingSpec(min_budget=128, max_budget=32768, can_disable=False)),
        (pb.ThinkingRange(min_budget=512, max_budget=24576, can_disable=True, default_off=True),
         ThinkingSpec(min_budget=512, max_budget=24576, can_disable=True, default_off=True)),
        # uses_level without a list: all four levels
        (pb.ThinkingRange(min_budget=128, max_budget=24576, uses_level=True),
         ThinkingSpec(levels=("MINIMAL", "LOW", "MEDIUM", "HIGH"), min_budget=128, max_budget=24576, can_disable=False)),
        (pb.ThinkingRange(uses_level=True, levels=["low", "HIGH", "ULTRA"]),
         ThinkingSpec(levels=("LOW", "HIGH"), min_budget=0, max_budget=0, can_disable=False)),
    ],
)
def test_spec_from_the_list_models_range(rng, expected) -> None:
    model = pb.Model(id="m", thinking=rng) if rng is not None else pb.Model(id="m")
    assert thinking_spec(model) == expected
    assert thinking_spec(None) is None


def test_a_range_the_catalogue_changes_changes_the_translation() -> None:
    """No second table: the same model name follows whatever range it is given."""
    wide = thinking_spec(pb.Model(id="gemini-2.5-pro", thinking=pb.ThinkingRange(min_budget=64, max_budget=65536)))
    assert thinking_config(wide, suffix="maxthinking", reasoning_effort=None, thinking=None, extra_google=None) == \
        {"includeThoughts": True, "thinkingBudget": 65536}
    assert thinking_config(spec_for("gemini-2.5-pro"), suffix="maxthinking", reasoning_effort=None, thinking=None,
                           extra_google=None) == {"includeThoughts": True, "thinkingBudget": 32768}


def test_a_model_name_is_not_a_range() -> None:
    with pytest.raises(TypeError):
        thinking_config("gemini-2.5-pro", suffix=None, reasoning_effort=None, thinking=None, extra_google=None)
