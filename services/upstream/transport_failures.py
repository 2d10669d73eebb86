"""What a failed backend exchange is called: aiohttp's and the OS's failures as
TransportError, worded for callers and marked retryable only where nothing was sent."""
from __future__ import annotations

import aiohttp

from .errors import TransportError


def describe_failure(exc: BaseException, stage: str) -> TransportError:
    """A TransportError for an aiohttp / OS failure. The message says what failed and is shown
    to callers: no host, port or path in it (aiohttp's own texts carry them; they are logged)."""
    kind = type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return TransportError("could not connect to the backend within the connect timeout", timeout=True)
    if isinstance(exc, (aiohttp.ServerTimeoutError, TimeoutError)):
        return TransportError(f"backend sent nothing within the read timeout {stage}", timeout=True)
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return TransportError("the backend's TLS certificate is not trusted (see BACKEND_CA_FILE)")
    if isinstance(exc, aiohttp.ClientSSLError):
        return TransportError(f"TLS handshake with the backend failed ({kind})")
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        return TransportError(f"the HTTP proxy refused the connection (HTTP {exc.status})")
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        return TransportError("the HTTP proxy is unreachable")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return TransportError(f"backend unreachable ({kind})")
    # From here on the request was sent: the backend may have run (and billed) the generation,
    # so the pool must not spend another credential on the same call (RFC 9110 §9.2.2: a POST
    # is not idempotent). Only failures to connect are retried elsewhere.
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return TransportError(f"backend closed the connection {stage}", retry=False)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return TransportError(f"backend answer broke off {stage} (incomplete or corrupt body)", retry=False)
    if isinstance(exc, aiohttp.ClientResponseError):
        return TransportError(f"invalid HTTP response from the backend {stage}", retry=False)
    return TransportError(f"backend unreachable ({kind})")
