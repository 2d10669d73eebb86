"""OpenAI tools and tool_choice → Gemini functionDeclarations, built-in tools and toolConfig (pure).

Shared by every request translator: the Responses and Anthropic ones build the same
declarations (`declaration`) and calling config (`tool_config`) from their own shapes.
"""
from __future__ import annotations

from typing import Any

from msgspec import Raw

from .contents_writer import load_tool
from .errors import TranslationError
from .params import string
from .schema import SchemaBudget, to_gemini_schema

# "codeExecution", "code_execution", "CodeExecution" … all name the same built-in tool.
_BUILTIN_TOOLS = {
    "codeexecution": "codeExecution",
    "googlesearch": "googleSearch",
    "googlesearchretrieval": "googleSearch",
    "urlcontext": "urlContext",
}
_NATIVE_TOOL_KEYS = ("codeExecution", "googleSearch", "googleSearchRetrieval", "urlContext", "functionDeclarations")


def _builtin(name: str) -> str | None:
    return _BUILTIN_TOOLS.get(name.replace("_", "").replace("-", "").lower())


def _has_properties(params: Any) -> bool:
    return isinstance(params, dict) and bool(params.get("properties"))


def declaration(fn: Any, p: str, budget: SchemaBudget) -> dict:
    if not isinstance(fn, dict):
        raise TranslationError(f"{p} must be an object", p)
    name = string(fn.get("name"), f"{p}.name")
    if not name:
        raise TranslationError(f"{p}.name must not be empty", f"{p}.name")
    decl: dict = {"name": name}
    desc = fn.get("description")
    if desc is not None:
        decl["description"] = string(desc, f"{p}.description")
    params = fn.get("parameters")
    if params is not None:
        cleaned = to_gemini_schema(params, param=f"{p}.parameters", budget=budget)
        # Gemini rejects an OBJECT schema without properties: a no-argument function has none.
        if cleaned.get("properties"):
            decl["parameters"] = cleaned
    return decl


def chat_tools(body: dict, budget: SchemaBudget) -> tuple[list[dict], list[dict]]:
    """(function declarations, built-in tool objects)."""
    declarations: list[dict] = []
    builtins: dict[str, dict] = {}
    raw = body.get("tools")
    if raw is not None:
        if not isinstance(raw, list):
            raise TranslationError("tools must be an array", "tools")
        for j, tool in enumerate(raw):
            p = f"tools[{j}]"
            budget.charge(p, 1)
            if isinstance(tool, Raw):
                tool = load_tool(tool, p)
            if not isinstance(tool, dict):
                raise TranslationError(f"{p} must be an object", p)
            kind = tool.get("type")
            if kind is None and any(k in tool for k in _NATIVE_TOOL_KEYS):
                # A Gemini-native tool object sent as is.
                for key in _NATIVE_TOOL_KEYS:
                    if key == "functionDeclarations" and isinstance(tool.get(key), list):
                        budget.charge(p, len(tool[key]))
                        declarations.extend(declaration(fn, f"{p}.functionDeclarations[{k}]", budget) for k, fn in enumerate(tool[key]))
                    elif key in tool:
                        builtins[_builtin(key) or key] = tool[key] if isinstance(tool[key], dict) else {}
                continue
            if kind in (None, "function"):
                fn = tool.get("function")
                if not isinstance(fn, dict):
                    raise TranslationError(f"{p}.function must be an object", f"{p}.function")
                name = fn.get("name")
                builtin = _builtin(name) if isinstance(name, str) else None
                # The seed declares Gemini's code execution as a parameterless function; a real
                # client function that happens to share the name keeps its parameters and its role.
                if builtin and not _has_properties(fn.get("parameters")):
                    builtins[builtin] = {}
                else:
                    declarations.append(declaration(fn, f"{p}.function", budget))
            elif isinstance(kind, str) and _builtin(kind):
                cfg = tool.get(kind)
                builtins[_builtin(kind)] = cfg if isinstance(cfg, dict) else {}
            else:
                raise TranslationError(f"{p}.type {kind!r} is not supported (function, code_execution, google_search, url_context)", f"{p}.type")
    legacy = body.get("functions")
    if legacy is not None:
        if not isinstance(legacy, list):
            raise TranslationError("functions must be an array", "functions")
        for k, fn in enumerate(legacy):
            budget.charge(f"functions[{k}]", 1)
            declarations.append(declaration(load_tool(fn, f"functions[{k}]") if isinstance(fn, Raw) else fn,
                                            f"functions[{k}]", budget))
    seen: set[str] = set()
    for decl in declarations:
        if decl["name"] in seen:
            raise TranslationError(f"function {decl['name']!r} is declared twice", "tools")
        seen.add(decl["name"])
    return declarations, [{key: cfg} for key, cfg in builtins.items()]


def _named(choice: dict, p: str) -> str:
    fn = choice.get("function")
    name = fn.get("name") if isinstance(fn, dict) else choice.get("name")
    if not isinstance(name, str) or not name:
        raise TranslationError(f"{p}.function.name is required", f"{p}.function.name")
    return name


def tool_config(body: dict, declarations: list[dict]) -> tuple[dict | None, set[str] | None]:
    """(functionCallingConfig, names to keep when the choice narrows the tools without forcing)."""
    key = "tool_choice"
    choice = body.get(key)
    if choice is None and body.get("function_call") is not None:
        key, choice = "function_call", body.get("function_call")
    if choice is None or not declarations:
        return None, None
    declared = {d["name"] for d in declarations}

    def check(names: list[str]) -> list[str]:
        for n in names:
            if n not in declared:
                raise TranslationError(f"{key} names function {n!r}, which is not among the tools", key)
        return names

    if isinstance(choice, str):
        mode = {"none": "NONE", "auto": "AUTO", "required": "ANY", "any": "ANY"}.get(choice.lower())
        if mode is None:
            raise TranslationError(f"{key} must be none, auto, required or a named function", key)
        return {"mode": mode}, None
    if not isinstance(choice, dict):
        raise TranslationError(f"{key} must be a string or an object", key)
    kind = choice.get("type", "function")
    if kind == "function":
        return {"mode": "ANY", "allowedFunctionNames": check([_named(choice, key)])}, None
    if kind == "allowed_tools":
        allowed = choice.get("allowed_tools")
        if not isinstance(allowed, dict) or not isinstance(allowed.get("tools"), list):
            raise TranslationError(f"{key}.allowed_tools.tools must be an array", f"{key}.allowed_tools.tools")
        names = check([_named(t, f"{key}.allowed_tools.tools[{k}]") for k, t in enumerate(allowed["tools"]) if isinstance(t, dict)])
        if allowed.get("mode", "auto") == "required":
            return {"mode": "ANY", "allowedFunctionNames": names}, None
        # Gemini only restricts names in ANY mode; for auto the other declarations are left out.
        return {"mode": "AUTO"}, set(names)
    raise TranslationError(f"{key}.type {kind!r} is not supported", f"{key}.type")

