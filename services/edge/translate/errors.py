"""The one exception the translation layer raises for a bad client request."""
from __future__ import annotations


class TranslationError(ValueError):
    """A request the translator cannot turn into a valid Gemini request.

    The edge answers it with HTTP 400 and OpenAI's error body
    `{"error": {"message", "type": "invalid_request_error", "param", "code"}}`.
    """

    def __init__(self, message: str, param: str | None = None, code: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code

    def to_openai(self) -> dict:
        return {"error": {"message": self.message, "type": "invalid_request_error", "param": self.param, "code": self.code}}
