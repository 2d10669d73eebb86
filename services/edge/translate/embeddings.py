"""Embeddings: OpenAI `/v1/embeddings` and Gemini `:embedContent` / `:batchEmbedContents` ⇄ the
upstream's Embed RPC, whose body is always a Gemini batchEmbedContents request and whose answer
is always `{"embeddings": [{"values": [...]}]}`, one per request, in order.

OpenAI → Gemini (client-apis.md §3):

    input: "text" | ["text", ...]          requests[i].content.parts[0].text
    input: [int, ...] | [[int, ...], ...]  400: token ids mean nothing to Gemini's tokenizer
    dimensions                             requests[i].outputDimensionality
    task_type (extension, extra_body)      requests[i].taskType
    encoding_format float | base64         answered as floats, or base64 of little-endian
                                           float32 bytes (what the openai SDK decodes; it asks
                                           for base64 when the caller did not choose)
    user                                   ignored

OpenAI's vectors are unit length whatever `dimensions` is. Gemini's full-size vectors are, its
truncated ones are not (ai.google.dev embeddings guide: "you need to normalize" below 3072), so
vectors shortened through `dimensions` are L2-normalised here. The native API is left exactly
as Google answers it.
"""
from __future__ import annotations

import base64
import math
import re
import struct
from dataclasses import dataclass

from .errors import TranslationError

# OpenAI's own limit on the number of inputs in one request.
MAX_INPUTS = 2048
_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_TASK_TYPE = re.compile(r"[A-Z][A-Z_]{0,63}")
_MAX_DIMENSIONS = 65536


@dataclass(frozen=True)
class EmbeddingsRequest:
    model: str          # bare id, e.g. "gemini-embedding-001"
    batch: dict         # Gemini batchEmbedContents body for the Embed RPC
    count: int          # number of inputs
    encoding: str       # "float" | "base64"
    normalize: bool     # L2-normalise the vectors (they were shortened by `dimensions`)


def model_id(value: object, param: str = "model") -> str:
    """A bare model id from "gemini-embedding-001" or "models/gemini-embedding-001"."""
    if not isinstance(value, str) or not value.strip():
        raise TranslationError(f"'{param}' is required and must be a string", param, "invalid_type")
    model = value.strip().removeprefix("models/")
    if not _MODEL_ID.fullmatch(model):
        raise TranslationError(f"'{value[:80]}' is not a valid model id", param, "invalid_model")
    return model


def _inputs(value: object) -> list[str]:
    if isinstance(value, str):
        texts = [value]
    elif isinstance(value, list):
        if not value:
            raise TranslationError("'input' must not be an empty array", "input")
        if any(isinstance(x, (int, list)) and not isinstance(x, bool) for x in value):
            raise TranslationError("token arrays are not supported: Gemini embeddings take text, so send 'input' "
                                   "as a string or an array of strings", "input", "unsupported_input")
        texts = value
    else:
        raise TranslationError("'input' must be a string or an array of strings", "input", "invalid_type")
    if len(texts) > MAX_INPUTS:
        raise TranslationError(f"'input' has {len(texts)} entries; at most {MAX_INPUTS} are allowed", "input")
    for i, text in enumerate(texts):
        param = "input" if isinstance(value, str) else f"input[{i}]"
        if not isinstance(text, str):
            raise TranslationError(f"'{param}' must be a string", param, "invalid_type")
        if not text.strip():
            raise TranslationError(f"'{param}' must not be empty", param)
    return texts


def _dimensions(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_DIMENSIONS:
        raise TranslationError("'dimensions' must be a positive integer", "dimensions")
    return value


def task_type(value: object, param: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _TASK_TYPE.fullmatch(value.upper()):
        raise TranslationError(f"'{param}' must be a Gemini task type such as RETRIEVAL_QUERY", param)
    return value.upper()


def embeddings_request_to_gemini(body: dict) -> EmbeddingsRequest:
    """An OpenAI embeddings request → the Embed RPC's batch (raises TranslationError on bad input)."""
    if not isinstance(body, dict):
        raise TranslationError("the request body must be a JSON object")
    model = model_id(body.get("model"))
    if "input" not in body:
        raise TranslationError("'input' is required", "input")
    texts = _inputs(body["input"])
    dims = _dimensions(body.get("dimensions"))
    encoding = body.get("encoding_format")
    if encoding is None:
        encoding = "float"
    if encoding not in ("float", "base64"):
        raise TranslationError("'encoding_format' must be 'float' or 'base64'", "encoding_format")
    task = task_type(body.get("task_type"), "task_type")

    extra: dict = {}
    if task is not None:
        extra["taskType"] = task
    if dims is not None:
        extra["outputDimensionality"] = dims
    requests = [{"model": f"models/{model}", "content": {"parts": [{"text": t}]}, **extra} for t in texts]
    return EmbeddingsRequest(model=model, batch={"requests": requests}, count=len(texts), encoding=encoding,
                             normalize=dims is not None)


def embedding_vectors(answer: object, count: int) -> list[list[float]]:
    """The vectors of an Embed answer, checked: `count` of them, each a list of numbers.
    A ValueError means the backend's answer is not what the contract says."""
    embeddings = answer.get("embeddings") if isinstance(answer, dict) else None
    if not isinstance(embeddings, list) or len(embeddings) != count:
        got = len(embeddings) if isinstance(embeddings, list) else "no"
        raise ValueError(f"expected {count} embeddings, got {got}")
    vectors = []
    for e in embeddings:
        values = e.get("values") if isinstance(e, dict) else None
        if not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                   for v in values):
            raise ValueError("an embedding without a list of numbers")
        vectors.append(values)
    return vectors


def l2_normalize(values: list[float]) -> list[float]:
    norm = math.sqrt(math.fsum(v * v for v in values))
    return [v / norm for v in values] if norm > 0 else list(values)


def encode_base64(values: list[float]) -> str:
    """OpenAI's base64 form: the vector as little-endian float32 bytes."""
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode("ascii")


def embeddings_response(answer: object, req: EmbeddingsRequest, *, model: str, prompt_tokens: int) -> dict:
    """The Embed answer as OpenAI's `{"object": "list", "data": [...], "model", "usage"}`."""
    data = []
    for i, values in enumerate(embedding_vectors(answer, req.count)):
        if req.normalize:
            values = l2_normalize(values)
        data.append({"object": "embedding", "index": i,
                     "embedding": encode_base64(values) if req.encoding == "base64" else values})
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}


# --- Gemini-native ---------------------------------------------------------------------------------

def _native_request(model: str, item: object, param: str) -> dict:
    if not isinstance(item, dict):
        raise TranslationError(f"{param} must be an object", param)
    content = item.get("content")
    if not isinstance(content, dict) or not isinstance(content.get("parts"), list) or not content["parts"]:
        raise TranslationError(f"{param}.content must be a Content with parts", f"{param}.content")
    named = item.get("model")
    if named is not None and (not isinstance(named, str) or named.removeprefix("models/") != model):
        # As Google answers: each request must name the model of the URL (or none).
        raise TranslationError(f"{param}.model must be 'models/{model}', the model of the URL", f"{param}.model")
    task_type(item.get("taskType"), f"{param}.taskType")
    out = dict(item)  # unknown fields travel on: the backend judges them, as Google would
    out["model"] = f"models/{model}"
    return out


def embed_content_to_batch(model: str, body: dict) -> dict:
    """A Gemini embedContent body → a one-request batchEmbedContents body."""
    return {"requests": [_native_request(model, body, "request")]}


def batch_embed_to_batch(model: str, body: dict) -> tuple[dict, int]:
    """A Gemini batchEmbedContents body, checked and with each request's model filled in;
    returns (batch, number of requests)."""
    requests = body.get("requests")
    if not isinstance(requests, list) or not requests:
        raise TranslationError("requests must be a non-empty array", "requests")
    if len(requests) > MAX_INPUTS:
        raise TranslationError(f"{len(requests)} requests in one batch; at most {MAX_INPUTS} are allowed", "requests")
    return {"requests": [_native_request(model, r, f"requests[{i}]") for i, r in enumerate(requests)]}, len(requests)


def embed_content_response(answer: object) -> dict:
    """A one-request batch answer → embedContent's `{"embedding": {"values": [...]}}`."""
    return {"embedding": {"values": embedding_vectors(answer, 1)[0]}}
