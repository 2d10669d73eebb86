"""Anthropic's Messages API bodies as the gateway serves them, and Anthropic's error body."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from services.edge.apidoc.common import Closed, Null, Open


class AnthropicErrorDetail(Closed):
    type: str = Field(description="invalid_request_error, authentication_error, rate_limit_error, "
                                  "overloaded_error (sent as HTTP 529), ...")
    message: str


class AnthropicError(Closed):
    __doc__ = """Anthropic's error body (/v1/messages...)."""

    type: Literal["error"]
    error: AnthropicErrorDetail


class TextBlock(Open):
    type: Literal["text"]
    text: str


class ImageSource(Open):
    type: Literal["base64", "url"]
    media_type: str | Null = Field(default=None, examples=["image/png"])
    data: str | Null = None
    url: str | Null = None


class ImageBlock(Open):
    type: Literal["image"]
    source: ImageSource


class ToolUseBlock(Open):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


class ToolReferenceBlock(Open):
    __doc__ = """In a tool search's result: loads a tool declared with defer_loading."""

    type: Literal["tool_reference"]
    tool_name: str


class ToolResultBlock(Open):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[TextBlock | ImageBlock | ToolReferenceBlock] | Null = None
    is_error: bool | Null = None


class ThinkingBlock(Open):
    type: Literal["thinking"]
    thinking: str
    signature: str | Null = Field(default=None, description="the thought signature: send back as received")


Block = TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock


class AnthropicMessage(Open):
    role: Literal["user", "assistant"]
    content: str | list[Block]


class AnthropicTool(Open):
    name: str
    description: str | Null = None
    input_schema: dict[str, Any]
    defer_loading: bool | Null = Field(default=None, description="hidden from the model until a tool_reference "
                                                                 "in a tool_result loads it (tool search)")


class ToolDefinition(Open):
    type: Literal["tool_definition"]
    definition: AnthropicTool


class ToolAdditionBlock(Open):
    type: Literal["tool_addition"]
    tool: ToolDefinition


class ToolNameReference(Open):
    type: Literal["tool_reference"]
    name: str


class ToolRemovalBlock(Open):
    type: Literal["tool_removal"]
    tool: ToolNameReference


class MessageOutputConfig(Open):
    effort: Literal["low", "medium", "high", "xhigh", "max"]


class SystemMessage(Open):
    __doc__ = """A system message mid-conversation: its text joins the system instruction, its
    tool_addition / tool_removal blocks change the tools, its output_config.effort sets the
    effort from the turn it applies to (right after a user turn with new input: the answer to
    that turn; elsewhere: from the next such turn)."""

    role: Literal["system"]
    content: str | list[TextBlock | ToolAdditionBlock | ToolRemovalBlock]
    output_config: MessageOutputConfig | Null = None


class Thinking(Open):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | Null = Field(default=None, ge=0)


class ToolChoice(Open):
    type: Literal["auto", "any", "none", "tool"]
    name: str | Null = None


class MessagesRequest(Open):
    __doc__ = """POST /v1/messages. Claude model names are mapped by ANTHROPIC_MODEL_MAP; a Gemini
    model id works as it is."""

    model: str = Field(max_length=128, examples=["claude-sonnet-4-6", "gemini-2.5-flash"])
    max_tokens: int = Field(ge=1)
    messages: list[AnthropicMessage | SystemMessage] = Field(min_length=1)
    system: str | list[TextBlock] | Null = None
    stream: bool | Null = None
    temperature: float | Null = Field(default=None, ge=0, le=1)
    top_p: float | Null = Field(default=None, ge=0, le=1)
    top_k: int | Null = Field(default=None, ge=1)
    stop_sequences: list[str] | Null = None
    thinking: Thinking | Null = None
    output_config: dict[str, Any] | Null = Field(default=None, description="effort (low, medium, high, xhigh, max) "
                                                 "and format ({type: json_schema, schema})")
    tools: list[AnthropicTool] | Null = None
    tool_choice: ToolChoice | Null = None
    metadata: dict[str, Any] | Null = None


class AnthropicUsage(Open):
    input_tokens: int
    output_tokens: int


class MessageResponse(Open):
    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str
    content: list[dict[str, Any]] = Field(description="text, thinking and tool_use blocks")
    stop_reason: str | None
    stop_sequence: str | None = None
    usage: AnthropicUsage


class MessageStreamEvent(Open):
    __doc__ = """One event of a streamed message (`event: <type>` then `data: <this>`): message_start,
    content_block_start/delta/stop, message_delta, message_stop, ping, error."""

    type: str


class CountMessageTokensRequest(Open):
    __doc__ = """POST /v1/messages/count_tokens."""

    model: str = Field(max_length=128, examples=["claude-sonnet-4-6"])
    messages: list[AnthropicMessage | SystemMessage] = Field(min_length=1)
    system: str | list[TextBlock] | Null = None
    tools: list[AnthropicTool] | Null = None


class CountMessageTokensResponse(Open):
    input_tokens: int
