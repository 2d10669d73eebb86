"""Google's Gemini API bodies as the gateway serves them (passed through as received):
generateContent, countTokens, embedContent / batchEmbedContents, the model list, Google's error."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from services.edge.apidoc.common import Closed, Null, Open


class GoogleErrorDetail(Closed):
    code: int
    message: str
    status: str = Field(description="google.rpc.Code name: INVALID_ARGUMENT, RESOURCE_EXHAUSTED, ...")


class GoogleError(Closed):
    __doc__ = """Google's error body (/v1beta, and the Gemini methods under /v1 and /v1alpha)."""

    error: GoogleErrorDetail


class Blob(Open):
    mimeType: str = Field(examples=["image/png"])
    data: str = Field(description="base64")


class FileData(Open):
    mimeType: str | Null = None
    fileUri: str


class FunctionCallData(Open):
    name: str
    args: dict[str, Any] | Null = None


class FunctionResponseData(Open):
    name: str
    response: dict[str, Any]


class GeminiTextPart(Open):
    text: str
    thought: bool | Null = None
    thoughtSignature: str | Null = None


class InlineDataPart(Open):
    inlineData: Blob


class FileDataPart(Open):
    fileData: FileData


class FunctionCallPart(Open):
    functionCall: FunctionCallData
    thoughtSignature: str | Null = Field(default=None, description="Gemini 3: send back as received")


class FunctionResponsePart(Open):
    functionResponse: FunctionResponseData


GeminiPart = GeminiTextPart | InlineDataPart | FileDataPart | FunctionCallPart | FunctionResponsePart


class GeminiContent(Open):
    role: Literal["user", "model"] | Null = None
    parts: list[GeminiPart] = Field(min_length=1)


class ThinkingConfig(Open):
    includeThoughts: bool | Null = None
    thinkingBudget: int | Null = Field(default=None, ge=-1, description="-1: dynamic; clamped to the model's range")
    thinkingLevel: Literal["MINIMAL", "LOW", "MEDIUM", "HIGH"] | Null = None


class GenerationConfig(Open):
    temperature: float | Null = Field(default=None, ge=0, le=2)
    topP: float | Null = Field(default=None, ge=0, le=1)
    topK: int | Null = Field(default=None, ge=1)
    candidateCount: int | Null = Field(default=None, ge=1)
    maxOutputTokens: int | Null = Field(default=None, ge=1)
    stopSequences: list[str] | Null = None
    responseMimeType: str | Null = None
    responseSchema: dict[str, Any] | Null = None
    thinkingConfig: ThinkingConfig | Null = None


class FunctionDeclaration(Open):
    name: str
    description: str | Null = None
    parameters: dict[str, Any] | Null = None


class GeminiTool(Open):
    functionDeclarations: list[FunctionDeclaration] | Null = None
    googleSearch: dict[str, Any] | Null = None
    codeExecution: dict[str, Any] | Null = None


class FunctionCallingConfig(Open):
    mode: Literal["AUTO", "ANY", "NONE", "VALIDATED"] | Null = None
    allowedFunctionNames: list[str] | Null = None


class ToolConfig(Open):
    functionCallingConfig: FunctionCallingConfig | Null = None


class SafetySetting(Open):
    category: str
    threshold: str


class GenerateContentRequest(Open):
    __doc__ = """A Gemini GenerateContentRequest, sent to the backend as received (a thinking suffix on
    the model adds a thinkingConfig unless the body has one)."""

    contents: list[GeminiContent] = Field(min_length=1)
    systemInstruction: GeminiContent | Null = None
    generationConfig: GenerationConfig | Null = None
    tools: list[GeminiTool] | Null = None
    toolConfig: ToolConfig | Null = None
    safetySettings: list[SafetySetting] | Null = None


class UsageMetadata(Open):
    promptTokenCount: int | Null = None
    candidatesTokenCount: int | Null = None
    thoughtsTokenCount: int | Null = None
    totalTokenCount: int | Null = None
    cachedContentTokenCount: int | Null = None


class Candidate(Open):
    content: GeminiContent | Null = None
    finishReason: str | Null = None
    index: int | Null = None


class GenerateContentResponse(Open):
    __doc__ = """The backend's answer as it produced it (the Code Assist envelope removed). Streamed:
    one of these per event (alt=sse) or a JSON array of them."""

    candidates: list[Candidate] | Null = None
    usageMetadata: UsageMetadata | Null = None
    modelVersion: str | Null = None
    responseId: str | Null = None


class CountTokensRequest(Open):
    contents: list[GeminiContent] | Null = None
    generateContentRequest: dict[str, Any] | Null = Field(
        default=None, description="a whole GenerateContentRequest, instead of contents")


class CountTokensResponse(Open):
    totalTokens: int


class EmbedContentRequest(Open):
    content: GeminiContent
    taskType: str | Null = Field(default=None, examples=["RETRIEVAL_QUERY"])
    title: str | Null = None
    outputDimensionality: int | Null = Field(default=None, ge=1)


class ContentEmbedding(Open):
    values: list[float]


class EmbedContentResponse(Open):
    embedding: ContentEmbedding


class BatchEmbedContentsRequest(Open):
    requests: list[EmbedContentRequest] = Field(min_length=1)


class BatchEmbedContentsResponse(Open):
    embeddings: list[ContentEmbedding]


class GoogleModel(Open):
    name: str = Field(examples=["models/gemini-2.5-flash"])
    baseModelId: str
    version: str
    displayName: str
    description: str
    inputTokenLimit: int
    outputTokenLimit: int
    supportedGenerationMethods: list[str]


class GoogleModelList(Open):
    models: list[GoogleModel]
