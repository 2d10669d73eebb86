"""Building blocks of the request/response models: the base class and the field helpers.

The models describe what clients send and get; they never run on a request. `extra="allow"`
where clients send more than is described (SDKs add fields release after release, and the
gateway passes on or ignores what it does not know)."""
from __future__ import annotations

from typing import Any, Callable

from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import SkipJsonSchema

# `x: int | Null = None`: an optional member that clients omit rather than send as null.
Null = SkipJsonSchema[None]


class Open(BaseModel):
    """A JSON object that may carry more members than described."""

    model_config = ConfigDict(extra="allow")


class Closed(BaseModel):
    """A JSON object with exactly the members described (answers the gateway writes)."""

    model_config = ConfigDict(extra="forbid")


class Operation:
    """One documented operation of a route: `path` relative to ROOT_PATH, the request body
    model, the JSON answer, the event of its stream (text/event-stream) and the API's error body."""

    __slots__ = ("method", "path", "operation_id", "summary", "tag", "body", "response", "stream_event",
                 "error", "path_params", "query", "description", "traced")

    def __init__(self, method: str, path: str, operation_id: str, summary: str, *, tag: str,
                 error: type[BaseModel], body: type[BaseModel] | None = None,
                 response: type[BaseModel] | None = None, stream_event: type[BaseModel] | None = None,
                 path_params: dict[str, dict[str, Any]] | None = None,
                 query: dict[str, dict[str, Any]] | None = None, description: str = "",
                 traced: bool = False) -> None:
        self.method = method.lower()
        self.path = path
        self.operation_id = operation_id
        self.summary = summary
        self.tag = tag
        self.error = error
        self.body = body
        self.response = response
        self.stream_event = stream_event
        self.path_params = path_params or {}
        self.query = query or {}
        self.description = description
        self.traced = traced  # a generation: its answer carries Google's trace id


def documented(*operations: Operation) -> Callable[[Callable], Callable]:
    """Attach `operations` to a route endpoint (read by build.openapi; no effect on requests)."""
    def attach(endpoint: Callable) -> Callable:
        endpoint.api_operations = operations  # type: ignore[attr-defined]
        return endpoint
    return attach
