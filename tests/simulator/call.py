"""One call being answered: its record entry, reply shapes, and the fault and delivery settings it gets."""
from __future__ import annotations

import base64
import hashlib
import time
from typing import Any

import orjson
from starlette.requests import Request

from . import errors
from .faults import Fault
from .record import redact_body
from .reply import Reply
from .state import Simulator

JSON = b"application/json; charset=UTF-8"
SSE = b"text/event-stream"


def now_iso() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"


def trace_id(seq: int) -> str:
    return hashlib.sha256(b"trace-%d" % seq).hexdigest()[:16]


def response_id(seq: int) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(b"response-%d" % seq).digest()[:16]).decode().rstrip("=")


class Call:
    """One protocol request being answered: its record entry and how errors are shaped."""

    def __init__(self, sim: Simulator, op: str, request: Request) -> None:
        self.sim = sim
        self.op = op
        self.request = request
        path = request.url.path
        if request.url.query:
            path += "?" + request.url.query
        self.entry = sim.log.start(op, path, request.headers)
        self.model: str | None = None

    def json(self, status: int, obj: Any, headers: list[tuple[bytes, bytes]] | None = None) -> Reply:
        return Reply(status, [orjson.dumps(obj)], JSON, entry=self.entry, headers=headers)

    def error(self, status: int, body: dict[str, Any]) -> Reply:
        # Streaming errors arrive as a JSON array, as the real alt=sse endpoint sends them.
        reply = self.json(status, [body] if self.op == "stream" else body)
        if status == 401:
            reply.raw_headers.append((b"www-authenticate", b'Bearer realm="https://accounts.google.com/"'))
        return reply


async def read_json(call: Call) -> tuple[Any, Reply | None]:
    raw = await call.request.body()
    if not raw:
        return {}, None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None, call.error(400, errors.google_error(400, "Invalid JSON payload received. Unexpected token."))
    if not isinstance(body, dict):
        return None, call.error(400, errors.google_error(
            400, "Invalid JSON payload received. Expected an object at the top level."))
    call.entry["body"] = redact_body(body)
    return body, None


def _fault_reply(call: Call, fault: Fault) -> Reply | None:
    """The reply for a fault that replaces the answer; None for faults that alter delivery."""
    if fault.kind == "hang":
        reply = call.json(200, {})
        reply.hang = True
        return reply
    if fault.kind == "invalid_grant":
        return call.json(400, errors.INVALID_GRANT)
    status = fault.status
    if status is None:
        return None
    if call.op == "refresh":
        return call.json(status, errors.OAUTH_FAULTS[status])
    return call.error(status, errors.fault_body(status, call.model, fault.retry_delay, fault.reason, fault.message))


def take_fault(call: Call) -> tuple[Fault | None, Reply | None]:
    """(fault that alters delivery, None) or (None, reply that replaces the answer) or (None, None)."""
    fault = call.sim.faults.take(call.entry["account"], call.op, call.model)
    if fault is None:
        return None, None
    call.entry["fault"] = fault.kind
    replaced = _fault_reply(call, fault)
    return (None, replaced) if replaced is not None else (fault, None)


def shape_delivery(call: Call, reply: Reply, fault: Fault | None) -> Reply:
    reply.latency = call.sim.latency
    if reply.between is None:
        reply.between = call.sim.chunk_delay
    if fault is not None:
        if fault.kind == "slow":
            if reply.streaming:
                reply.before_each = fault.delay
            else:
                reply.latency += fault.delay
        elif fault.kind == "cut":
            reply.cut(fault.after_chunks)
        elif fault.kind == "hold":
            reply.hold(fault.after_chunks, call.sim.holds)
    return reply
