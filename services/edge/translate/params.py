"""Checked reads of scalar request fields, shared by the request translators (pure)."""
from __future__ import annotations

from typing import Any

import orjson

from .errors import TranslationError

def number(body: dict, key: str) -> float | int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TranslationError(f"{key} must be a number", key)
    if isinstance(value, int) and abs(value) > 2**53:
        raise TranslationError(f"{key} is out of range", key)
    return value


INT32_MAX = 2**31 - 1


def integer(body: dict, key: str, minimum: int | None = None, maximum: int = INT32_MAX) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TranslationError(f"{key} must be an integer", key)
    if minimum is not None and value < minimum:
        raise TranslationError(f"{key} must be at least {minimum}", key)
    if value > maximum:
        raise TranslationError(f"{key} must be at most {maximum}", key)
    return value


def boolean(body: dict, key: str) -> bool:
    value = body.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise TranslationError(f"{key} must be a boolean", key)
    return value


def string(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise TranslationError(f"{param} must be a string", param)
    return value


MAX_NESTING = 100  # the edge serialises with orjson, which refuses deeper documents


def json_loads(raw: str) -> Any:
    return orjson.loads(raw)


def shallow(value: Any, param: str) -> Any:
    """Reject client JSON the request serialiser cannot write: nested too deeply, or holding
    integers beyond 64 bits (a parser such as the stdlib's keeps those as Python ints)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_NESTING:
            raise TranslationError(f"{param} is nested too deeply", param)
        if isinstance(node, int) and not -(2**63) <= node < 2**64:
            raise TranslationError(f"{param} holds an integer beyond 64 bits", param)
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return value

