"""Reading and atomically rewriting credential files.

The file may be shared with a running Gemini CLI, and several refreshes (of different
credentials, or by several gateway processes) may write at once, so a reader must only ever
see the old file or the new one: write a temp file in the same directory, fsync it, chmod
0600, os.replace() it over the target, then fsync the directory so the rename survives a
crash. Fields we do not know are kept as they were.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

import orjson

FILE_MODE = 0o600


def read_json(path: Path) -> Any:
    return orjson.loads(path.read_bytes())


def atomic_write_json(path: Path, data: Any) -> None:
    """Replace `path` with `data` as pretty JSON (as the Gemini CLI writes it), mode 0600."""
    atomic_write_bytes(path, orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Replace (or create) `path` with `payload`, mode 0600, never half-written."""
    directory = path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, FILE_MODE)
        view = memoryview(payload)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    try:
        dfd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory; the rename itself is still atomic
    finally:
        os.close(dfd)


def merge_token_reply(current: dict[str, Any], reply: dict[str, Any], now_ms: int) -> dict[str, Any]:
    """The file content after a refresh: new token fields, everything else untouched.

    The token endpoint usually omits refresh_token; the old one then stays. expiry_date is
    milliseconds since the epoch, as google-auth-library computes it.
    """
    merged = dict(current)
    merged["access_token"] = reply["access_token"]
    expires_in = reply.get("expires_in")
    if isinstance(expires_in, (int, float)) and not isinstance(expires_in, bool):
        merged["expiry_date"] = now_ms + int(expires_in * 1000)
    elif "expiry_date" in merged:
        # No lifetime given: assume the usual hour rather than keep a stale expiry.
        merged["expiry_date"] = now_ms + 3600 * 1000
    for key in ("refresh_token", "id_token", "scope", "token_type"):
        if reply.get(key):
            merged[key] = reply[key]
    return merged


async def write_async(path: Path, data: Any) -> None:
    await asyncio.to_thread(atomic_write_json, path, data)


async def read_async(path: Path) -> Any:
    return await asyncio.to_thread(read_json, path)
