"""UpstreamServicer: the Upstream RPCs over the pool (Generate streamed or not, CountTokens,
Embed, ListModels, the credential admin calls), each measured and logged."""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any, AsyncIterator, Awaitable, Callable, NamedTuple

import grpc
import orjson
from google.api import httpbody_pb2

from gemini_cli.upstream.v1 import upstream_pb2, upstream_pb2_grpc

from . import chunked, credential_admin, errors, internal_auth
from .backend_wait import count_backend_wait
from .catalog import ModelInfo
from .credential_admin import CredentialAdminError
from .errors import Draining, InvalidRequest, UpstreamError
from .metrics import UpstreamMetrics
from .pool import Entry, Pool
from .pool_entry import build_report
from .rpc_messages import batch_message, credential_status, model_id, request_body, response_message
from services.future_exceptions import mark_retrieved

log = logging.getLogger(__name__)

# Inline media travels inside requests; the edge caps request sizes itself.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024


async def _headers_sent(headers: asyncio.Future) -> None:
    """Wait until the early headers (GenerateRequest.early_headers) went, never cancelling
    their send, even when our own task is: a batch whose awaiting task is cancelled is lost
    (grpc/grpc#43360)."""
    if not headers.done():
        await asyncio.wait((headers,))


class _CallFields(NamedTuple):
    """What a Generate's metrics and log line need of its request (not its body)."""
    model: str
    stream: bool
    caller: str

    @classmethod
    def of(cls, request: upstream_pb2.GenerateRequest) -> "_CallFields":
        return cls(request.model, request.stream, request.caller)


class UpstreamServicer(upstream_pb2_grpc.UpstreamServicer):
    def __init__(self, pool: Pool, catalog: list[ModelInfo], aliases: dict[str, str] | None = None) -> None:
        self._pool = pool
        self._aliases = aliases or {}
        self._catalog = catalog
        self.draining = False
        known = {m.id for m in catalog} | set(self._aliases)
        self.metrics = UpstreamMetrics(pool.report, lambda model: model.removeprefix("models/") in known,
                                       pool.sharing)

    def _model(self, raw: str) -> str:
        model = model_id(raw)
        return self._aliases.get(model, model)

    def _check_open(self) -> None:
        if self.draining:
            raise Draining("the upstream is shutting down; retry on another instance")

    @staticmethod
    def _generate_failed(err: UpstreamError, rid: str) -> tuple[str, Any]:
        """A Generate's failure logged: (its outcome label, the status to abort the call with)."""
        desc = errors.describe(err)
        outcome = f"{desc.code.name}/{desc.reason}"
        log.log(logging.WARNING if desc.code is not grpc.StatusCode.INVALID_ARGUMENT else logging.INFO,
                "generate id=%s failed: %s: %s", rid, outcome, desc.message)
        return outcome, errors.to_rpc_status(desc)

    def _generate_done(self, call: "_CallFields", rid: str, started: float, waited: list[float],
                       delivering: float, chunks: int, cred_id: str, cred_kind: str, outcome: str) -> None:
        elapsed = time.monotonic() - started
        self.metrics.observe("generate", call.model, cred_id, cred_kind, outcome, elapsed)
        if chunks:
            self.metrics.observe_overhead(call.model, call.stream,
                                          max(0.0, elapsed - waited[0] - delivering))
        log.info("generate id=%s caller=%s model=%s stream=%s credential=%s chunks=%d outcome=%s ms=%.0f",
                 rid, internal_auth.caller_of(call.caller), call.model, call.stream, cred_id or "-", chunks,
                 outcome, elapsed * 1000)

    async def GenerateUnary(self, request: upstream_pb2.GenerateRequest,
                            context: grpc.aio.ServicerContext) -> upstream_pb2.GenerateResponse:
        """Generate's non-streaming answer as a unary call: measured, logged and failing alike."""
        started = time.monotonic()
        waited = count_backend_wait()
        rid = request.request_id or uuid.uuid4().hex
        cred_id = cred_kind = ""
        outcome = "ok"
        try:
            self._check_open()
            if request.stream:
                raise InvalidRequest("GenerateUnary answers non-streaming calls only: use Generate to stream")
            model = self._model(request.model)
            chunk, entry = await self._pool.generate(model, request_body(request.body), rid)
            cred_id, cred_kind = entry.cred.id, entry.cred.kind
            return response_message(chunk, entry)
        except UpstreamError as err:
            outcome, status = self._generate_failed(err, rid)
            await context.abort_with_status(status)
            raise  # not reached: abort raises
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            self._generate_done(_CallFields.of(request), rid, started, waited, 0.0, 1 if cred_id else 0, cred_id,
                                cred_kind, outcome)

    async def Generate(self, request: upstream_pb2.GenerateRequest,
                       context: grpc.aio.ServicerContext) -> AsyncIterator[upstream_pb2.GenerateResponse]:
        started = time.monotonic()
        waited = count_backend_wait()
        delivering = 0.0  # time handing messages to gRPC (the edge's pace), not ours either
        rid = request.request_id or uuid.uuid4().hex
        call = _CallFields.of(request)
        coalesce = request.coalesce
        early_headers = request.early_headers
        headers: asyncio.Future | None = None
        chunks = 0
        cred_id = cred_kind = ""
        outcome = "ok"
        try:
            body = request.body
            # The request is not kept: a stream lasts minutes and the request's body (a long
            # conversation: 100 KB and more) would stay with it, once in the message and once
            # as bytes. The pool lets go of the body once the answer has started (see
            # generate_call for what gRPC itself would keep).
            del request
            self._check_open()
            model = self._model(call.model)
            body = request_body(body)
            if not call.stream:
                chunk, entry = await self._pool.generate(model, body, rid)
                cred_id, cred_kind = entry.cred.id, entry.cred.kind
                chunks = 1
                msg = response_message(chunk, entry)
                handed = time.monotonic()
                yield msg
                delivering += time.monotonic() - handed
            else:
                if early_headers:  # see GenerateRequest.early_headers
                    # Sent while the backend call starts, not before it (the first chunk waits
                    # for neither); waited for by _headers_sent, never cancelled.
                    headers = asyncio.ensure_future(context.send_initial_metadata(()))
                    headers.add_done_callback(mark_retrieved)
                stream = self._pool.stream_batches(model, body, rid)
                del body
                try:
                    async for batch, entry in stream:
                        if headers is not None:  # gRPC's first write must not send them again
                            await _headers_sent(headers)
                            headers = None
                        first = chunks == 0
                        chunks += len(batch)
                        if first:
                            cred_id, cred_kind = entry.cred.id, entry.cred.kind
                        if coalesce:
                            msg = batch_message(batch, entry if first else None)
                            handed = time.monotonic()
                            yield msg
                            delivering += time.monotonic() - handed
                        else:
                            for chunk in batch:
                                msg = response_message(chunk, entry if first else None)
                                first = False
                                handed = time.monotonic()
                                yield msg
                                delivering += time.monotonic() - handed
                            chunk = None
                        # Sent: neither is held while the next batch is read.
                        batch = msg = None
                finally:
                    await stream.aclose()
                    if headers is not None:  # gone before the status is sent
                        await _headers_sent(headers)
        except UpstreamError as err:
            outcome, status = self._generate_failed(err, rid)
            await context.abort_with_status(status)
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            self._generate_done(call, rid, started, waited, delivering, chunks, cred_id, cred_kind, outcome)

    async def GenerateChunked(self, request_iterator: AsyncIterator[chunked.Part],
                              context: grpc.aio.ServicerContext) -> AsyncIterator[upstream_pb2.GenerateResponse]:
        """Generate with the body received in parts (see services/upstream/chunked.py)."""
        try:
            self._check_open()
            request = await chunked.receive(request_iterator, MAX_MESSAGE_BYTES)
        except UpstreamError as err:
            desc = errors.describe(err)
            log.info("generate (chunked) refused: %s/%s: %s", desc.code.name, desc.reason, desc.message)
            await context.abort_with_status(errors.to_rpc_status(desc))
            return
        answer = self.Generate(request, context)  # type: ignore[arg-type]  (reads the same fields)
        del request  # Generate lets go of the body once the answer has started
        async for msg in answer:
            yield msg

    async def generate_call(self, _requests: AsyncIterator[upstream_pb2.GenerateRequest],
                            context: grpc.aio.ServicerContext) -> None:
        """Generate as this server serves it: a stream-stream handler that reads the call's one
        request with context.read() (on the wire a unary-stream call is the same). grpc.aio's
        unary-stream handler keeps the request, as the bytes received and as the parsed
        message, until the call ends: minutes for a stream, with its whole body. Messages are
        written here as grpc.aio writes a generator's, so there is no extra hop per message."""
        request = await context.read()
        if request is grpc.aio.EOF:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Generate received no request")
        answer = self.Generate(request, context)
        del request
        write = context.write
        async for msg in answer:
            await write(msg)
            msg = None  # written: not held while the next one is made

    async def _unary(self, op: str, name: str, request, context: grpc.aio.ServicerContext,
                     call: Callable[[str, bytes | memoryview, str], Awaitable[tuple[Any, Any]]]):
        """One unary pool call (CountTokens, Embed): (request id, model, result, pool entry), or
        the RPC aborted with the pool's error; measured and logged the same way for both."""
        rid = request.request_id or uuid.uuid4().hex
        started = time.monotonic()
        try:
            self._check_open()
            model = self._model(request.model)
            result, entry = await call(model, request_body(request.body), rid)
        except UpstreamError as err:
            desc = errors.describe(err)
            self.metrics.observe(op, request.model, "", "", f"{desc.code.name}/{desc.reason}",
                                 time.monotonic() - started)
            log.warning("%s id=%s failed: %s/%s: %s", name, rid, desc.code.name, desc.reason, desc.message)
            await context.abort_with_status(errors.to_rpc_status(desc))
            raise  # not reached: abort raises
        self.metrics.observe(op, request.model, entry.cred.id, entry.cred.kind, "ok", time.monotonic() - started)
        return rid, model, result, entry

    async def CountTokens(self, request: upstream_pb2.CountTokensRequest,
                          context: grpc.aio.ServicerContext) -> upstream_pb2.CountTokensResponse:
        rid, model, result, entry = await self._unary("count_tokens", "count_tokens", request, context,
                                                      self._pool.count_tokens)
        log.info("count_tokens id=%s caller=%s model=%s credential=%s", rid, internal_auth.caller_of(request.caller),
                 model, entry.cred.id)
        return upstream_pb2.CountTokensResponse(
            total_tokens=_total_tokens(result),
            body=httpbody_pb2.HttpBody(content_type="application/json", data=orjson.dumps(result)))

    async def Embed(self, request: upstream_pb2.EmbedRequest,
                    context: grpc.aio.ServicerContext) -> upstream_pb2.EmbedResponse:
        rid, model, result, entry = await self._unary("embeddings", "embed", request, context, self._pool.embed)
        log.info("embed id=%s caller=%s model=%s credential=%s n=%d", rid, internal_auth.caller_of(request.caller), model,
                 entry.cred.id, len(result.vectors))
        return upstream_pb2.EmbedResponse(
            body=httpbody_pb2.HttpBody(content_type="application/json",
                                       data=orjson.dumps({"embeddings": result.vectors})),
            prompt_tokens=result.tokens, credential_id=entry.cred.id, credential_kind=entry.cred.kind,
            trace_id=result.trace_id)

    async def ListModels(self, request: upstream_pb2.ListModelsRequest,
                         context: grpc.aio.ServicerContext) -> upstream_pb2.ListModelsResponse:
        await self._pool.ensure_loaded()
        served = [m.to_proto() for m in self._catalog if self._pool.can_serve(m.id, m.kinds, m.embedding)]
        resp = upstream_pb2.ListModelsResponse(models=served, aliases=self._aliases)
        for r in self._pool.report():
            resp.credentials.append(credential_status(r))
        sharing = self._pool.sharing()
        if sharing is not None:
            resp.sharing.configured = True
            resp.sharing.connected = sharing.connected
            resp.sharing.detail = sharing.detail
            resp.sharing.replica_id = sharing.replica_id
        if not self._pool.entries:
            # Nothing loaded: say where we looked, so the operator sees it next to the models.
            resp.credentials.append(upstream_pb2.CredentialStatus(
                id="(none)", kind="", state=upstream_pb2.CredentialStatus.STATE_UNSPECIFIED,
                detail=self._pool.no_credentials_message()))
        return resp


    # --- admin -------------------------------------------------------------------------------

    def _status_of(self, entry: Entry) -> upstream_pb2.CredentialStatus:
        return credential_status(build_report([entry], time.time())[0])

    async def _admin_abort(self, context: grpc.aio.ServicerContext, err: CredentialAdminError) -> None:
        await context.abort(getattr(grpc.StatusCode, err.code), err.message)

    async def SetCredentialEnabled(self, request: upstream_pb2.SetCredentialEnabledRequest,
                                   context: grpc.aio.ServicerContext) -> upstream_pb2.CredentialStatus:
        await self._pool.ensure_loaded()
        entry = next((e for e in self._pool.entries if e.cred.id == request.id), None)
        if entry is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no credential has that id")
        try:
            await credential_admin.set_enabled(entry, request.enabled)
        except CredentialAdminError as err:
            await self._admin_abort(context, err)
        except OSError as exc:
            log.warning("credential %s: could not rewrite its file: %s", entry.cred.id, exc)
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "its credential file cannot be rewritten")
        if self._pool.shared is not None:
            self._pool.shared.switched(entry.cred, request.enabled)
        log.info("credential %s %s by %s", entry.cred.id, "enabled" if request.enabled else "disabled",
                 internal_auth.caller_of(""))
        return self._status_of(entry)

    async def AddCredential(self, request: upstream_pb2.AddCredentialRequest,
                            context: grpc.aio.ServicerContext) -> upstream_pb2.CredentialStatus:
        await self._pool.ensure_loaded()
        try:
            kind, what, payload = credential_admin.recognise(request.content)
            directory = credential_admin.upload_dir(self._pool.settings, kind)
            if credential_admin.already_in_pool(self._pool.entries, kind, payload):
                raise CredentialAdminError("ALREADY_EXISTS", "the pool already has this credential")
            path = await asyncio.to_thread(credential_admin.write_new, directory, kind, payload)
        except CredentialAdminError as err:
            await self._admin_abort(context, err)
        except OSError as exc:
            log.warning("could not write an uploaded credential: %s", exc)
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the credentials directory cannot be written")
        await self._pool.reload()
        entry = next((e for e in self._pool.entries if getattr(e.cred, "path", None) == path), None)
        if entry is None:
            path.unlink(missing_ok=True)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the pool could not use this credential")
        log.info("credential %s (%s) added by %s", entry.cred.id, what, internal_auth.caller_of(""))
        return self._status_of(entry)


def _total_tokens(result: Any) -> int:
    total = result.get("totalTokens", 0) if isinstance(result, dict) else 0
    try:
        return int(total)
    except (TypeError, ValueError):
        return 0
