"""The one error of the media modules: media the gateway cannot use, with the status to answer."""
from __future__ import annotations


class MediaError(ValueError):
    """Media the gateway cannot use (bad data, refused or failed fetch); the edge answers
    `status` (400 unless a budget refused it: 413 too much for one request, 503 too much in
    flight on this edge)."""

    def __init__(self, message: str, url: str | None = None, *, status: int = 400, code: str = "invalid_media",
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.url = url
        self.status = status
        self.code = code
        self.retry_after = retry_after
