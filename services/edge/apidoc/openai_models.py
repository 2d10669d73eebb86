"""OpenAI's request and response bodies as the gateway serves them: chat completions,
Responses, embeddings, the model list, and OpenAI's error body."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from services.edge.apidoc.common import Closed, Null, Open

ModelId = Field(max_length=128, description="A Gemini model id, optionally with a thinking suffix "
                                            "(-thinking, -nothinking, -maxthinking), e.g. gemini-2.5-pro-thinking.",
                examples=["gemini-2.5-flash"])


class OpenAIErrorDetail(Closed):
    message: str
    type: str = Field(description="invalid_request_error, authentication_error, rate_limit_error, ...")
    param: str | None = None
    code: str | None = None


class OpenAIError(Closed):
    __doc__ = """OpenAI's error body (every /v1 route but Anthropic's)."""

    error: OpenAIErrorDetail


# --- chat completions ---------------------------------------------------------------------------

class ImageUrl(Open):
    url: str = Field(description="http(s) URL (fetched by the gateway), data: URL or bare base64")
    detail: Literal["auto", "low", "high"] | Null = None


class TextPart(Open):
    type: Literal["text"]
    text: str


class ImagePart(Open):
    type: Literal["image_url"]
    image_url: ImageUrl


class InputAudio(Open):
    data: str = Field(description="base64")
    format: str = Field(examples=["wav", "mp3"])


class AudioPart(Open):
    type: Literal["input_audio"]
    input_audio: InputAudio


class FunctionCall(Open):
    name: str
    arguments: str = Field(description="the arguments as a JSON string")


class ToolCall(Open):
    id: str
    type: Literal["function"]
    function: FunctionCall


class SystemMessage(Open):
    role: Literal["system", "developer"]
    content: str | list[TextPart]


class UserMessage(Open):
    role: Literal["user"]
    content: str | list[TextPart | ImagePart | AudioPart]


class AssistantMessage(Open):
    role: Literal["assistant"]
    content: str | list[TextPart] | None = None
    tool_calls: list[ToolCall] | Null = None
    reasoning_content: str | Null = Field(default=None, description="thoughts of an earlier turn (extension)")


class ToolMessage(Open):
    role: Literal["tool"]
    tool_call_id: str
    content: str | list[TextPart]


class FunctionDef(Open):
    name: str
    description: str | Null = None
    parameters: dict[str, Any] | Null = Field(default=None, description="JSON Schema of the arguments")
    strict: bool | Null = None


class FunctionTool(Open):
    type: Literal["function"]
    function: FunctionDef


class StreamOptions(Open):
    include_usage: bool | Null = None


class JsonSchemaFormat(Open):
    name: str
    schema_: dict[str, Any] | Null = Field(default=None, alias="schema")
    strict: bool | Null = None


class ResponseFormat(Open):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | Null = None


class NamedToolChoice(Open):
    type: Literal["function"]
    function: dict[str, str]


class ChatCompletionRequest(Open):
    __doc__ = """POST /v1/chat/completions. Unknown members are ignored; `extra_body.google` passes
    Gemini's own generationConfig / thinking_config / safety_settings through."""

    model: str = ModelId
    messages: list[SystemMessage | UserMessage | AssistantMessage | ToolMessage] = Field(min_length=1)
    stream: bool | Null = None
    stream_options: StreamOptions | Null = None
    temperature: float | Null = Field(default=None, ge=0, le=2)
    top_p: float | Null = Field(default=None, ge=0, le=1)
    max_tokens: int | Null = Field(default=None, ge=1)
    max_completion_tokens: int | Null = Field(default=None, ge=1)
    n: int | Null = Field(default=None, ge=1)
    stop: str | list[str] | Null = None
    seed: int | Null = None
    presence_penalty: float | Null = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | Null = Field(default=None, ge=-2, le=2)
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high"] | Null = None
    response_format: ResponseFormat | Null = None
    tools: list[FunctionTool] | Null = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | Null = None
    user: str | Null = None


class ChoiceMessage(Open):
    role: Literal["assistant"]
    content: str | None
    reasoning_content: str | Null = None
    tool_calls: list[ToolCall] | Null = None


class Choice(Open):
    index: int
    message: ChoiceMessage
    finish_reason: str | None


class CompletionUsage(Open):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(Open):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage | Null = None


class ChunkDelta(Open):
    role: str | Null = None
    content: str | Null = None
    reasoning_content: str | Null = None
    tool_calls: list[dict[str, Any]] | Null = None


class ChunkChoice(Open):
    index: int
    delta: ChunkDelta
    finish_reason: str | None = None


class ChatCompletionChunk(Open):
    __doc__ = """One `data:` event of a streamed completion; the stream ends with `data: [DONE]`."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: CompletionUsage | None = None


# --- Responses ----------------------------------------------------------------------------------

class InputText(Open):
    type: Literal["input_text", "output_text"]
    text: str


class InputImage(Open):
    type: Literal["input_image"]
    image_url: str = Field(description="http(s) URL, data: URL or bare base64")


class MessageItem(Open):
    type: Literal["message"] | Null = None
    role: Literal["user", "system", "developer", "assistant"]
    content: str | list[InputText | InputImage]


class FunctionCallItem(Open):
    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str


class FunctionCallOutputItem(Open):
    type: Literal["function_call_output"]
    call_id: str
    output: str


class ReasoningItem(Open):
    type: Literal["reasoning"]
    encrypted_content: str | Null = Field(default=None, description="the thought signature of an earlier turn")


class ResponsesFunctionTool(Open):
    type: Literal["function"]
    name: str
    description: str | Null = None
    parameters: dict[str, Any] | Null = None


class Reasoning(Open):
    effort: Literal["none", "minimal", "low", "medium", "high"] | Null = None
    summary: Literal["auto", "concise", "detailed"] | Null = None


class TextFormat(Open):
    type: Literal["text", "json_object", "json_schema"]
    name: str | Null = None
    schema_: dict[str, Any] | Null = Field(default=None, alias="schema")


class TextConfig(Open):
    format: TextFormat | Null = None


class ResponsesRequest(Open):
    __doc__ = """POST /v1/responses (stateless: `previous_response_id` is refused, send the history)."""

    model: str = ModelId
    input: str | list[MessageItem | FunctionCallItem | FunctionCallOutputItem | ReasoningItem]
    instructions: str | Null = None
    stream: bool | Null = None
    store: bool | Null = None
    max_output_tokens: int | Null = Field(default=None, ge=1)
    temperature: float | Null = Field(default=None, ge=0, le=2)
    top_p: float | Null = Field(default=None, ge=0, le=1)
    reasoning: Reasoning | Null = None
    text: TextConfig | Null = None
    tools: list[ResponsesFunctionTool] | Null = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | Null = None


class ResponsesUsage(Open):
    input_tokens: int
    output_tokens: int
    total_tokens: int


class ResponseObject(Open):
    id: str
    object: Literal["response"]
    created_at: int
    model: str
    status: str
    output: list[dict[str, Any]] = Field(description="message, reasoning and function_call items")
    usage: ResponsesUsage | None = None


class ResponseEvent(Open):
    __doc__ = """One event of a streamed response (`event: <type>` then `data: <this>`):
    response.created, response.output_text.delta, ..., response.completed or response.failed."""

    type: str
    sequence_number: int | Null = None


# --- embeddings and models ----------------------------------------------------------------------

class EmbeddingsRequest(Open):
    __doc__ = """POST /v1/embeddings (served by AI Studio / Vertex AI pool members)."""

    model: str = Field(max_length=128, examples=["gemini-embedding-001"])
    input: str | list[str] = Field(description="a text or a list of texts (token arrays are refused)")
    dimensions: int | Null = Field(default=None, ge=1)
    encoding_format: Literal["float", "base64"] | Null = None
    task_type: str | Null = Field(default=None, description="extension: Gemini's taskType, e.g. RETRIEVAL_QUERY")
    user: str | Null = None


class Embedding(Open):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str = Field(description="floats, or base64 little-endian float32")


class EmbeddingsUsage(Open):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(Open):
    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: EmbeddingsUsage


class OpenAIModel(Open):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class OpenAIModelList(Open):
    object: Literal["list"]
    data: list[OpenAIModel]
