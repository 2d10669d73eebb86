"""Reading a Gemini GenerateContentRequest: its texts, config, tools, and fields in either JSON spelling.

Pure functions, shared by validation (validation.py) and the answer (responder.py).
"""
from __future__ import annotations

import binascii
from typing import Any


class RequestError(ValueError):
    """The request is invalid; the message becomes a 400 INVALID_ARGUMENT."""


def word_count(text: str) -> int:
    return len(text.split())


def decode_base64(data: str) -> bytes:
    # Google's JSON parser accepts both alphabets and missing padding.
    if "-" in data or "_" in data:
        data = data.replace("-", "+").replace("_", "/")
    if len(data) % 4:
        data += "=" * (-len(data) % 4)
    return binascii.a2b_base64(data, strict_mode=True)


def texts(parts: Any) -> list[str]:
    if not isinstance(parts, list):
        return []
    return [p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)]


def last_user_turn(contents: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The last turn not written by the model (role user, function, or none)."""
    for content in reversed(contents):
        if content.get("role") != "model":
            return content
    return None


def system_text(request: dict[str, Any]) -> str:
    sys_inst = request.get("systemInstruction")
    if isinstance(sys_inst, dict):
        return "\n".join(texts(sys_inst.get("parts")))
    if isinstance(sys_inst, str):
        return sys_inst
    return ""


def gen_config(request: dict[str, Any]) -> dict[str, Any]:
    cfg = request.get("generationConfig")
    return cfg if isinstance(cfg, dict) else {}


def thinking(request: dict[str, Any]) -> dict[str, Any]:
    cfg = gen_config(request).get("thinkingConfig")
    return cfg if isinstance(cfg, dict) else {}


def function_declarations(request: dict[str, Any]) -> list[dict[str, Any]]:
    decls: list[dict[str, Any]] = []
    for tool in request.get("tools") or []:
        if isinstance(tool, dict):
            decls.extend(d for d in tool.get("functionDeclarations") or [] if isinstance(d, dict) and d.get("name"))
    return decls


def has_code_execution(request: dict[str, Any]) -> bool:
    return any(isinstance(t, dict) and "codeExecution" in t for t in request.get("tools") or [])


def calling_config(request: dict[str, Any]) -> dict[str, Any]:
    tc = request.get("toolConfig")
    fcc = tc.get("functionCallingConfig") if isinstance(tc, dict) else None
    return fcc if isinstance(fcc, dict) else {}


def field(obj: dict[str, Any], camel: str) -> Any:
    """Like the real API's proto-JSON parser, accept lowerCamel and snake_case field names."""
    if camel in obj:
        return obj[camel]
    return obj.get("".join("_" + c.lower() if c.isupper() else c for c in camel))
