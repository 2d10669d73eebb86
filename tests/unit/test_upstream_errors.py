"""Backend error bodies → BackendError, and every error → its gRPC status with details."""
from __future__ import annotations

import grpc
import orjson
import pytest
from google.rpc import error_details_pb2, status_pb2

from services.upstream import errors
from services.upstream.code_assist import parse_backend_error, parse_duration, unwrap
from services.upstream.errors import BackendError

QUOTA_429 = {
    "error": {
        "code": 429,
        "message": "You have exhausted your capacity on this model. Your quota will reset after 5h59m59s.",
        "status": "RESOURCE_EXHAUSTED",
        "details": [
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "QUOTA_EXHAUSTED",
             "domain": "cloudcode-pa.googleapis.com",
             "metadata": {"uiMessage": "true", "model": "gemini-3-pro-preview", "quotaResetDelay": "5h59m59.96s",
                          "quotaResetTimeStamp": "2025-12-03T07:45:40Z"}},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "21599.960323804s"},
        ],
    }
}
ONLY_RESET_DELAY = {"error": {"code": 429, "message": "x", "status": "RESOURCE_EXHAUSTED", "details": [
    {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "RATE_LIMIT_EXCEEDED",
     "metadata": {"quotaResetDelay": "1m30.5s"}}]}}
GENERIC_429 = {"error": {"code": 429, "message": "Resource exhausted. Please try again later.",
                         "errors": [{"domain": "global", "reason": "rateLimitExceeded"}],
                         "status": "RESOURCE_EXHAUSTED"}}
MESSAGE_DELAY = {"error": {"code": 429, "message": "Quota exceeded. Please retry in 36.5s.",
                           "status": "RESOURCE_EXHAUSTED"}}
SUBSCRIPTION_403 = {"error": {"code": 403, "message": "You lack a Gemini Code Assist license", "status":
                              "PERMISSION_DENIED", "details": [
                                  {"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                   "reason": "SUBSCRIPTION_REQUIRED", "domain": "cloudaicompanion.googleapis.com"}]}}


@pytest.mark.parametrize("status,body,expect", [
    (429, orjson.dumps(QUOTA_429), dict(status="RESOURCE_EXHAUSTED", reason="QUOTA_EXHAUSTED",
                                        domain="cloudcode-pa.googleapis.com", retry=21599.960323804)),
    (429, orjson.dumps([QUOTA_429]), dict(status="RESOURCE_EXHAUSTED", reason="QUOTA_EXHAUSTED",
                                          retry=21599.960323804)),
    (429, orjson.dumps(ONLY_RESET_DELAY), dict(reason="RATE_LIMIT_EXCEEDED", retry=90.5)),
    (429, orjson.dumps(GENERIC_429), dict(reason="rateLimitExceeded", domain="global", retry=None,
                                          message="Resource exhausted. Please try again later.")),
    (429, orjson.dumps(MESSAGE_DELAY), dict(retry=36.5)),
    (403, orjson.dumps(SUBSCRIPTION_403), dict(status="PERMISSION_DENIED", reason="SUBSCRIPTION_REQUIRED",
                                               domain="cloudaicompanion.googleapis.com", retry=None)),
    # Streamed errors sometimes carry doubled commas.
    (400, b'[{"error": {"code": 400,, "message": "Request contains an invalid argument.", "status": '
          b'"INVALID_ARGUMENT"}}]', dict(status="INVALID_ARGUMENT", message="Request contains an invalid argument.")),
    (502, b"<html>Bad Gateway</html>", dict(status="", message="<html>Bad Gateway</html>", retry=None)),
    (500, b"", dict(message="backend answered HTTP 500")),
    (400, b'{"error":"invalid_grant","error_description":"Token has been expired or revoked."}',
     dict(reason="invalid_grant", message="Token has been expired or revoked.")),
    (429, b'{"error":{"code":429,"details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo",'
          b'"retryDelay":{"seconds":3,"nanos":500000000}}]}}', dict(retry=3.5)),
])
def test_parse_backend_error(status: int, body: bytes, expect: dict) -> None:
    err = parse_backend_error(status, body)
    assert err.http_status == status
    for key, value in expect.items():
        actual = err.retry_delay_s if key == "retry" else getattr(err, key)
        if isinstance(value, float):
            assert actual == pytest.approx(value)
        else:
            assert actual == value, key


@pytest.mark.parametrize("text,seconds", [
    ("21599.960323804s", 21599.960323804), ("2.5s", 2.5), ("0s", 0.0), ("5h59m59.96s", 21599.96),
    ("1m", 60.0), ("500ms", 0.5), ("1h", 3600.0), ("36.5s.", 36.5),
    ("", None), ("soon", None), ("5 s", None), ("s", None), (None, None), (12, None),
    ({"seconds": "7"}, 7.0),
])
def test_parse_duration(text, seconds) -> None:
    got = parse_duration(text)
    assert got == (pytest.approx(seconds) if seconds is not None else None)


def test_unwrap_envelope_and_error_event() -> None:
    chunk = unwrap({"response": {"candidates": [], "usageMetadata": {"totalTokenCount": 3}}, "traceId": "t1"})
    assert orjson.loads(chunk.data) == {"candidates": [], "usageMetadata": {"totalTokenCount": 3}}
    assert chunk.usage == {"totalTokenCount": 3} and chunk.trace_id == "t1"
    # No `response`: read as a reply without candidates (as the Gemini CLI does).
    assert unwrap({"traceId": "t"}).data == b"{}"
    with pytest.raises(BackendError) as info:
        unwrap([{"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}])
    assert info.value.http_status == 503 and info.value.message == "overloaded"


def test_unwrapped_chunk_holds_no_spare_buffer() -> None:
    """A chunk stays referenced while its stream waits for the next event: its data must cost
    what it holds, not orjson's working buffer (4-8 KiB for a short event)."""
    import gc
    import tracemalloc

    event = {"response": {"candidates": [{"content": {"role": "model", "parts": [{"text": "w" * 300}]}}]},
             "traceId": "t"}
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        kept = [unwrap(event).data for _ in range(64)]
        gc.collect()
        held = (tracemalloc.get_traced_memory()[0] - before) / len(kept)
    finally:
        tracemalloc.stop()
    assert held < len(kept[0]) + 128, f"{held:.0f} bytes held per {len(kept[0])}-byte chunk"


def _backend(http_status: int, **kw) -> BackendError:
    return BackendError(http_status, **kw)


@pytest.mark.parametrize("err,code,reason", [
    (_backend(400, status="INVALID_ARGUMENT", message="bad"), grpc.StatusCode.INVALID_ARGUMENT, errors.REASON_BACKEND),
    (_backend(401), grpc.StatusCode.UNAUTHENTICATED, errors.REASON_BACKEND),
    (_backend(403), grpc.StatusCode.PERMISSION_DENIED, errors.REASON_BACKEND),
    (_backend(404), grpc.StatusCode.NOT_FOUND, errors.REASON_BACKEND),
    (_backend(409), grpc.StatusCode.ABORTED, errors.REASON_BACKEND),
    (_backend(418), grpc.StatusCode.FAILED_PRECONDITION, errors.REASON_BACKEND),
    (_backend(429), grpc.StatusCode.RESOURCE_EXHAUSTED, errors.REASON_BACKEND),
    (_backend(500), grpc.StatusCode.UNAVAILABLE, errors.REASON_BACKEND),
    (_backend(503), grpc.StatusCode.UNAVAILABLE, errors.REASON_BACKEND),
    (_backend(504), grpc.StatusCode.DEADLINE_EXCEEDED, errors.REASON_BACKEND),
    (errors.InvalidRequest("x"), grpc.StatusCode.INVALID_ARGUMENT, errors.REASON_INVALID_REQUEST),
    (errors.NoCredentials("x"), grpc.StatusCode.UNAUTHENTICATED, errors.REASON_NO_CREDENTIALS),
    (errors.StreamCut("x"), grpc.StatusCode.UNAVAILABLE, errors.REASON_STREAM_CUT),
    (errors.EmptyStream("x"), grpc.StatusCode.UNAVAILABLE, errors.REASON_EMPTY),
    (errors.TransportError("x"), grpc.StatusCode.UNAVAILABLE, errors.REASON_UNREACHABLE),
    (errors.TransportError("x", timeout=True), grpc.StatusCode.DEADLINE_EXCEEDED, errors.REASON_TIMEOUT),
    (errors.RefreshError("x", permanent=True), grpc.StatusCode.UNAUTHENTICATED, errors.REASON_CREDENTIALS_DEAD),
    (errors.ProjectError("x", permanent=True, ineligible=True), grpc.StatusCode.PERMISSION_DENIED,
     errors.REASON_CREDENTIALS_INELIGIBLE),
    (errors.RefreshError("x", permanent=False), grpc.StatusCode.UNAVAILABLE, errors.REASON_CREDENTIALS_UNAVAILABLE),
    (errors.Draining("x"), grpc.StatusCode.UNAVAILABLE, errors.REASON_DRAINING),
    (RuntimeError("boom"), grpc.StatusCode.INTERNAL, "INTERNAL"),
])
def test_describe(err, code, reason) -> None:
    desc = errors.describe(err)
    assert (desc.code, desc.reason) == (code, reason)


def _unpack(status: grpc.Status) -> tuple[status_pb2.Status, error_details_pb2.ErrorInfo,
                                          error_details_pb2.RetryInfo | None]:
    (key, raw), = status.trailing_metadata
    assert key == "grpc-status-details-bin"
    proto = status_pb2.Status.FromString(raw)
    info = error_details_pb2.ErrorInfo()
    retry = None
    for detail in proto.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
    return proto, info, retry


def test_backend_error_keeps_its_message_and_origin_in_metadata() -> None:
    err = parse_backend_error(400, orjson.dumps({"error": {"code": 400, "message": "function call is missing a "
                                                           "thought_signature", "status": "INVALID_ARGUMENT"}}))
    status = errors.to_rpc_status(errors.describe(err))
    proto, info, retry = _unpack(status)
    assert status.code is grpc.StatusCode.INVALID_ARGUMENT
    assert proto.message == status.details == "function call is missing a thought_signature"
    assert info.reason == errors.REASON_BACKEND and info.domain == errors.DOMAIN
    assert dict(info.metadata) == {"http_status": "400", "upstream_status": "INVALID_ARGUMENT"}
    assert retry is None


def test_all_cooling_carries_retry_info_and_the_backend_reason() -> None:
    last = parse_backend_error(429, orjson.dumps(QUOTA_429))
    err = errors.PoolExhausted("all cooling", code=grpc.StatusCode.RESOURCE_EXHAUSTED,
                               reason=errors.REASON_ALL_COOLING, retry_delay_s=12.25, last=last)
    status = errors.to_rpc_status(errors.describe(err))
    proto, info, retry = _unpack(status)
    assert status.code is grpc.StatusCode.RESOURCE_EXHAUSTED and proto.code == 8
    assert info.reason == errors.REASON_ALL_COOLING
    assert info.metadata["upstream_reason"] == "QUOTA_EXHAUSTED" and info.metadata["http_status"] == "429"
    assert retry is not None
    assert (retry.retry_delay.seconds, retry.retry_delay.nanos) == (12, 250_000_000)
