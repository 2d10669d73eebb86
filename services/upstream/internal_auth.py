"""Who may call the upstream: internal callers named in INTERNAL_TOKENS_FILE.

Every call carries `authorization: Basic base64(name:token)` (gRPC metadata, or the HTTP header
a REST caller sends to Envoy's internal listener, which Envoy passes on). The file lists one
caller per line in htpasswd's SHA format, `name:{SHA}base64(sha1(token))` (what
`htpasswd -nbs name token` prints), so it holds no token and Envoy's basic_auth filter reads the
same file. Tokens are random 256-bit strings, so an unsalted hash is as good as any here.

The caller's identity is the authenticated name; the `caller` field of a request is only a label
under it (`edge/alice`: the edge, acting for the license key named alice), so no caller can pass
itself off as another.

Without INTERNAL_TOKENS_FILE the upstream serves anyone who reaches it, as caller `local`, and
only on a loopback address (a developer running it by hand).
"""
from __future__ import annotations

import base64
import binascii
import contextvars
import hashlib
import hmac
import inspect
import ipaddress
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import grpc

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ANONYMOUS = "local"

_identity: contextvars.ContextVar[str] = contextvars.ContextVar("internal_caller", default="")


class TokenFileError(ValueError):
    """INTERNAL_TOKENS_FILE cannot be used."""


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return base64.b64encode(hashlib.sha1(token.encode()).digest()).decode()


def htpasswd_line(name: str, token: str) -> str:
    if not NAME.match(name):
        raise TokenFileError(f"caller name {name!r}: use letters, digits, '.', '_' or '-' (at most 64)")
    return f"{name}:{{SHA}}{token_hash(token)}"


def basic_credentials(name: str, token: str) -> str:
    """The `authorization` value an internal caller sends."""
    return "Basic " + base64.b64encode(f"{name}:{token}".encode()).decode()


def parse_tokens(text: str, source: str = "INTERNAL_TOKENS_FILE") -> dict[str, bytes]:
    """name -> sha1 digest, from htpasswd SHA lines (blank lines and # comments ignored)."""
    callers: dict[str, bytes] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, hashed = line.partition(":")
        if not sep or not NAME.match(name) or not hashed.startswith("{SHA}"):
            raise TokenFileError(f"{source} line {number}: expected name:{{SHA}}base64-sha1")
        try:
            digest = base64.b64decode(hashed[5:], validate=True)
        except binascii.Error:
            digest = b""
        if len(digest) != 20:
            raise TokenFileError(f"{source} line {number}: the hash is not a base64 SHA-1 digest")
        if name in callers:
            raise TokenFileError(f"{source} line {number}: caller {name!r} is listed twice")
        callers[name] = digest
    if not callers:
        raise TokenFileError(f"{source} lists no caller")
    return callers


def load_tokens(path: str | Path) -> dict[str, bytes]:
    try:
        text = Path(path).expanduser().read_text()
    except OSError as exc:
        raise TokenFileError(f"INTERNAL_TOKENS_FILE {path}: {exc.strerror or exc}") from None
    return parse_tokens(text, f"INTERNAL_TOKENS_FILE {path}")


def is_loopback_listen(listen: str) -> bool:
    host = listen.rpartition(":")[0].strip("[]") or listen
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Verifier:
    callers: Mapping[str, bytes] | None  # None: no file, everyone is ANONYMOUS

    def identify(self, authorization: str | None) -> str | None:
        """The caller's name, or None when the credentials are missing or wrong."""
        if self.callers is None:
            return ANONYMOUS
        if not authorization:
            return None
        scheme, _, encoded = authorization.strip().partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            name, sep, token = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        expected = self.callers.get(name)
        if not sep or expected is None:
            return None
        if not hmac.compare_digest(hashlib.sha1(token.encode()).digest(), expected):
            return None
        return name


def current_identity() -> str:
    """The authenticated caller of the RPC being served ('' outside one)."""
    return _identity.get()


def caller_of(label: str) -> str:
    """What logs call the caller: the authenticated name, then the request's own label."""
    who = _identity.get() or ANONYMOUS
    label = "".join(ch for ch in label[:64] if ch.isprintable() and not ch.isspace())
    return f"{who}/{label}" if label else who


# What a refused caller is told (guarded; bench/auth_interceptor.py's interceptor says the same).
REFUSAL = ("internal caller credentials are missing or wrong: send "
           "'authorization: Basic base64(name:token)'")


def _authorization(metadata) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            return value
    return None


def admit(verifier: Verifier, metadata) -> bool:
    """Whether the call's metadata carries valid internal credentials; when it does, its caller
    becomes current_identity() for the task serving the call."""
    who = verifier.identify(_authorization(metadata))
    if who is None:
        return False
    _identity.set(who)
    return True


def guarded(handler: grpc.RpcMethodHandler, verifier: Verifier) -> grpc.RpcMethodHandler:
    """`handler` refusing calls without valid internal credentials (UNAUTHENTICATED, before its
    behaviour runs or reads a request of a stream) and recording the caller for it.

    The check runs in the handler's own task, so the context variable set here is this call's
    only. A server interceptor would do the same, but grpc.aio then runs a chain of coroutines
    (interceptor, continuation, lookup) for every call, health checks included
    (bench/auth_interceptor.py keeps one, to weigh that cost)."""
    def wrap(behavior):
        if inspect.isasyncgenfunction(behavior):
            async def checked_stream(request, context):
                if not admit(verifier, context.invocation_metadata()):
                    await context.abort(grpc.StatusCode.UNAUTHENTICATED, REFUSAL)
                async for message in behavior(request, context):
                    yield message
            return checked_stream

        async def checked(request, context):
            if not admit(verifier, context.invocation_metadata()):
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, REFUSAL)
            return await behavior(request, context)
        return checked

    kw = dict(request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(wrap(handler.unary_unary), **kw)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(wrap(handler.unary_stream), **kw)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(wrap(handler.stream_unary), **kw)
    return grpc.stream_stream_rpc_method_handler(wrap(handler.stream_stream), **kw)


def verifier_for(tokens_file: str, listen: str) -> Verifier:
    """The verifier for these settings; TokenFileError when they would leave the upstream open
    to other hosts."""
    if tokens_file.strip():
        return Verifier(load_tokens(tokens_file.strip()))
    if not is_loopback_listen(listen):
        raise TokenFileError(f"UPSTREAM_LISTEN {listen} is not a loopback address: set INTERNAL_TOKENS_FILE "
                             "so that only authenticated internal callers are served")
    return Verifier(None)
