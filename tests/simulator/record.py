"""The record of every protocol request the simulator received, bounded to the newest entries."""
from __future__ import annotations

import itertools
import time
from collections import deque
from typing import Any

MAX_ENTRIES = 10_000
RECORDED_HEADERS = ("authorization", "user-agent", "content-type", "x-goog-api-client", "x-goog-api-key")


def mask_secret(value: str) -> str:
    """Only the last 6 characters survive, enough to tell tokens apart in a test."""
    return "..." + value[-6:] if len(value) > 6 else "..."


def base64_size(data: str) -> int:
    """Decoded byte count of a base64 string without decoding it."""
    n = len(data)
    pad = 2 if data.endswith("==") else 1 if data.endswith("=") else 0
    return n * 3 // 4 - pad if n % 4 == 0 else n * 3 // 4


def _redact_parts(parts: Any) -> Any:
    if not isinstance(parts, list):
        return parts
    out = parts
    for i, part in enumerate(parts):
        inline = part.get("inlineData") if isinstance(part, dict) else None
        if isinstance(inline, dict) and isinstance(inline.get("data"), str):
            if out is parts:
                out = list(parts)
            out[i] = dict(part, inlineData=dict(inline, data=f"<{base64_size(inline['data'])} bytes>"))
    return out


def _redact_contents(contents: Any) -> Any:
    if not isinstance(contents, list):
        return contents
    out = contents
    for i, content in enumerate(contents):
        if isinstance(content, dict) and "parts" in content:
            parts = _redact_parts(content["parts"])
            if parts is not content["parts"]:
                if out is contents:
                    out = list(contents)
                out[i] = dict(content, parts=parts)
    return out


def redact_body(body: Any) -> Any:
    """The body with inlineData `data` replaced by "<N bytes>"; the original is left untouched.

    Only the places a Code Assist body can hold inline data are visited (top-level or
    `request.contents` and `systemInstruction`), copying just what changes, so a large body
    costs no more than a scan of its parts.
    """
    if not isinstance(body, dict):
        return body
    inner = body.get("request")
    if isinstance(inner, dict):
        new_inner = _redact_request(inner)
        return body if new_inner is inner else dict(body, request=new_inner)
    return _redact_request(body)


def _redact_request(req: dict[str, Any]) -> dict[str, Any]:
    out = req
    contents = _redact_contents(req.get("contents"))
    if contents is not req.get("contents"):
        out = dict(out, contents=contents)
    sys_inst = req.get("systemInstruction")
    if isinstance(sys_inst, dict):
        parts = _redact_parts(sys_inst.get("parts"))
        if parts is not sys_inst.get("parts"):
            out = dict(out, systemInstruction=dict(sys_inst, parts=parts))
    return out


def select_headers(headers: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in RECORDED_HEADERS:
        value = headers.get(name)
        if value is not None:
            out[name] = mask_secret(value) if name in ("authorization", "x-goog-api-key") else value
    return out


class RequestLog:
    def __init__(self, maxlen: int = MAX_ENTRIES) -> None:
        self._entries: deque[dict[str, Any]] = deque(maxlen=maxlen)
        self._seq = itertools.count(1)

    def start(self, op: str, path: str, headers: Any) -> dict[str, Any]:
        """A new entry, visible at once (in-flight requests have finished=None)."""
        entry: dict[str, Any] = {
            "seq": next(self._seq), "op": op, "account": None, "model": None, "path": path, "body": None,
            "headers": select_headers(headers), "started": time.time(), "finished": None,
            "cancelled": False, "status": None, "fault": None,
        }
        self._entries.append(entry)
        return entry

    @staticmethod
    def finish(entry: dict[str, Any], status: int | None, cancelled: bool = False) -> None:
        entry["status"] = status
        entry["cancelled"] = cancelled
        entry["finished"] = time.time()

    def entries(self, op: str | None = None, account: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self._entries
                if (op is None or e["op"] == op) and (account is None or e["account"] == account)]

    def clear(self) -> None:
        self._entries.clear()
