"""What each public route serves, as the routes declare it (`documented(...)` on their endpoints).

Paths are relative to ROOT_PATH. The Gemini methods share one route (`/{version}/models/{target}`)
and are documented under v1beta, the version Google's SDKs use; /v1 and /v1alpha serve the same.
"""
from __future__ import annotations

from services.edge.apidoc.common import LazyModels, Operation

# Imported by the first /openapi.json (every route module imports this one).
an = LazyModels("services.edge.apidoc.anthropic_models")
gm = LazyModels("services.edge.apidoc.gemini_models")
oa = LazyModels("services.edge.apidoc.openai_models")

_MODEL = {"model": {"type": "string", "maxLength": 128, "description": "a model id, e.g. gemini-2.5-flash "
                                                                        "(a models/ prefix is accepted)"}}
_GOOGLE_STYLE = ("Answers in Google's format (`GoogleModelList`) when the key came the Google way "
                 "(x-goog-api-key or ?key=).")

CHAT = Operation(
    "post", "/v1/chat/completions", "openai_chat", "Chat completion (OpenAI)", tag="OpenAI", error=oa.OpenAIError,
    body=oa.ChatCompletionRequest, response=oa.ChatCompletion, stream_event=oa.ChatCompletionChunk, traced=True,
    description="With `stream: true` the answer is server-sent events of chat.completion.chunk, "
                "ending with `data: [DONE]`.")
RESPONSES = Operation(
    "post", "/v1/responses", "openai_responses", "Create a response (OpenAI Responses)", tag="OpenAI",
    error=oa.OpenAIError, body=oa.ResponsesRequest, response=oa.ResponseObject, stream_event=oa.ResponseEvent,
    traced=True, description="Stateless: send the whole history (`store` is ignored, `previous_response_id` "
                             "is refused). Streamed answers are Responses events; failures end the stream with "
                             "response.failed.")
EMBEDDINGS = Operation(
    "post", "/v1/embeddings", "openai_embeddings", "Embeddings (OpenAI)", tag="OpenAI", error=oa.OpenAIError,
    body=oa.EmbeddingsRequest, response=oa.EmbeddingsResponse,
    description="Served by AI Studio and Vertex AI pool members; a pool without one answers 404.")
OPENAI_MODELS = Operation(
    "get", "/v1/models", "openai_models", "List models (OpenAI)", tag="OpenAI", error=oa.OpenAIError,
    response=oa.OpenAIModelList, description="Includes the -thinking / -nothinking / -maxthinking variants. "
                                             + _GOOGLE_STYLE)
OPENAI_MODEL = Operation(
    "get", "/v1/models/{model_id}", "openai_model", "Get a model (OpenAI)", tag="OpenAI", error=oa.OpenAIError,
    response=oa.OpenAIModel, path_params={"model_id": {"type": "string", "maxLength": 128}},
    description=_GOOGLE_STYLE)

MESSAGES = Operation(
    "post", "/v1/messages", "anthropic_messages", "Create a message (Anthropic)", tag="Anthropic",
    error=an.AnthropicError, body=an.MessagesRequest, response=an.MessageResponse,
    stream_event=an.MessageStreamEvent, traced=True,
    description="With `stream: true` the answer is Anthropic's server-sent events. 503 is sent as 529.")
COUNT_MESSAGE_TOKENS = Operation(
    "post", "/v1/messages/count_tokens", "anthropic_count_tokens", "Count tokens (Anthropic)", tag="Anthropic",
    error=an.AnthropicError, body=an.CountMessageTokensRequest, response=an.CountMessageTokensResponse)

_GEMINI = "/v1beta/models/{model}"
GENERATE = Operation(
    "post", _GEMINI + ":generateContent", "gemini_generate", "Generate content (Gemini)", tag="Gemini",
    error=gm.GoogleError, body=gm.GenerateContentRequest, response=gm.GenerateContentResponse,
    path_params=_MODEL, traced=True, description="The body goes to the backend as sent; the answer comes back "
                                                 "as the backend wrote it.")
STREAM_GENERATE = Operation(
    "post", _GEMINI + ":streamGenerateContent", "gemini_stream", "Stream generated content (Gemini)", tag="Gemini",
    error=gm.GoogleError, body=gm.GenerateContentRequest, response=gm.GenerateContentResponse,
    stream_event=gm.GenerateContentResponse, path_params=_MODEL, traced=True,
    query={"alt": {"type": "string", "enum": ["sse", "json"], "description": "sse: server-sent events; "
                                                                             "json (default): a JSON array"}},
    description="alt=sse: one event per backend chunk; otherwise a JSON array of GenerateContentResponse, "
                "written chunk by chunk.")
COUNT_TOKENS = Operation(
    "post", _GEMINI + ":countTokens", "gemini_count", "Count tokens (Gemini)", tag="Gemini", error=gm.GoogleError,
    body=gm.CountTokensRequest, response=gm.CountTokensResponse, path_params=_MODEL)
EMBED = Operation(
    "post", _GEMINI + ":embedContent", "gemini_embed", "Embed content (Gemini)", tag="Gemini", error=gm.GoogleError,
    body=gm.EmbedContentRequest, response=gm.EmbedContentResponse, path_params=_MODEL)
BATCH_EMBED = Operation(
    "post", _GEMINI + ":batchEmbedContents", "gemini_batch_embed", "Embed contents in a batch (Gemini)",
    tag="Gemini", error=gm.GoogleError, body=gm.BatchEmbedContentsRequest, response=gm.BatchEmbedContentsResponse,
    path_params=_MODEL)
GEMINI_CALLS = (GENERATE, STREAM_GENERATE, COUNT_TOKENS, EMBED, BATCH_EMBED)
GEMINI_MODELS = Operation(
    "get", "/v1beta/models", "gemini_models", "List models (Gemini)", tag="Gemini", error=gm.GoogleError,
    response=gm.GoogleModelList)
GEMINI_MODEL = Operation(
    "get", "/v1beta/models/{name}", "gemini_model", "Get a model (Gemini)", tag="Gemini", error=gm.GoogleError,
    response=gm.GoogleModel, path_params={"name": {"type": "string", "maxLength": 128}})
