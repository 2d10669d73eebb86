"""The tools of an Anthropic Messages request → Gemini declarations (pure).

Gemini takes one list of declarations per request; Anthropic's tool list can change along the
conversation, and the declarations sent are the list as it stands at its end:

* `tools[]` custom tools (type absent or "custom") → functionDeclarations; web_search server
  tools → googleSearch; other server tools are refused (400);
* `defer_loading: true` tools (tool search, as Claude Code ≥ 2.1.3xx sends them) stay out of the
  model's sight until a tool_result loads them with a `tool_reference` block; that block gives
  the model the tool's definition as text, and the tool is declared from then on;
* role "system" messages with `tool_addition` / `tool_removal` blocks (the
  mid-conversation-tool-changes beta) add a tool definition or take a tool away.
"""
from __future__ import annotations

from typing import Any

import orjson

from .errors import TranslationError
from .openai_tools import declaration
from .params import string
from .schema import SchemaBudget

__all__ = ["Toolset", "tool_choice"]


class Toolset:
    def __init__(self, raw: Any) -> None:
        self._tools: dict[str, dict] = {}  # name → the client's definition, in declaration order
        self._deferred: set[str] = set()  # declared with defer_loading and not loaded yet
        self._paths: dict[str, str] = {}  # name → where it was defined, for error params
        self.builtins: list[dict] = []
        if raw is None:
            return
        if not isinstance(raw, list):
            raise TranslationError("tools must be an array", "tools")
        for j, tool in enumerate(raw):
            p = f"tools[{j}]"
            if not isinstance(tool, dict):
                raise TranslationError(f"{p} must be an object", p)
            kind = tool.get("type")
            if isinstance(kind, str) and kind.startswith("web_search"):
                if {"googleSearch": {}} not in self.builtins:
                    self.builtins.append({"googleSearch": {}})
            elif kind in (None, "custom"):
                self._add(tool, p, initial=True)
            else:
                raise TranslationError(f"{p}.type {kind!r}: server tools other than web_search are not supported", f"{p}.type")

    def _add(self, tool: dict, p: str, *, initial: bool = False) -> None:
        """An addition mid-conversation may redefine a tool; the initial list may not."""
        name = string(tool.get("name"), f"{p}.name")
        if not name:
            raise TranslationError(f"{p}.name must not be empty", f"{p}.name")
        if initial and name in self._tools:
            raise TranslationError("a tool name is declared twice", "tools")
        self._tools[name] = tool
        self._paths[name] = p
        if tool.get("defer_loading") is True:
            self._deferred.add(name)
        else:
            self._deferred.discard(name)

    # -- changes along the conversation ----------------------------------------------------

    def change(self, block: dict, p: str) -> None:
        """A system message's tool_addition / tool_removal block."""
        tool = block.get("tool")
        if not isinstance(tool, dict):
            raise TranslationError(f"{p}.tool must be an object", f"{p}.tool")
        if block["type"] == "tool_addition":
            definition = tool.get("definition")
            if tool.get("type") != "tool_definition" or not isinstance(definition, dict):
                raise TranslationError(f'{p}.tool must be {{"type": "tool_definition", "definition": {{...}}}}', f"{p}.tool")
            if definition.get("type") not in (None, "custom"):
                raise TranslationError(f"{p}.tool.definition.type {definition.get('type')!r}: only custom tools can be "
                                       "added mid-conversation", f"{p}.tool.definition.type")
            self._add(definition, f"{p}.tool.definition")
            return
        name = tool.get("name")
        if tool.get("type") != "tool_reference" or not isinstance(name, str):
            raise TranslationError(f'{p}.tool must be {{"type": "tool_reference", "name": ...}}', f"{p}.tool")
        if self._tools.pop(name, None) is None:
            raise TranslationError(f"{p}.tool.name {name!r} is not a tool of this request", f"{p}.tool.name")
        self._deferred.discard(name)

    def load(self, block: dict, p: str) -> str:
        """A tool_result's tool_reference block: the tool is declared from now on, and the model
        reads its definition in the result (the text Anthropic's tool search expands it to)."""
        name = block.get("tool_name")
        tool = self._tools.get(name) if isinstance(name, str) else None
        if tool is None:
            raise TranslationError(f"{p}.tool_name {name!r} is not a tool of this request", f"{p}.tool_name")
        self._deferred.discard(name)
        shown = {k: tool[k] for k in ("description", "name") if k in tool}
        shown["parameters"] = tool.get("input_schema") or {}
        return f"<functions><function>{orjson.dumps(shown).decode()}</function></functions>"

    # -- what is declared ------------------------------------------------------------------

    def declarations(self, budget: SchemaBudget) -> list[dict]:
        out = []
        for name, tool in self._tools.items():
            if name in self._deferred:
                continue
            fn = {"name": name, "description": tool.get("description"), "parameters": tool.get("input_schema")}
            out.append(declaration({k: v for k, v in fn.items() if v is not None}, self._paths[name], budget))
        return out


def tool_choice(body: dict) -> Any:
    """Anthropic's tool_choice in OpenAI's terms (what gemini_request.add_tools reads)."""
    choice = body.get("tool_choice")
    if choice is None:
        return None
    if not isinstance(choice, dict):
        raise TranslationError("tool_choice must be an object like {\"type\": \"auto\"}", "tool_choice")
    kind = choice.get("type")
    if kind == "tool":
        return {"type": "function", "name": choice.get("name")}
    mapped = {"auto": "auto", "any": "required", "none": "none"}.get(kind)  # type: ignore[arg-type]
    if mapped is None:
        raise TranslationError("tool_choice.type must be auto, any, tool or none", "tool_choice.type")
    return mapped
