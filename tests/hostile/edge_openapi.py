"""An OpenAPI 3.0 description of the edge's public API (both dialects), for schemathesis.

The edge registers its routes as plain Starlette endpoints (for speed) and serves no OpenAPI
document, so this one is written from the API the gateway documents: the OpenAI chat
completions, Responses, embeddings and model list, Anthropic's messages and count_tokens, and
Google's generateContent / streamGenerateContent / countTokens / embedContent /
batchEmbedContents and model list. Request bodies are described (FastAPI's generated schema had none,
the edge reads raw bytes), so generated cases reach the translators and the upstream, not only
the JSON parser.

Image URLs are limited to data: URLs, so no generated case makes the edge fetch anything.
"""
from __future__ import annotations

from typing import Any

ROOT = "/gemini_cli"
MODELS = ["gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-3-pro-preview",
          "gemini-3-flash-preview", "gemini-3.1-pro-preview"]
OPENAI_MODELS = MODELS + [f"{m}-{s}" for m in MODELS[:3] for s in ("thinking", "nothinking", "maxthinking")]

_STR = {"type": "string", "maxLength": 200}
_OBJ = {"type": "object", "maxProperties": 4, "additionalProperties": {"type": "string", "maxLength": 40}}
_NAME = {"type": "string", "pattern": "^[a-zA-Z_][a-zA-Z0-9_]{0,30}$"}
_PARAMS = {
    "type": "object",
    "properties": {
        "type": {"type": "string", "enum": ["object"]},
        "properties": {"type": "object", "maxProperties": 3, "additionalProperties": {
            "type": "object",
            "properties": {"type": {"type": "string", "enum": ["string", "integer", "number", "boolean", "array"]},
                           "description": _STR,
                           "enum": {"type": "array", "items": {"type": "string", "maxLength": 10}, "maxItems": 3}},
            "required": ["type"]}},
        "required": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 3},
    },
    "required": ["type"],
}
_DATA_URL = {"type": "string", "pattern": "^data:image/(png|jpeg);base64,([A-Za-z0-9+/]{4}){0,8}$"}

# --- Gemini ---------------------------------------------------------------------------------

_PART = {"anyOf": [
    {"type": "object", "properties": {"text": _STR}, "required": ["text"]},
    {"type": "object", "properties": {"text": _STR, "thought": {"type": "boolean"}}, "required": ["text", "thought"]},
    {"type": "object", "properties": {"inlineData": {
        "type": "object",
        "properties": {"mimeType": {"type": "string", "enum": ["image/png", "audio/wav", "text/plain"]},
                       "data": {"type": "string", "pattern": "^([A-Za-z0-9+/]{4}){0,8}$"}},
        "required": ["mimeType", "data"]}}, "required": ["inlineData"]},
    {"type": "object", "properties": {"functionCall": {
        "type": "object", "properties": {"name": _NAME, "args": _OBJ}, "required": ["name"]},
        "thoughtSignature": {"type": "string", "maxLength": 40}}, "required": ["functionCall"]},
    {"type": "object", "properties": {"functionResponse": {
        "type": "object", "properties": {"name": _NAME, "response": _OBJ}, "required": ["name", "response"]}},
        "required": ["functionResponse"]},
]}
_CONTENT = {"type": "object", "properties": {
    "role": {"type": "string", "enum": ["user", "model"]},
    "parts": {"type": "array", "items": _PART, "minItems": 1, "maxItems": 3}}, "required": ["parts"]}
_GEN_CONFIG = {"type": "object", "properties": {
    "temperature": {"type": "number", "minimum": 0, "maximum": 2},
    "topP": {"type": "number", "minimum": 0, "maximum": 1},
    "topK": {"type": "integer", "minimum": 1, "maximum": 100},
    "candidateCount": {"type": "integer", "minimum": 1, "maximum": 1},
    "maxOutputTokens": {"type": "integer", "minimum": 1, "maximum": 8192},
    "stopSequences": {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 10}, "maxItems": 5},
    "responseMimeType": {"type": "string", "enum": ["text/plain", "application/json"]},
    "thinkingConfig": {"type": "object", "properties": {
        "includeThoughts": {"type": "boolean"}, "thinkingBudget": {"type": "integer", "minimum": -1, "maximum": 24576},
        "thinkingLevel": {"type": "string", "enum": ["LOW", "MEDIUM", "HIGH"]}}},
}}
_TOOLS = {"type": "array", "maxItems": 2, "items": {"type": "object", "properties": {
    "functionDeclarations": {"type": "array", "maxItems": 2, "items": {
        "type": "object", "properties": {"name": _NAME, "description": _STR, "parameters": _PARAMS},
        "required": ["name"]}}}}}
GENERATE_REQUEST = {"type": "object", "properties": {
    "contents": {"type": "array", "items": _CONTENT, "minItems": 1, "maxItems": 4},
    "systemInstruction": _CONTENT,
    "generationConfig": _GEN_CONFIG,
    "tools": _TOOLS,
    "toolConfig": {"type": "object", "properties": {"functionCallingConfig": {"type": "object", "properties": {
        "mode": {"type": "string", "enum": ["AUTO", "ANY", "NONE"]}}}}},
}, "required": ["contents"]}
COUNT_REQUEST = {"type": "object", "properties": {
    "contents": {"type": "array", "items": _CONTENT, "minItems": 1, "maxItems": 4}}, "required": ["contents"]}

# --- OpenAI -----------------------------------------------------------------------------------

_USER_PART = {"anyOf": [
    {"type": "object", "properties": {"type": {"type": "string", "enum": ["text"]}, "text": _STR},
     "required": ["type", "text"]},
    {"type": "object", "properties": {"type": {"type": "string", "enum": ["image_url"]},
                                      "image_url": {"type": "object", "properties": {"url": _DATA_URL},
                                                    "required": ["url"]}},
     "required": ["type", "image_url"]},
]}
_TOOL_CALL = {"type": "object", "properties": {
    "id": {"type": "string", "pattern": "^call_[a-z0-9]{1,8}$"}, "type": {"type": "string", "enum": ["function"]},
    "function": {"type": "object", "properties": {"name": _NAME, "arguments": {"type": "string", "maxLength": 60}},
                 "required": ["name", "arguments"]}}, "required": ["id", "type", "function"]}
_MESSAGE = {"anyOf": [
    {"type": "object", "properties": {"role": {"type": "string", "enum": ["system", "developer"]}, "content": _STR},
     "required": ["role", "content"]},
    {"type": "object", "properties": {"role": {"type": "string", "enum": ["user"]}, "content": {"anyOf": [
        _STR, {"type": "array", "items": _USER_PART, "minItems": 1, "maxItems": 3}]}}, "required": ["role", "content"]},
    {"type": "object", "properties": {"role": {"type": "string", "enum": ["assistant"]},
                                      "content": {"type": "string", "maxLength": 100, "nullable": True},
                                      "tool_calls": {"type": "array", "items": _TOOL_CALL, "maxItems": 2}},
     "required": ["role"]},
    {"type": "object", "properties": {"role": {"type": "string", "enum": ["tool"]},
                                      "tool_call_id": {"type": "string", "pattern": "^call_[a-z0-9]{1,8}$"},
                                      "content": _STR}, "required": ["role", "tool_call_id", "content"]},
]}
CHAT_REQUEST = {"type": "object", "properties": {
    "model": {"type": "string", "enum": OPENAI_MODELS},
    "messages": {"type": "array", "items": _MESSAGE, "minItems": 1, "maxItems": 5},
    "stream": {"type": "boolean"},
    "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
    "temperature": {"type": "number", "minimum": 0, "maximum": 2},
    "top_p": {"type": "number", "minimum": 0, "maximum": 1},
    "max_tokens": {"type": "integer", "minimum": 1, "maximum": 4096},
    "max_completion_tokens": {"type": "integer", "minimum": 1, "maximum": 4096},
    "n": {"type": "integer", "minimum": 1, "maximum": 1},
    "stop": {"anyOf": [{"type": "string", "minLength": 1, "maxLength": 10},
                       {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 10}, "maxItems": 4}]},
    "seed": {"type": "integer", "minimum": 0, "maximum": 2 ** 31},
    "presence_penalty": {"type": "number", "minimum": -2, "maximum": 2},
    "frequency_penalty": {"type": "number", "minimum": -2, "maximum": 2},
    "reasoning_effort": {"type": "string", "enum": ["minimal", "low", "medium", "high", "none"]},
    "response_format": {"anyOf": [
        {"type": "object", "properties": {"type": {"type": "string", "enum": ["text", "json_object"]}},
         "required": ["type"]},
        {"type": "object", "properties": {"type": {"type": "string", "enum": ["json_schema"]}, "json_schema": {
            "type": "object", "properties": {"name": _NAME, "schema": _PARAMS}, "required": ["name", "schema"]}},
         "required": ["type", "json_schema"]}]},
    "tools": {"type": "array", "maxItems": 2, "items": {"type": "object", "properties": {
        "type": {"type": "string", "enum": ["function"]},
        "function": {"type": "object", "properties": {"name": _NAME, "description": _STR, "parameters": _PARAMS},
                     "required": ["name"]}}, "required": ["type", "function"]}},
    "tool_choice": {"anyOf": [{"type": "string", "enum": ["none", "auto", "required"]},
                              {"type": "object", "properties": {"type": {"type": "string", "enum": ["function"]},
                                                                "function": {"type": "object",
                                                                             "properties": {"name": _NAME},
                                                                             "required": ["name"]}},
                               "required": ["type", "function"]}]},
    "user": {"type": "string", "maxLength": 40},
}, "required": ["model", "messages"]}

# --- OpenAI Responses and Anthropic Messages -------------------------------------------------

_RESPONSES_ITEM = {"anyOf": [
    {"type": "object", "properties": {"role": {"type": "string", "enum": ["user", "system", "developer", "assistant"]},
                                      "content": _STR}, "required": ["role", "content"]},
    {"type": "object", "properties": {"type": {"type": "string", "enum": ["message"]},
                                      "role": {"type": "string", "enum": ["user"]},
                                      "content": {"type": "array", "minItems": 1, "maxItems": 2, "items": {"anyOf": [
                                          {"type": "object", "properties": {"type": {"type": "string", "enum": ["input_text"]},
                                                                            "text": _STR}, "required": ["type", "text"]},
                                          {"type": "object", "properties": {"type": {"type": "string", "enum": ["input_image"]},
                                                                            "image_url": _DATA_URL},
                                           "required": ["type", "image_url"]}]}}},
     "required": ["type", "role", "content"]},
    {"type": "object", "properties": {"type": {"type": "string", "enum": ["reasoning"]},
                                      "encrypted_content": {"type": "string", "maxLength": 60}}, "required": ["type"]},
]}
RESPONSES_REQUEST = {"type": "object", "properties": {
    "model": {"type": "string", "enum": OPENAI_MODELS},
    "input": {"anyOf": [_STR, {"type": "array", "items": _RESPONSES_ITEM, "minItems": 1, "maxItems": 4}]},
    "instructions": _STR,
    "stream": {"type": "boolean"},
    "store": {"type": "boolean"},
    "max_output_tokens": {"type": "integer", "minimum": 1, "maximum": 4096},
    "temperature": {"type": "number", "minimum": 0, "maximum": 2},
    "reasoning": {"type": "object", "properties": {
        "effort": {"type": "string", "enum": ["minimal", "low", "medium", "high"]},
        "summary": {"type": "string", "enum": ["auto", "concise", "detailed"]}}},
    "text": {"type": "object", "properties": {"format": {"anyOf": [
        {"type": "object", "properties": {"type": {"type": "string", "enum": ["text", "json_object"]}}, "required": ["type"]},
        {"type": "object", "properties": {"type": {"type": "string", "enum": ["json_schema"]}, "name": _NAME,
                                          "schema": _PARAMS}, "required": ["type", "name", "schema"]}]}}},
    "tools": {"type": "array", "maxItems": 2, "items": {"type": "object", "properties": {
        "type": {"type": "string", "enum": ["function"]}, "name": _NAME, "description": _STR, "parameters": _PARAMS},
        "required": ["type", "name"]}},
    "tool_choice": {"type": "string", "enum": ["none", "auto", "required"]},
}, "required": ["model", "input"]}

CLAUDE_MODELS = ["claude-sonnet-4-6", "claude-opus-4-7", "claude-haiku-4-5-20251001", "gemini-2.5-flash"]
_BLOCK = {"anyOf": [
    {"type": "object", "properties": {"type": {"type": "string", "enum": ["text"]}, "text": _STR},
     "required": ["type", "text"]},
    {"type": "object", "properties": {"type": {"type": "string", "enum": ["image"]}, "source": {
        "type": "object", "properties": {"type": {"type": "string", "enum": ["base64"]},
                                         "media_type": {"type": "string", "enum": ["image/png", "image/jpeg"]},
                                         "data": {"type": "string", "pattern": "^([A-Za-z0-9+/]{4}){1,8}$"}},
        "required": ["type", "media_type", "data"]}}, "required": ["type", "source"]},
]}
_ANTHROPIC_MESSAGE = {"type": "object", "properties": {
    "role": {"type": "string", "enum": ["user"]},
    "content": {"anyOf": [_STR, {"type": "array", "items": _BLOCK, "minItems": 1, "maxItems": 3}]}},
    "required": ["role", "content"]}
MESSAGES_REQUEST = {"type": "object", "properties": {
    "model": {"type": "string", "enum": CLAUDE_MODELS},
    "max_tokens": {"type": "integer", "minimum": 1, "maximum": 4096},
    "messages": {"type": "array", "items": _ANTHROPIC_MESSAGE, "minItems": 1, "maxItems": 3},
    "system": {"anyOf": [_STR, {"type": "array", "maxItems": 2, "items": {
        "type": "object", "properties": {"type": {"type": "string", "enum": ["text"]}, "text": _STR},
        "required": ["type", "text"]}}]},
    "stream": {"type": "boolean"},
    "temperature": {"type": "number", "minimum": 0, "maximum": 1},
    "stop_sequences": {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 10}, "maxItems": 4},
    "thinking": {"anyOf": [
        {"type": "object", "properties": {"type": {"type": "string", "enum": ["enabled"]},
                                          "budget_tokens": {"type": "integer", "minimum": 1024, "maximum": 4000}},
         "required": ["type", "budget_tokens"]},
        {"type": "object", "properties": {"type": {"type": "string", "enum": ["disabled", "adaptive"]}},
         "required": ["type"]}]},
    "tools": {"type": "array", "maxItems": 2, "items": {"type": "object", "properties": {
        "name": _NAME, "description": _STR, "input_schema": _PARAMS}, "required": ["name", "input_schema"]}},
    "tool_choice": {"type": "object", "properties": {"type": {"type": "string", "enum": ["auto", "any", "none"]}},
                    "required": ["type"]},
}, "required": ["model", "max_tokens", "messages"]}
COUNT_MESSAGES_REQUEST = {"type": "object", "properties": {
    "model": {"type": "string", "enum": CLAUDE_MODELS},
    "messages": {"type": "array", "items": _ANTHROPIC_MESSAGE, "minItems": 1, "maxItems": 3},
    "system": _STR}, "required": ["model", "messages"]}

# --- embeddings ------------------------------------------------------------------------------

EMBED_MODELS = ["gemini-embedding-001", "text-embedding-005"]
EMBEDDINGS_REQUEST = {"type": "object", "properties": {
    "model": {"type": "string", "enum": EMBED_MODELS},
    "input": {"anyOf": [_STR, {"type": "array", "items": _STR, "minItems": 1, "maxItems": 4},
                        {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 100000}, "maxItems": 4}]},
    "dimensions": {"type": "integer", "minimum": 1, "maximum": 3072},
    "encoding_format": {"type": "string", "enum": ["float", "base64"]},
    "task_type": {"type": "string", "enum": ["RETRIEVAL_QUERY", "RETRIEVAL_DOCUMENT", "CLUSTERING"]},
    "user": {"type": "string", "maxLength": 40},
}, "required": ["model", "input"]}
_EMBED_ONE = {"type": "object", "properties": {
    "content": _CONTENT, "taskType": {"type": "string", "enum": ["RETRIEVAL_QUERY", "SEMANTIC_SIMILARITY"]},
    "title": _STR, "outputDimensionality": {"type": "integer", "minimum": 1, "maximum": 3072}}, "required": ["content"]}
BATCH_EMBED_REQUEST = {"type": "object", "properties": {
    "requests": {"type": "array", "items": _EMBED_ONE, "minItems": 1, "maxItems": 3}}, "required": ["requests"]}

# --- the document ----------------------------------------------------------------------------


def _json_body(schema: dict) -> dict:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _model_param(name: str, enum: list[str]) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string", "enum": enum}}


_OK = {"200": {"description": "OK"}}


def edge_openapi() -> dict[str, Any]:
    gemini_model = _model_param("model", MODELS)
    paths: dict[str, Any] = {
        f"{ROOT}/v1/chat/completions": {"post": {"operationId": "openai_chat", "requestBody": _json_body(CHAT_REQUEST),
                                                 "responses": _OK}},
        f"{ROOT}/v1/models": {"get": {"operationId": "openai_models", "responses": _OK}},
        f"{ROOT}/v1/models/{{model_id}}": {"get": {"operationId": "openai_model", "responses": _OK,
                                                   "parameters": [{"name": "model_id", "in": "path", "required": True,
                                                                   "schema": {"type": "string", "maxLength": 60}}]}},
        f"{ROOT}/v1/responses": {"post": {"operationId": "openai_responses", "requestBody": _json_body(RESPONSES_REQUEST),
                                          "responses": _OK}},
        f"{ROOT}/v1/messages": {"post": {"operationId": "anthropic_messages", "requestBody": _json_body(MESSAGES_REQUEST),
                                         "responses": _OK}},
        f"{ROOT}/v1/messages/count_tokens": {"post": {"operationId": "anthropic_count_tokens",
                                                      "requestBody": _json_body(COUNT_MESSAGES_REQUEST), "responses": _OK}},
        f"{ROOT}/v1beta/models": {"get": {"operationId": "gemini_models", "responses": _OK}},
        f"{ROOT}/v1beta/models/{{name}}": {"get": {"operationId": "gemini_model", "responses": _OK,
                                                   "parameters": [{"name": "name", "in": "path", "required": True,
                                                                   "schema": {"type": "string", "maxLength": 60}}]}},
        f"{ROOT}/v1beta/models/{{model}}:generateContent": {"post": {
            "operationId": "gemini_generate", "parameters": [gemini_model],
            "requestBody": _json_body(GENERATE_REQUEST), "responses": _OK}},
        f"{ROOT}/v1beta/models/{{model}}:streamGenerateContent": {"post": {
            "operationId": "gemini_stream",
            "parameters": [gemini_model, {"name": "alt", "in": "query", "required": False,
                                          "schema": {"type": "string", "enum": ["sse", "json"]}}],
            "requestBody": _json_body(GENERATE_REQUEST), "responses": _OK}},
        f"{ROOT}/v1beta/models/{{model}}:countTokens": {"post": {
            "operationId": "gemini_count", "parameters": [gemini_model],
            "requestBody": _json_body(COUNT_REQUEST), "responses": _OK}},
        f"{ROOT}/v1/embeddings": {"post": {"operationId": "openai_embeddings",
                                           "requestBody": _json_body(EMBEDDINGS_REQUEST), "responses": _OK}},
        f"{ROOT}/v1beta/models/{{model}}:embedContent": {"post": {
            "operationId": "gemini_embed", "parameters": [_model_param("model", EMBED_MODELS)],
            "requestBody": _json_body(_EMBED_ONE), "responses": _OK}},
        f"{ROOT}/v1beta/models/{{model}}:batchEmbedContents": {"post": {
            "operationId": "gemini_batch_embed", "parameters": [_model_param("model", EMBED_MODELS)],
            "requestBody": _json_body(BATCH_EMBED_REQUEST), "responses": _OK}},
    }
    return {"openapi": "3.0.3", "info": {"title": "gemini-cli gateway edge (test description)", "version": "1"},
            "paths": paths}
