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


# A model's schema description is its __doc__, spelt as an assignment (`__doc__ = """..."""`):
# the edge runs under python -OO (services/docstrings.py), which drops docstrings, not assignments.
class Open(BaseModel):
    """A JSON object that may carry more members than described."""

    model_config = ConfigDict(extra="allow")


class Closed(BaseModel):
    """A JSON object with exactly the members described (answers the gateway writes)."""

    model_config = ConfigDict(extra="forbid")


class ModelRef:
    """A model named by module and class, imported when the document is first built."""

    __slots__ = ("module", "name")

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def load(self) -> type[BaseModel]:
        return getattr(__import__(self.module, fromlist=[self.name]), self.name)


class LazyModels:
    """Stands for a module of models where routes declare operations: `oa.ChatCompletion` is a
    ModelRef. The models (~2 MiB) are imported by the first /openapi.json, not by every edge."""

    def __init__(self, module: str) -> None:
        self._module = module

    def __getattr__(self, name: str) -> ModelRef:
        if name.startswith("__"):
            raise AttributeError(name)
        return ModelRef(self._module, name)


Model = type[BaseModel] | ModelRef


def _model(value: Any) -> Any:
    return value.load() if isinstance(value, ModelRef) else value


class Operation:
    """One documented operation of a route: `path` relative to ROOT_PATH, the request body
    model, the JSON answer, the event of its stream (text/event-stream) and the API's error body."""

    __slots__ = ("method", "path", "operation_id", "summary", "tag", "_body", "_response", "_stream_event",
                 "_error", "path_params", "query", "description", "traced")

    def __init__(self, method: str, path: str, operation_id: str, summary: str, *, tag: str,
                 error: Model, body: Model | None = None,
                 response: Model | None = None, stream_event: Model | None = None,
                 path_params: dict[str, dict[str, Any]] | None = None,
                 query: dict[str, dict[str, Any]] | None = None, description: str = "",
                 traced: bool = False) -> None:
        self.method = method.lower()
        self.path = path
        self.operation_id = operation_id
        self.summary = summary
        self.tag = tag
        self._error = error
        self._body = body
        self._response = response
        self._stream_event = stream_event
        self.path_params = path_params or {}
        self.query = query or {}
        self.description = description
        self.traced = traced  # a generation: its answer carries Google's trace id

    # The models, imported on first use (ModelRef).
    @property
    def error(self) -> type[BaseModel]:
        return _model(self._error)

    @property
    def body(self) -> type[BaseModel] | None:
        return _model(self._body)

    @property
    def response(self) -> type[BaseModel] | None:
        return _model(self._response)

    @property
    def stream_event(self) -> type[BaseModel] | None:
        return _model(self._stream_event)


def documented(*operations: Operation) -> Callable[[Callable], Callable]:
    """Attach `operations` to a route endpoint (read by build.openapi; no effect on requests)."""
    def attach(endpoint: Callable) -> Callable:
        endpoint.api_operations = operations  # type: ignore[attr-defined]
        return endpoint
    return attach
