"""Request validation: what the real backend rejects with 400 INVALID_ARGUMENT (README "Checks")."""
from __future__ import annotations

from typing import Any

from .models import is_gemini3
from .request_fields import RequestError, gen_config, thinking
from .signatures import validate_signatures

# thinkingBudget ranges per docs (ai.google.dev thinking page): (allowed specials, min, max)
_BUDGETS = {
    "gemini-2.5-pro": ({-1}, 128, 32768),
    "gemini-2.5-flash": ({-1, 0}, 0, 24576),
    "gemini-2.5-flash-lite": ({-1, 0}, 512, 24576),
}
_LEVELS = {
    "gemini-3-pro-preview": {"LOW", "HIGH"},
    "gemini-3.1-pro-preview": {"LOW", "MEDIUM", "HIGH"},
    "gemini-3-flash-preview": {"MINIMAL", "LOW", "MEDIUM", "HIGH"},
    "gemini-3.1-pro-preview-customtools": {"LOW", "MEDIUM", "HIGH"},
    "gemini-3-flash": {"MINIMAL", "LOW", "MEDIUM", "HIGH"},
    "gemini-3.5-flash": {"MINIMAL", "LOW", "MEDIUM", "HIGH"},
    "gemini-3.1-flash-lite": {"MINIMAL", "LOW", "MEDIUM", "HIGH"},
}


def validate(model: str, request: Any) -> None:
    """Raise RequestError for what the real backend rejects with 400 INVALID_ARGUMENT."""
    if not isinstance(request, dict):
        raise RequestError("Invalid JSON payload: 'request' must be an object.")
    contents = request.get("contents")
    if not isinstance(contents, list) or not contents:
        raise RequestError("* GenerateContentRequest.contents: contents is not specified")
    for i, content in enumerate(contents):
        if not isinstance(content, dict):
            raise RequestError(f"Invalid value at 'request.contents[{i}]': must be an object.")
        role = content.get("role", "user")
        if role not in ("user", "model", "function", ""):
            raise RequestError(f"Please use a valid role: user, model. (contents[{i}].role={role!r})")
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            raise RequestError(f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty.")
        if not all(isinstance(p, dict) for p in parts):
            raise RequestError(f"Invalid value at 'request.contents[{i}].parts': each part must be an object.")
    _validate_generation_config(model, request)
    if is_gemini3(model):
        validate_signatures(contents)


def _validate_generation_config(model: str, request: dict[str, Any]) -> None:
    cfg = gen_config(request)
    mot = cfg.get("maxOutputTokens")
    if mot is not None and (isinstance(mot, bool) or not isinstance(mot, int) or mot < 1):
        raise RequestError("Invalid value at 'generation_config.max_output_tokens': must be a positive integer.")
    think = thinking(request)
    budget, level = think.get("thinkingBudget"), think.get("thinkingLevel")
    if budget is not None and level is not None:
        raise RequestError("You can only set only one of thinking budget and thinking level.")
    if level is not None:
        levels = _LEVELS.get(model)
        if levels is None:
            raise RequestError("Thinking level is not supported for this model.")
        if not isinstance(level, str) or level.upper() not in levels:
            raise RequestError(f"Thinking level {level!r} is not supported for this model; "
                               f"use one of {sorted(levels)}.")
    if budget is not None:
        if isinstance(budget, bool) or not isinstance(budget, int):
            raise RequestError("Invalid value at 'generation_config.thinking_config.thinking_budget'.")
        limits = _BUDGETS.get(model)
        if limits is not None:
            specials, low, high = limits
            if budget not in specials and not low <= budget <= high:
                if budget == 0:
                    raise RequestError("Budget 0 is invalid. This model only works in thinking mode.")
                raise RequestError(f"The thinking budget {budget} is invalid. Please choose a value between "
                                   f"{low} and {high}.")
        elif budget < -1:
            raise RequestError(f"The thinking budget {budget} is invalid.")
