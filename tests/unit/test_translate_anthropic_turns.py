"""What Claude Code 2.1.332 added to its Messages requests, translated to Gemini: deferred tools
and tool search (`defer_loading`, `tool_reference`), tools changed mid-conversation
(`tool_addition` / `tool_removal`) and per-message effort (a role "system" message's
`output_config`). The shapes are as the client sends them (captured against the gateway)."""
from __future__ import annotations

import orjson
import pytest

from services.edge.translate import signatures, tool_ids
from services.edge.translate.anthropic_request import count_tokens_body, messages_request_to_gemini
from services.edge.translate.errors import TranslationError
from tests.unit.test_translate_anthropic import BASH, BASH_DECL
from tests.unit.thinking_ranges import spec_for

SIG = "c2lnLWFiYw=="
SEARCH = {"name": "ToolSearch", "description": "Fetches full schema definitions for deferred tools so they can be called.",
          "input_schema": {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
                           "properties": {"query": {"type": "string"}, "max_results": {"default": 5, "type": "number"}},
                           "required": ["query"], "additionalProperties": False}}
SEARCH_DECL = {"name": "ToolSearch", "description": SEARCH["description"], "parameters": {
    "type": "object", "properties": {"query": {"type": "string"}, "max_results": {"type": "number"}}, "required": ["query"]}}
PLACEHOLDER = {"name": "DeferredToolPlaceholder", "defer_loading": True,
               "description": "Reserved placeholder that keeps deferred tool loading active; never call this tool.",
               "input_schema": {"type": "object", "properties": {}}}
MCP = {"name": "mcp__sim__sim-query", "description": "sim query: prints a marker", "defer_loading": True,
       "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}
MCP_DECL = {"name": "mcp__sim__sim-query", "description": "sim query: prints a marker",
            "parameters": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}
ENV = {"role": "system", "content": [{"type": "text", "text": "# Environment\nPlatform: linux",
                                      "cache_control": {"type": "ephemeral"}}], "output_config": {"effort": "medium"}}
CALL_ID = tool_ids.encode("call_1", SIG)


def _search_turns(result_content) -> list[dict]:
    """The turns after Claude Code's first one: the model called ToolSearch, the client answers."""
    return [
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "", "signature": signatures.pack(SIG)},
                                          {"type": "tool_use", "id": CALL_ID, "name": "ToolSearch",
                                           "input": {"query": "sim-query"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": CALL_ID, "content": result_content},
                                     {"type": "text", "text": "Tool loaded.", "cache_control": {"type": "ephemeral"}}]},
    ]


def _body(messages: list[dict], tools: list[dict], **extra) -> dict:
    return {"model": "claude-opus-5-5", "max_tokens": 128000, "stream": True, "tools": tools,
            "thinking": {"type": "adaptive", "display": "omitted"}, "output_config": {"effort": "medium"},
            "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
            "messages": [{"role": "user", "content": [{"type": "text", "text": "use ToolSearch"}]}, *messages], **extra}


def _gemini(body: dict, model: str = "gemini-2.5-pro") -> dict:
    return messages_request_to_gemini(body, model, thinking=spec_for(model)).gemini


def _declared(gemini: dict) -> list[dict]:
    return [d for tool in gemini.get("tools", []) for d in tool.get("functionDeclarations", [])]


# --- deferred tools and tool search ----------------------------------------------------------------

def test_deferred_tools_stay_out_until_loaded():
    gemini = _gemini(_body([ENV], [BASH, SEARCH, PLACEHOLDER, MCP]))
    assert _declared(gemini) == [BASH_DECL, SEARCH_DECL]
    assert gemini["systemInstruction"] == {"parts": [{"text": "# Environment\nPlatform: linux"}]}


def test_a_tool_reference_loads_the_tool_and_shows_its_definition():
    gemini = _gemini(_body([ENV, *_search_turns([{"type": "tool_reference", "tool_name": MCP["name"]}])],
                           [BASH, SEARCH, PLACEHOLDER, MCP]))
    assert _declared(gemini) == [BASH_DECL, SEARCH_DECL, MCP_DECL]
    result = gemini["contents"][-1]["parts"]
    assert result[1] == {"text": "Tool loaded."}
    output = result[0]["functionResponse"]["response"]["output"]
    assert output.startswith("<functions><function>") and output.endswith("</function></functions>")
    shown = orjson.loads(output.removeprefix("<functions><function>").removesuffix("</function></functions>"))
    assert shown == {"description": MCP["description"], "name": MCP["name"], "parameters": MCP["input_schema"]}
    assert result[0]["functionResponse"]["name"] == "ToolSearch"


def test_count_tokens_declares_the_loaded_tools_only():
    body = _body([ENV, *_search_turns([{"type": "tool_reference", "tool_name": MCP["name"]}])], [SEARCH, PLACEHOLDER, MCP])
    lead = count_tokens_body(body)["contents"][0]["parts"]
    declared = orjson.loads(lead[-1]["text"])
    assert [d["name"] for d in declared] == ["ToolSearch", "mcp__sim__sim-query"]


# --- tools changed mid-conversation ----------------------------------------------------------------

def test_tool_addition_and_removal_in_system_messages():
    changes = {"role": "system", "content": [
        {"type": "tool_addition", "tool": {"type": "tool_definition", "definition": {k: v for k, v in MCP.items()
                                                                                     if k != "defer_loading"}}},
        {"type": "tool_removal", "tool": {"type": "tool_reference", "name": "ToolSearch"}},
        {"type": "text", "text": "Tools changed."}]}
    gemini = _gemini(_body([changes], [BASH, SEARCH]))
    assert _declared(gemini) == [BASH_DECL, MCP_DECL]
    assert gemini["systemInstruction"] == {"parts": [{"text": "Tools changed."}]}


# --- per-message effort ----------------------------------------------------------------------------

USER = {"role": "user", "content": "next question"}
ANSWER = {"role": "assistant", "content": "an answer"}
RESULT_ONLY = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_9", "content": "ok"}]}
CALL = {"role": "assistant", "content": [{"type": "tool_use", "id": "call_9", "name": "Bash", "input": {"command": "ls"}}]}


def _effort(level: str, text: str = "") -> dict:
    return {"role": "system", "content": [{"type": "text", "text": text}] if text else [], "output_config": {"effort": level}}


@pytest.mark.parametrize("messages, level", [
    # right after the user turn with new input: the answer to it uses the new level
    ([_effort("low")], "LOW"),
    # Claude Code's environment message carries its effort
    ([_effort("low", "# Environment")], "LOW"),
    # between an answer and the next user turn: from that turn on
    ([ANSWER, _effort("low"), USER], "LOW"),
    # after the last answer: not in force yet
    ([ANSWER, _effort("low")], "HIGH"),
    # a user turn of tool results only is not new input
    ([CALL, _effort("low"), RESULT_ONLY], "HIGH"),
    ([CALL, RESULT_ONLY, _effort("low")], "HIGH"),
    # a level stays until a later message changes it
    ([_effort("low"), ANSWER, USER], "LOW"),
    ([_effort("low"), ANSWER, _effort("high"), USER], "HIGH"),
    ([_effort("high"), ANSWER, _effort("low"), USER, CALL, RESULT_ONLY], "LOW"),
])
def test_per_message_effort(messages, level):
    body = {"model": "claude-opus-5-5", "max_tokens": 1000, "thinking": {"type": "adaptive"}, "tools": [BASH],
            "output_config": {"effort": "high"}, "messages": [{"role": "user", "content": "plan it"}, *messages]}
    config = _gemini(body, "gemini-3-pro-preview")["generationConfig"]["thinkingConfig"]
    assert config == {"includeThoughts": True, "thinkingLevel": level}


def test_per_message_effort_without_a_top_level_one():
    body = {"model": "m", "max_tokens": 1000, "messages": [{"role": "user", "content": "q"}, _effort("low")]}
    assert _gemini(body, "gemini-2.5-flash")["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 1024}


@pytest.mark.parametrize("display, include", [("summarized", True), ("omitted", False), ("updates", False)])
def test_thinking_display(display, include):
    # Claude Code 2.1.332's interactive sessions send display "updates": the reasoning stays hidden
    body = {"model": "claude-opus-5-5", "max_tokens": 1000, "thinking": {"type": "adaptive", "display": display},
            "output_config": {"effort": "low"}, "messages": [{"role": "user", "content": "q"}]}
    config = _gemini(body, "gemini-3-pro-preview")["generationConfig"]["thinkingConfig"]
    assert config == ({"includeThoughts": True} if include else {}) | {"thinkingLevel": "LOW"}


def test_auto_mode_safeguards_are_left_to_the_client():
    # Interactive Claude Code in auto mode asks for a server-side review of its tool calls; with no
    # safeguard_results in the answer it asks the user instead, so the request is served as it is.
    safeguard = {"type": "dangerous_tool_use", "classifier_context": {"v": 1, "permission_mode": "auto",
                                                                      "rules": {"allow": [], "deny": [], "ask": []}}}
    body = _body([ENV], [BASH, SEARCH, PLACEHOLDER])
    assert _gemini({**body, "safeguards": [safeguard]}) == _gemini(body)


# --- what cannot be served is a 400 naming the parameter -------------------------------------------

@pytest.mark.parametrize("messages, tools, param", [
    (_search_turns([{"type": "tool_reference", "tool_name": "Nope"}]), [SEARCH], "messages[2].content[0].content[0].tool_name"),
    ([{"role": "system", "content": [{"type": "tool_removal", "tool": {"type": "tool_reference", "name": "Nope"}}]}],
     [BASH], "messages[1].content[0].tool.name"),
    ([{"role": "system", "content": [{"type": "tool_addition", "tool": {"type": "tool_definition",
                                                                         "definition": {"type": "bash_20250124", "name": "bash"}}}]}],
     [BASH], "messages[1].content[0].tool.definition.type"),
    ([{"role": "system", "content": [{"type": "tool_addition", "tool": {"name": "x"}}]}], [BASH], "messages[1].content[0].tool"),
    ([{"role": "system", "content": [], "output_config": {"effort": "extreme"}}], [BASH], "messages[1].output_config.effort"),
    ([{"role": "system", "content": [], "output_config": {"format": {"type": "json_schema", "schema": {}}}}], [BASH],
     "messages[1].output_config.format"),
    ([{"role": "assistant", "content": "x", "output_config": {"effort": "low"}}], [BASH], "messages[1].output_config"),
    ([{"role": "user", "content": [{"type": "tool_addition", "tool": {"type": "tool_definition", "definition": MCP}}]}],
     [BASH], "messages[1].content[0].type"),
])
def test_bad_turns_name_the_parameter(messages, tools, param):
    with pytest.raises(TranslationError) as exc:
        _gemini(_body(messages, tools))
    assert exc.value.param == param
