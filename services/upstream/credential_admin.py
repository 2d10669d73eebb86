"""What the admin console may do to credentials: switch one off or on, add one from a file.

Uploaded content is recognised by its shape only (never by a name the client chose): a Gemini
CLI oauth_creds.json, a service-account or authorized_user JSON, or an AI Studio API key as
text. It is written 0600 under a generated name into a directory the operator configured for
that kind (GEMINI_CREDENTIALS / VERTEX_CREDENTIALS as a directory, or a pool-file member whose
`file` is a directory; API keys go to a directory member of kind ai-studio, one `*.key` file
each), so nothing lands anywhere the operator did not already point the pool at.
"""
from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from typing import Any

import orjson

from . import token_store
from .cloud_credentials import ApiKeyCredential, vertex_file_kind
from .credentials import CredentialState
from .oauth_credential import OAuthCredential, looks_like_oauth_creds
from .members import configured_members
from .pool_entry import Entry
from .settings import Settings

# Larger than any real credential file; refused before parsing.
MAX_CONTENT_BYTES = 64 * 1024
_API_KEY = re.compile(r"^[A-Za-z0-9_\-.]{16,256}$")
OPERATOR_DETAIL = "disabled by the operator"


class CredentialAdminError(Exception):
    """A refusal the caller can act on; `code` is a gRPC status name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def recognise(content: bytes) -> tuple[str, str, bytes]:
    """(member kind, a human name for it, the bytes to write) for uploaded credential content."""
    if not content.strip():
        raise CredentialAdminError("INVALID_ARGUMENT", "the credential is empty")
    if len(content) > MAX_CONTENT_BYTES:
        raise CredentialAdminError("INVALID_ARGUMENT", f"a credential file is at most {MAX_CONTENT_BYTES} bytes")
    try:
        text = content.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise CredentialAdminError("INVALID_ARGUMENT", "the credential is not UTF-8 text") from None
    data: Any = None
    if text.startswith("{"):
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise CredentialAdminError("INVALID_ARGUMENT", "the credential looks like JSON but does not parse") from None
    if data is not None:
        payload = orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n"
        vertex = vertex_file_kind(data)
        if vertex is not None:
            return "vertex", vertex.replace("_", "-"), payload
        if looks_like_oauth_creds(data):
            return "code-assist", "gemini-cli-oauth", payload
        raise CredentialAdminError(
            "INVALID_ARGUMENT", "unrecognised JSON: expected a Gemini CLI oauth_creds.json (with refresh_token), "
                                "a service-account key or an authorized_user file")
    if _API_KEY.match(text):
        return "ai-studio", "ai-studio-key", text.encode() + b"\n"
    raise CredentialAdminError(
        "INVALID_ARGUMENT", "not a credential: send an oauth_creds.json, a service-account / authorized_user JSON "
                            "or an AI Studio API key")


def upload_dir(settings: Settings, kind: str) -> Path:
    """The configured, writable directory that credentials of `kind` are read from."""
    for spec in configured_members(settings):
        if spec.kind == kind and spec.file is not None and spec.file.is_dir() and os.access(spec.file, os.W_OK):
            return spec.file
    where = {"code-assist": "GEMINI_CREDENTIALS", "vertex": "VERTEX_CREDENTIALS",
             "ai-studio": "a POOL_CONFIG member of kind ai-studio"}[kind]
    raise CredentialAdminError(
        "FAILED_PRECONDITION", f"no writable credentials directory for this kind: point {where} at a directory "
                               "to add credentials from the console")


def already_in_pool(entries: list[Entry], kind: str, payload: bytes) -> bool:
    """The pool already holds this secret (the same login, the same key)."""
    if kind == "code-assist":
        token = orjson.loads(payload).get("refresh_token")
        return any(isinstance(e.cred, OAuthCredential) and e.cred._data.get("refresh_token") == token
                   for e in entries)
    if kind == "ai-studio":
        key = payload.decode().strip()
        return any(isinstance(e.cred, ApiKeyCredential) and e.cred._key == key for e in entries)
    data = orjson.loads(payload)
    ident = data.get("private_key_id") or data.get("refresh_token")
    return any(getattr(e.cred, "path", None) is not None and _same_file_secret(e.cred.path, ident) for e in entries
               if e.cred.kind == "vertex-ai")


def _same_file_secret(path: Path, ident: Any) -> bool:
    try:
        data = token_store.read_json(path)
    except (OSError, orjson.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and ident is not None and ident in (data.get("private_key_id"),
                                                                       data.get("refresh_token"))


def write_new(directory: Path, kind: str, payload: bytes) -> Path:
    """Write `payload` under a generated name (never one a client chose)."""
    suffix = ".key" if kind == "ai-studio" else ".json"
    path = directory / f"uploaded-{secrets.token_hex(6)}{suffix}"
    token_store.atomic_write_bytes(path, payload)
    return path


async def set_enabled(entry: Entry, enabled: bool) -> None:
    """DISABLED, or READY again; an oauth_creds file records the choice so it survives restarts."""
    cred = entry.cred
    if isinstance(cred, OAuthCredential) and cred.path is not None:
        disk = await token_store.read_async(cred.path)
        if not isinstance(disk, dict):
            raise CredentialAdminError("FAILED_PRECONDITION", "its credential file is not a JSON object")
        if enabled:
            disk.pop("disabled", None)
            cred._data.pop("disabled", None)
        else:
            disk["disabled"] = cred._data["disabled"] = True
        await token_store.write_async(cred.path, disk)
        detail = "disabled in its credential file"
    else:
        detail = OPERATOR_DETAIL + " (until the upstream restarts)"
    switch(cred, enabled, detail)


def switch(cred: Any, enabled: bool, detail: str) -> bool:
    """DISABLED (with `detail`), or READY again from DISABLED; True when the state changed.
    A DEAD credential stays DEAD when switched on: it still needs a new login or key."""
    if not enabled and cred.state is not CredentialState.DISABLED:
        cred.state, cred.detail = CredentialState.DISABLED, detail
        return True
    if enabled and cred.state is CredentialState.DISABLED:
        cred.state, cred.detail = CredentialState.READY, ""
        return True
    return False
