"""The usage ledger: one row per request, written off the request path.

Routes call `Meter.finish()` (synchronous, no I/O) when a request ends — successfully, with an
error, or because the client went away. Rows queue in memory and a background task writes them
in batches, one transaction each. A failed write keeps its rows and retries; rows that still
cannot be written at shutdown go to a JSON-lines file next to the database, so none is lost.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict
from typing import Any, Awaitable, Callable, TypeVar
from pathlib import Path

import orjson
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from services.edge.limits import Limits, Reservation
from services.edge.store import LicenseStore, UsageRow
from services.edge.errors import ApiError
from services.edge.upstream_errors import UpstreamError
from services.edge.upstream_stream import UpstreamStream, Usage

log = logging.getLogger("edge.usage")
# One line per request (LOG_FORMAT=json: one object), written where its ledger row is made.
request_log = logging.getLogger("edge.request")

# Output text streamed per token, to bill a stream that ended without the backend's usage.
CHARS_PER_TOKEN = 4


class UsageRecorder:
    def __init__(self, store: LicenseStore, limiter: Limits | None = None, *, flush_interval: float = 0.1,
                 batch_max: int = 1000, spill_dir: Path | None = None) -> None:
        self._store = store
        self._limiter = limiter
        self._interval = flush_interval
        self._batch_max = batch_max
        self._spill_dir = spill_dir
        self._queue: list[UsageRow] = []
        self._pending: dict[int, int] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._lock = asyncio.Lock()
        self.written = 0
        # Where every finished request is also counted (services/edge/metrics.py), when set.
        self.metrics: Any = None
        # Key id → name, for the request log line (the app sets the key cache's map).
        self.key_names: dict[int, str] = {}

    def record(self, row: UsageRow, *, counted: bool = False) -> None:
        """Queue a ledger row. Its tokens go to the limiter too, unless `counted` (a settled
        reservation already counted them)."""
        self._queue.append(row)
        if row.total_tokens:
            self._pending[row.key_id] = self._pending.get(row.key_id, 0) + row.total_tokens
            if self._limiter is not None and not counted:
                self._limiter.record_tokens(row.key_id, row.total_tokens)
        if len(self._queue) >= self._batch_max:
            self._wake.set()

    def pending_tokens(self, key_id: int) -> int:
        """Tokens recorded for a key whose rows are not committed yet (quota bookkeeping)."""
        return self._pending.get(key_id, 0)

    @property
    def queued(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="usage-flush")

    async def _run(self) -> None:
        backoff = self._interval
        while not self._stopping:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=backoff)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            ok = await self.flush()
            backoff = self._interval if ok else min(backoff * 2, 5.0)

    async def flush(self) -> bool:
        """Write everything queued; False when the store refused (rows stay queued)."""
        async with self._lock:
            while self._queue:
                batch = self._queue[: self._batch_max]
                del self._queue[: len(batch)]
                try:
                    await self._store.record_usage(batch)
                except Exception:
                    log.exception("usage ledger write failed; %d rows kept for retry", len(batch))
                    self._queue[:0] = batch
                    return False
                self.written += len(batch)
                for row in batch:
                    if row.total_tokens:
                        left = self._pending.get(row.key_id, 0) - row.total_tokens
                        if left > 0:
                            self._pending[row.key_id] = left
                        else:
                            self._pending.pop(row.key_id, None)
            return True

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await self._task
            except Exception:
                log.exception("usage flusher failed")
            self._task = None
        for _ in range(3):
            if await self.flush():
                return
            await asyncio.sleep(0.2)
        self._spill()

    def _spill(self) -> None:
        if not self._queue:
            return
        directory = self._spill_dir or Path(".")
        path = directory / f"usage-unwritten-{int(time.time())}.jsonl"
        with open(path, "ab") as fh:
            for row in self._queue:
                fh.write(orjson.dumps(asdict(row)) + b"\n")
        log.error("ledger unavailable at shutdown: %d usage rows saved to %s", len(self._queue), path)
        self._queue.clear()


class Meter:
    """Measures one request and records its ledger row exactly once; settles the request's
    token reservation (see services/edge/admission.py) at the same moment."""

    __slots__ = ("recorder", "key_id", "api", "op", "model", "request_id", "started", "done",
                 "credential_kind", "credential_id", "reservation", "_deferred", "first_at",
                 "trace_id", "upstream_at", "upstream_done", "work")

    def __init__(self, recorder: UsageRecorder, key_id: int, api: str, op: str, model: str,
                 request_id: str = "") -> None:
        self.recorder = recorder
        self.key_id = key_id
        self.api = api
        self.op = op
        self.model = model
        self.request_id = request_id
        self.started = time.perf_counter()
        self.done = False
        self.credential_kind = ""
        self.credential_id = ""
        self.reservation: Reservation | None = None
        self._deferred: list[Callable[[], None]] | None = None
        self.first_at: float | None = None
        self.trace_id = ""
        # The gateway's overhead (metrics.py): when the upstream call started and (unary) when
        # its answer came, and the seconds spent on streamed chunks.
        self.upstream_at: float | None = None
        self.upstream_done: float | None = None
        self.work = 0.0

    def defer(self, fn: Callable[[], None]) -> None:
        """Call `fn` when the request ends, whichever way (giving back a media budget...), or
        earlier through `run_deferred()`."""
        if self._deferred is None:
            self._deferred = []
        self._deferred.append(fn)

    def run_deferred(self) -> None:
        """Run the deferred calls now (the backend has the request: its media may go)."""
        deferred, self._deferred = self._deferred, None
        for fn in deferred or ():
            fn()

    def calling(self) -> None:
        """The upstream call starts now (what came before it is the gateway's time)."""
        self.upstream_at = time.perf_counter()

    def answered(self) -> None:
        """The upstream's unary answer arrived (what comes after it is the gateway's time)."""
        self.upstream_done = time.perf_counter()

    def overhead(self, now: float) -> float | None:
        """Seconds spent in the edge rather than waiting for the upstream; None when the
        request never reached it."""
        if self.upstream_at is None:
            return None
        after = now - self.upstream_done if self.upstream_done is not None else 0.0
        return (self.upstream_at - self.started) + self.work + after

    def served_by(self, kind: str, credential_id: str = "") -> None:
        """Note which credential served the call (from the upstream's first message)."""
        if kind:
            self.credential_kind, self.credential_id = kind, credential_id

    def __del__(self) -> None:
        # A path that never finished its meter (a stream body that never started) must not keep
        # its reservation, and the request still gets its ledger row.
        if not self.done:
            try:
                self.finish(499)
            except Exception:
                pass

    def finish_stream(self, status: int, stream: UpstreamStream) -> None:
        """Finish a streamed request: the backend's usage, or, when it sent none (the stream
        was cut or abandoned), what was streamed: the prompt estimate plus output text / 4."""
        usage = stream.usage
        self.first_at = stream.first_at
        self.trace_id = stream.trace_id
        if usage is None and stream.messages:
            prompt = self.reservation.prompt if self.reservation is not None else 0
            completion = -(-stream.text_chars // CHARS_PER_TOKEN)
            usage = Usage(prompt=prompt, completion=completion, total=prompt + completion)
        self.finish(status, usage)

    def finish(self, status: int, usage: Usage | None = None) -> None:
        if self.done:
            return
        self.done = True
        self.run_deferred()
        u = usage or Usage()
        res = self.reservation
        if res is not None:
            res.settle(u.total)
        self.recorder.record(UsageRow(
            key_id=self.key_id, api=self.api, op=self.op, model=self.model, status=status,
            latency_ms=round((time.perf_counter() - self.started) * 1000.0, 3),
            prompt_tokens=u.prompt, completion_tokens=u.completion, thought_tokens=u.thoughts,
            cached_tokens=u.cached, total_tokens=u.total, request_id=self.request_id,
            credential_kind=self.credential_kind, credential_id=self.credential_id),
            counted=res is not None and res.counts)
        overhead = self.overhead(time.perf_counter())
        if request_log.isEnabledFor(logging.INFO):
            self._log_line(status, u, overhead)
        metrics = self.recorder.metrics
        if metrics is not None:
            metrics.observe(key_id=self.key_id, api=self.api, op=self.op, model=self.model,
                            credential_kind=self.credential_kind, status=status, started=self.started,
                            first_at=self.first_at, prompt=u.prompt, completion=u.completion, thoughts=u.thoughts,
                            overhead=overhead)


    def _log_line(self, status: int, u: Usage, overhead: float | None) -> None:
        # Names and numbers only: never a key, a token or a prompt.
        now = time.perf_counter()
        request_log.info("%s %s/%s %d", self.request_id, self.api, self.op, status, extra={"fields": {
            "request_id": self.request_id, "key": self.recorder.key_names.get(self.key_id, str(self.key_id)),
            "api": self.api, "op": self.op, "model": self.model, "status": status,
            "prompt_tokens": u.prompt, "completion_tokens": u.completion, "thought_tokens": u.thoughts,
            "total_tokens": u.total,
            "ttfb_ms": round((self.first_at - self.started) * 1000.0, 1) if self.first_at is not None else None,
            "ms": round((now - self.started) * 1000.0, 1),
            "overhead_ms": round(overhead * 1000.0, 2) if overhead is not None else None,
            "credential": f"{self.credential_kind}/{self.credential_id}" if self.credential_kind else None,
            "trace_id": self.trace_id or None}})


class MeteredResponse(Response):
    """A unary answer whose ledger row (and log line and metrics) is made once its bytes are
    written, not on the way to the client's first byte. The row says `status` whatever
    happens while writing, as it did when it was made before."""

    def __init__(self, content: bytes, meter: Meter, usage: Usage | None, *, headers: dict[str, str],
                 status: int = 200, media_type: str = "application/json") -> None:
        super().__init__(content, media_type=media_type, headers=headers)
        self._meter = meter
        self._usage = usage
        self._status = status

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._meter.finish(self._status, self._usage)


T = TypeVar("T")


async def metered(meter: Meter, call: Awaitable[T]) -> T:
    """Run a route's work so that every way it can fail still leaves its ledger row.

    Refusals by the edge keep their status, backend errors become the API's error with the
    backend's status, and a client that left is recorded as 499.
    """
    try:
        return await call
    except ApiError as exc:
        meter.finish(exc.status)
        raise
    except UpstreamError as exc:
        meter.finish(exc.http_status)
        raise exc.to_api_error(meter.request_id) from None
    except (asyncio.CancelledError, ClientDisconnect):
        meter.finish(499)
        raise
    except Exception:
        meter.finish(500)
        raise
