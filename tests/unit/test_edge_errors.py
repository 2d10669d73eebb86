"""Error shapes per API, gRPC status mapping, and the app refusing bad input with 4xx (never 5xx).

The app tests run the real FastAPI app (lifespan included) against a real SQLite store; the
upstream address points nowhere, which is fine because every case here is refused before the
upstream would be called.
"""
from __future__ import annotations

import asyncio

import grpc
import orjson
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from starlette.testclient import TestClient

from services.edge.app import create_app
from services.edge.errors import ApiError, error_body, error_response, style_for
from services.edge.settings import EdgeSettings
from services.edge.store import NewKey, SQLiteLicenseStore, generate_key, hash_key, key_prefix
from services.edge.upstream_errors import map_rpc_error

ROOT = "/gemini_cli"


# --- which format ---------------------------------------------------------------------------

@pytest.mark.parametrize("path, headers, query, style", [
    ("/gemini_cli/v1/chat/completions", {}, "", "openai"),
    ("/gemini_cli/v1/models", {"authorization": "Bearer k"}, "", "openai"),
    ("/gemini_cli/v1/models", {"x-goog-api-key": "k"}, "", "google"),
    ("/gemini_cli/v1/models", {}, "key=k", "google"),
    ("/gemini_cli/v1/models/gemini-2.5-pro", {}, "alt=x&key=k", "google"),
    ("/gemini_cli/v1/models/gemini-2.5-pro:generateContent", {"authorization": "Bearer k"}, "", "google"),
    ("/gemini_cli/v1beta/models", {"authorization": "Bearer k"}, "", "google"),
    ("/gemini_cli/v1beta/models/x:streamGenerateContent", {}, "", "google"),
    ("/gemini_cli/v1/nothing", {}, "", "openai"),
    ("/gemini_cli/v1/messages", {"x-api-key": "k"}, "beta=true", "anthropic"),
    ("/gemini_cli/v1/messages/count_tokens", {}, "", "anthropic"),
    ("/gemini_cli/v1/messagesX", {}, "", "openai"),
])
def test_style_for(path, headers, query, style):
    assert style_for(path, ROOT, headers, query) == style


def test_openai_shape():
    err = ApiError(400, "bad temperature", param="temperature", code="invalid_type")
    assert orjson.loads(error_body("openai", err)) == {"error": {
        "message": "bad temperature", "type": "invalid_request_error", "param": "temperature", "code": "invalid_type"}}


def test_google_shape_and_retry_after():
    err = ApiError(429, "slow down", retry_after=2.2)
    body = orjson.loads(error_body("google", err))
    assert body["error"]["code"] == 429 and body["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert body["error"]["message"] == "slow down"
    assert body["error"]["details"][0]["@type"].endswith("google.rpc.RetryInfo")
    resp = error_response("google", err)
    assert resp.status_code == 429 and resp.headers["retry-after"] == "3"
    resp = error_response("openai", err)
    assert orjson.loads(resp.body)["error"]["type"] == "rate_limit_error" and resp.headers["retry-after"] == "3"


@pytest.mark.parametrize("status, sent, kind", [
    (400, 400, "invalid_request_error"), (401, 401, "authentication_error"), (403, 403, "permission_error"),
    (404, 404, "not_found_error"), (413, 413, "request_too_large"), (429, 429, "rate_limit_error"),
    (500, 500, "api_error"), (502, 502, "api_error"), (503, 529, "overloaded_error"),
])
def test_anthropic_shape(status, sent, kind):
    resp = error_response("anthropic", ApiError(status, "why", retry_after=1.0))
    assert resp.status_code == sent
    assert orjson.loads(resp.body) == {"type": "error", "error": {"type": kind, "message": "why"}}


# --- gRPC status -> HTTP ----------------------------------------------------------------------

def _details(*messages) -> list[tuple[str, bytes]]:
    st = status_pb2.Status(code=8, message="x")
    for m in messages:
        a = any_pb2.Any()
        a.Pack(m)
        st.details.append(a)
    return [("grpc-status-details-bin", st.SerializeToString())]


@pytest.mark.parametrize("code, http, gstatus", [
    (grpc.StatusCode.INVALID_ARGUMENT, 400, "INVALID_ARGUMENT"),
    (grpc.StatusCode.PERMISSION_DENIED, 403, "PERMISSION_DENIED"),
    (grpc.StatusCode.NOT_FOUND, 404, "NOT_FOUND"),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, 429, "RESOURCE_EXHAUSTED"),
    (grpc.StatusCode.UNAVAILABLE, 503, "UNAVAILABLE"),
    (grpc.StatusCode.DEADLINE_EXCEEDED, 504, "DEADLINE_EXCEEDED"),
    (grpc.StatusCode.UNAUTHENTICATED, 502, "UNAVAILABLE"),
    (grpc.StatusCode.INTERNAL, 502, "INTERNAL"),
    (grpc.StatusCode.CANCELLED, 499, "CANCELLED"),
])
def test_grpc_mapping(code, http, gstatus):
    err = map_rpc_error(code, "boom", None)
    assert (err.http_status, err.google_status) == (http, gstatus)
    api = err.to_api_error()
    assert api.status == http and api.google_status == gstatus


def test_unauthenticated_is_not_blamed_on_the_client_key():
    err = map_rpc_error(grpc.StatusCode.UNAUTHENTICATED, "no credential could authenticate", None)
    assert err.http_status != 401 and "backend credentials" in err.message


def test_retry_info_and_error_info():
    delay = duration_pb2.Duration(seconds=12, nanos=500_000_000)
    info = error_details_pb2.ErrorInfo(reason="QUOTA_EXHAUSTED", domain="cloudcode-pa.googleapis.com",
                                       metadata={"http_status": "429"})
    err = map_rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "cooling down",
                        _details(error_details_pb2.RetryInfo(retry_delay=delay), info))
    assert err.retry_after == pytest.approx(12.5) and err.reason == "QUOTA_EXHAUSTED"
    api = err.to_api_error()
    assert api.code == "quota_exhausted"
    assert error_response("openai", api).headers["retry-after"] == "13"


def test_grpc_size_limit_is_413_not_429():
    err = map_rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED,
                        "Sent message larger than max (300000000 vs. 268435456)", None)
    assert err.http_status == 413 and err.retry_after is None


def test_429_without_retry_info_still_has_retry_after():
    err = map_rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy", [("grpc-status-details-bin", b"garbage")])
    assert err.retry_after is not None and err.retry_after > 0


# --- the app refuses bad input with 4xx -----------------------------------------------------

@pytest.fixture(scope="module")
def app_and_key(tmp_path_factory):
    data = tmp_path_factory.mktemp("edge-errors")
    settings = EdgeSettings(data_dir=data, license_secret="s3cret", upstream_addr="127.0.0.1:9",
                            max_body_bytes=4000, upstream_small_timeout=0.5)

    async def make() -> tuple[str, str]:
        store = SQLiteLicenseStore(settings.license_db_location)
        try:
            out = []
            for name, kw in (("good", {}), ("narrow", {"models": ("gemini-2.5-flash",)}), ("rpm1", {"rpm": 1})):
                k = generate_key()
                await store.create_key(hash_key(b"s3cret", k), key_prefix(k), NewKey(name=name, **kw))
                out.append(k)
            k = generate_key()
            rec = await store.create_key(hash_key(b"s3cret", k), key_prefix(k), NewKey(name="gone"))
            await store.revoke(rec.id)
            out.append(k)
            return tuple(out)
        finally:
            await store.close()

    keys = asyncio.run(make())
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client, dict(zip(("good", "narrow", "rpm1", "revoked"), keys))


OAI = f"{ROOT}/v1/chat/completions"
GEN = f"{ROOT}/v1beta/models/gemini-2.5-pro:generateContent"


def _oai_error(r, status):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    return err


def _google_error(r, status):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == status and err["status"] and err["message"]
    return err


def test_health(app_and_key):
    client, _ = app_and_key
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get(f"{ROOT}/healthz").status_code == 200


def test_missing_and_unknown_keys_are_401_in_each_format(app_and_key):
    client, keys = app_and_key
    assert _oai_error(client.post(OAI, json={}), 401)["code"] == "missing_api_key"
    assert _google_error(client.post(GEN, json={}), 401)["status"] == "UNAUTHENTICATED"
    _oai_error(client.post(OAI, json={}, headers={"Authorization": "Bearer nope"}), 401)
    _google_error(client.post(GEN, json={}, headers={"x-goog-api-key": "nope"}), 401)
    r = client.post(GEN, json={}, headers={"x-goog-api-key": keys["revoked"]})
    assert "revoked" in _google_error(r, 401)["message"]
    assert keys["revoked"] not in r.text  # the key is never echoed


def test_unknown_route_and_method(app_and_key):
    client, keys = app_and_key
    h = {"Authorization": f"Bearer {keys['good']}"}
    _oai_error(client.get(f"{ROOT}/v1/nothing", headers=h), 404)
    _oai_error(client.get(OAI, headers=h), 405)
    _google_error(client.post(f"{ROOT}/v1beta/models/gemini-2.5-pro:frobnicate", json={}, headers=h), 404)
    _google_error(client.post(f"{ROOT}/v1beta/models/gemini-2.5-pro", json={}, headers=h), 404)


@pytest.mark.parametrize("url, check", [(OAI, _oai_error), (GEN, _google_error)])
def test_malformed_bodies(app_and_key, url, check):
    client, keys = app_and_key
    h = {"Authorization": f"Bearer {keys['good']}", "Content-Type": "application/json"}
    check(client.post(url, content=b"{not json", headers=h), 400)
    check(client.post(url, content=b"[1, 2]", headers=h), 400)
    check(client.post(url, content=b"", headers=h), 400)
    check(client.post(url, content=b"\xff\xfe", headers=h), 400)
    check(client.post(url, content=b"{}", headers={**h, "Content-Type": "text/plain"}), 415)
    check(client.post(url, content=b"{}", headers={**h, "Content-Type": "application/x-www-form-urlencoded"}), 415)
    check(client.post(url, content=b'{"a": "' + b"x" * 5000 + b'"}', headers=h), 413)

    def chunked():
        for _ in range(50):
            yield b" " * 100

    check(client.post(url, content=chunked(), headers=h), 413)


def test_openai_validation_names_the_parameter(app_and_key):
    client, keys = app_and_key
    h = {"Authorization": keys["good"]}
    assert _oai_error(client.post(OAI, json={"messages": []}, headers=h), 400)["param"] == "model"
    assert _oai_error(client.post(OAI, json={"model": 5, "messages": []}, headers=h), 400)["param"] == "model"
    err = _oai_error(client.post(OAI, json={"model": "gemini-2.5-pro", "messages": "hi"}, headers=h), 400)
    assert err["param"] == "messages"


def test_model_allow_list_is_403(app_and_key):
    client, keys = app_and_key
    h = {"Authorization": f"Bearer {keys['narrow']}"}
    err = _oai_error(client.post(OAI, json={"model": "gemini-2.5-pro", "messages": [{"role": "user", "content": "x"}]},
                                 headers=h), 403)
    assert err["code"] == "model_not_allowed"
    _google_error(client.post(GEN, json={"contents": []}, headers={"x-goog-api-key": keys["narrow"]}), 403)


def test_rpm_is_429_with_retry_after(app_and_key):
    client, keys = app_and_key
    h = {"x-goog-api-key": keys["rpm1"]}
    # The first request is admitted (and then fails at the unreachable upstream, not with a 4xx/429).
    first = client.post(f"{ROOT}/v1beta/models/gemini-2.5-pro:countTokens", json={"contents": []}, headers=h)
    assert first.status_code in (503, 504), first.text
    r = client.post(f"{ROOT}/v1beta/models/gemini-2.5-pro:countTokens", json={"contents": []}, headers=h)
    _google_error(r, 429)
    assert int(r.headers["retry-after"]) >= 1


def test_upstream_down_is_503_not_500(app_and_key):
    client, keys = app_and_key
    r = client.get(f"{ROOT}/v1/models", headers={"Authorization": f"Bearer {keys['good']}"})
    assert r.status_code in (503, 504)
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_too_many_media_urls_refused_before_fetching(app_and_key):
    client, keys = app_and_key
    parts = [{"type": "image_url", "image_url": {"url": f"http://192.0.2.1/{i}.png"}} for i in range(17)]
    r = client.post(OAI, headers={"Authorization": f"Bearer {keys['good']}"},
                    json={"model": "gemini-2.5-pro", "messages": [{"role": "user", "content": parts}]})
    assert _oai_error(r, 400)["code"] == "too_many_media_urls"


def test_private_media_url_refused(app_and_key):
    client, keys = app_and_key
    part = {"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/cat.png"}}
    r = client.post(OAI, headers={"Authorization": f"Bearer {keys['good']}"},
                    json={"model": "gemini-2.5-pro", "messages": [{"role": "user", "content": [part]}]})
    err = _oai_error(r, 400)
    assert err["code"] == "invalid_media" and "127.0.0.1" in err["message"]


@pytest.mark.parametrize(("code", "shown"), [
    (grpc.StatusCode.INTERNAL, False),
    (grpc.StatusCode.UNKNOWN, False),
    (grpc.StatusCode.UNAVAILABLE, False),
    (grpc.StatusCode.DEADLINE_EXCEEDED, False),
    (grpc.StatusCode.UNAUTHENTICATED, False),
    (grpc.StatusCode.PERMISSION_DENIED, False),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, False),
    (grpc.StatusCode.INVALID_ARGUMENT, True),   # about the client's own request
    (grpc.StatusCode.NOT_FOUND, True),
])
def test_upstream_details_are_withheld_from_clients(code, shown, caplog):
    detail = "failed reading /srv/creds/bob@example.com.json"
    err = map_rpc_error(code, detail, None)
    assert err.detail == detail
    api = err.to_api_error("rid-123")
    assert detail not in api.message and "bob@example.com" not in api.message
    if shown:  # about the client's own request: said, with any account name taken out
        assert api.message.startswith("failed reading /srv/creds/[account]")
        assert api.message.endswith("(request id rid-123)")
    else:
        assert api.message.endswith("(request id rid-123)") and "backend" in api.message
        assert any("rid-123" in r.getMessage() and detail in r.getMessage() for r in caplog.records)
