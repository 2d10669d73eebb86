"""Thought signatures: the one the simulator issues for a functionCall, and Gemini 3's check of them."""
from __future__ import annotations

import hashlib
from typing import Any

import orjson

from .request_fields import RequestError

BYPASS_SIGNATURE = "skip_thought_signature_validator"


def signature_for(name: str, args: Any) -> str:
    """The thought signature the simulator issues for a functionCall (args in sorted-key JSON)."""
    digest = hashlib.sha256((name + orjson.dumps(args, option=orjson.OPT_SORT_KEYS).decode()).encode())
    return f"sig-{digest.hexdigest()[:16]}"


def validate_signatures(contents: list[dict[str, Any]]) -> None:
    """Gemini 3: the first functionCall of every model turn must carry a valid thought signature."""
    for i, content in enumerate(contents):
        if content.get("role") != "model":
            continue
        for j, part in enumerate(content["parts"]):
            call = part.get("functionCall")
            if not isinstance(call, dict):
                continue
            sig = part.get("thoughtSignature")
            name = call.get("name", "")
            if not sig:
                raise RequestError(
                    f"Function call is missing a thought_signature in functionCall parts. This is required for "
                    f"tools to work correctly, and missing thought_signature may lead to degraded model "
                    f"performance. Additional data, function call `default_api:{name}` , position {j + 1}. "
                    f"Please refer to https://ai.google.dev/gemini-api/docs/thought-signatures for more details.")
            if sig != BYPASS_SIGNATURE and sig != signature_for(name, call.get("args", {})):
                raise RequestError(f"Corrupted thought signature. (contents[{i}].parts[{j}])")
            break  # only the first call of a turn carries one
