"""`services.upstream.transport.Transport`'s API over an ASGI app in the test's own event loop
(httpx's ASGITransport), for unit tests that run a simulator in process. The wire itself
(aiohttp, TLS, caps) is covered by tests/unit/test_upstream_transport.py and the stack tests.
"""
from __future__ import annotations

from typing import AsyncIterator, Mapping

import httpx

from services.upstream.backend_stream import MAX_ERROR_BODY
from services.upstream.body_payload import Body
from services.upstream.errors import TransportError
from services.upstream.sse import SSEParser
from services.upstream.transport import Response


def _content(body: Body | None) -> bytes | None:
    if body is None or isinstance(body, bytes):
        return body
    if isinstance(body, memoryview):
        return bytes(body)
    return b"".join(body)


class AsgiStream:
    def __init__(self, resp: httpx.Response) -> None:
        self._resp = resp
        self.status = resp.status_code
        self.headers = resp.headers

    async def error_body(self, limit: int = MAX_ERROR_BODY) -> bytes:
        return (await self._resp.aread())[:limit]

    async def events(self) -> AsyncIterator[bytes]:
        async for batch in self.batches():
            for data in batch:
                yield data

    async def batches(self) -> AsyncIterator[list[bytes]]:
        """As BackendStream.batches(): the events of each piece that came, as one list."""
        parser = SSEParser()
        try:
            async for chunk in self._resp.aiter_bytes():
                if batch := parser.feed(chunk):
                    yield batch
        except httpx.HTTPError as exc:
            raise TransportError(f"backend stream broke ({type(exc).__name__})") from None
        if batch := parser.close():
            yield batch

    async def aclose(self) -> None:
        await self._resp.aclose()


class AsgiTransport:
    """Over `http`, an httpx.AsyncClient(transport=httpx.ASGITransport(app=...)) the caller closes."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def request(self, method: str, url: str, *, headers: Mapping[str, str], body: Body | None = None,
                      proxy: str | None = None, timeout: float | None = None) -> Response:
        try:
            resp = await self.http.request(method, url, headers=headers, content=_content(body), timeout=timeout)
        except httpx.HTTPError as exc:
            raise TransportError(f"backend unreachable ({type(exc).__name__})") from None
        return Response(resp.status_code, resp.headers, resp.content)  # type: ignore[arg-type]

    async def open_stream(self, method: str, url: str, *, headers: Mapping[str, str], body: Body | None = None,
                          proxy: str | None = None) -> AsgiStream:
        request = self.http.build_request(method, url, headers=headers, content=_content(body))
        try:
            resp = await self.http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise TransportError(f"backend unreachable ({type(exc).__name__})") from None
        return AsgiStream(resp)

    async def aclose(self) -> None:
        pass  # the caller's client
