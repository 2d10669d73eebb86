"""The admin JSON API on the real edge app (lifespan, SQLite store) through httpx's ASGI
transport: the admin token (generated, hashed, rotated, set), who may not get in, the key
operations, usage and the request log, and clear JSON errors where the upstream is missing.
The credential operations need a real upstream: tests/integration/test_admin_stack.py."""
from __future__ import annotations

import asyncio
import io
import logging
import re
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.edge import keys as keys_cli
from services.edge.admin_token import HASH_FILE
from services.edge.app import create_app
from services.edge.settings import EdgeSettings
from services.edge.store import UsageRow

ROOT = "/gemini_cli"
API = f"{ROOT}/admin/api"
SECRET = "unit-admin-secret"


def _settings(data: Path, **kw) -> EdgeSettings:
    return EdgeSettings(data_dir=data, license_secret=SECRET, upstream_addr="127.0.0.1:9",
                        upstream_small_timeout=0.5, edge_metrics_port=-1, auth_refresh_seconds=0.05, **kw)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _error(r, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert err["message"]
    if code is not None:
        assert err["code"] == code, err
    return err


@pytest.fixture
def generated(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """An edge without ADMIN_TOKEN: (client, the token it printed once, data dir)."""
    caplog.set_level(logging.WARNING, logger="edge")
    with TestClient(create_app(_settings(tmp_path)), raise_server_exceptions=False) as client:
        printed = re.findall(r"admin token \(shown once, keep it\): (\S+)", caplog.text)
        assert len(printed) == 1, caplog.text
        yield client, printed[0], tmp_path


@pytest.fixture
def admin(tmp_path: Path):
    """An edge with ADMIN_TOKEN set: (client, token)."""
    token = "gwadmin-unit-" + "x" * 30
    with TestClient(create_app(_settings(tmp_path, admin_token=token)), raise_server_exceptions=False) as client:
        yield client, token


def test_generated_token_is_printed_once_and_stored_hashed(generated, caplog):
    client, token, data = generated
    assert token.startswith("gwadmin-")
    stored = data / HASH_FILE
    assert stored.stat().st_mode & 0o077 == 0
    assert token not in stored.read_text()
    assert not any(token in p.read_bytes().decode(errors="replace") for p in data.rglob("*") if p.is_file())
    assert client.get(f"{API}/session", headers=_bearer(token)).json()["ok"] is True
    # A restart on the same data directory keeps the token and does not print it again.
    caplog.clear()
    with TestClient(create_app(_settings(data)), raise_server_exceptions=False) as again:
        assert again.get(f"{API}/session", headers=_bearer(token)).status_code == 200
    assert token not in caplog.text and "shown once" not in caplog.text


def test_rotation_takes_effect_on_the_running_edge(generated, monkeypatch):
    client, old, data = generated
    out, err = io.StringIO(), io.StringIO()
    args = keys_cli.build_parser().parse_args(["--data-dir", str(data), "admin-token", "rotate"])
    monkeypatch.setenv("LICENSE_SECRET", SECRET)
    assert asyncio.run(keys_cli.run(args, out=out, err=err)) == 0
    new = out.getvalue().strip()
    assert new.startswith("gwadmin-") and new != old
    _error(client.get(f"{API}/session", headers=_bearer(old)), 401, "invalid_admin_token")
    assert client.get(f"{API}/session", headers=_bearer(new)).status_code == 200


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer "}, {"Authorization": "Basic abc"},
                                     {"x-goog-api-key": "gwadmin-x"}, {"x-api-key": "gwadmin-x"}])
def test_no_token_is_401(admin, headers):
    client, _ = admin
    _error(client.get(f"{API}/keys", headers=headers), 401, "admin_token_required")


def test_token_only_as_bearer(admin):
    client, token = admin
    _error(client.get(f"{API}/keys?key={token}"), 401, "admin_token_required")
    _error(client.get(f"{API}/keys", headers={"x-goog-api-key": token}), 401, "admin_token_required")
    assert client.get(f"{API}/keys", headers=_bearer(token)).status_code == 200


def test_license_key_never_opens_admin_and_admin_token_never_opens_the_api(admin):
    client, token = admin
    created = client.post(f"{API}/keys", json={"name": "user"}, headers=_bearer(token)).json()
    _error(client.get(f"{API}/keys", headers=_bearer(created["key"])), 403, "license_key_not_admin")
    _error(client.post(f"{ROOT}/v1/chat/completions", headers=_bearer(token),
                       json={"model": "gemini-2.5-pro", "messages": [{"role": "user", "content": "hi"}]}),
           401, "invalid_api_key")
    _error(client.get(f"{ROOT}/v1beta/models", headers={"x-goog-api-key": token}), 401)


def test_admin_token_equal_to_a_license_key_is_refused(tmp_path: Path):
    # Create a key first, then (mis)configure ADMIN_TOKEN to its value.
    with TestClient(create_app(_settings(tmp_path, admin_token="gwadmin-first")),
                    raise_server_exceptions=False) as client:
        key = client.post(f"{API}/keys", json={"name": "k"}, headers=_bearer("gwadmin-first")).json()["key"]
    with TestClient(create_app(_settings(tmp_path, admin_token=key)), raise_server_exceptions=False) as client:
        _error(client.get(f"{API}/keys", headers=_bearer(key)), 403, "license_key_not_admin")


def test_failed_logins_are_rate_limited(admin):
    client, token = admin
    for _ in range(10):
        _error(client.get(f"{API}/session", headers=_bearer("gwadmin-wrong")), 401, "invalid_admin_token")
    r = client.get(f"{API}/session", headers=_bearer(token))
    _error(r, 429, "admin_login_rate_limited")
    assert int(r.headers["retry-after"]) >= 1


def test_key_lifecycle(admin):
    client, token = admin
    h = _bearer(token)
    before = time.time()
    r = client.post(f"{API}/keys", headers=h, json={"name": "team", "models": "gemini-2.5-*, gemini-3-pro-preview",
                                                    "rpm": "5", "tpm": 1000, "quota": None, "max_concurrent": 2,
                                                    "expires": "30d"})
    assert r.status_code == 201, r.text
    after = time.time()
    body = r.json()
    key, rec = body["key"], body["record"]
    assert key.startswith("gcli-") and rec["prefix"] == key[: len(rec["prefix"])]
    assert (rec["name"], rec["models"], rec["rpm"], rec["tpm"], rec["quota"], rec["max_concurrent"], rec["state"]) == (
        "team", ["gemini-2.5-*", "gemini-3-pro-preview"], 5, 1000, None, 2, "active")
    assert before + 30 * 86400 - 1 <= rec["expires_at"] <= after + 30 * 86400 + 1  # 30 days from the call
    assert "key_hash" not in rec and all(key not in str(v) for v in rec.values())
    listed = client.get(f"{API}/keys", headers=h).json()["keys"]
    assert [k["id"] for k in listed] == [rec["id"]] and key not in str(listed)
    # The key works (auth passes; the upstream is absent, so 503, never 401).
    assert client.get(f"{ROOT}/v1/models", headers=_bearer(key)).status_code != 401
    edited = client.patch(f"{API}/keys/{rec['id']}", headers=h,
                          json={"rpm": None, "quota": 99, "models": [], "expires": None, "name": "team-2"}).json()
    assert (edited["record"]["rpm"], edited["record"]["quota"], edited["record"]["models"],
            edited["record"]["expires_at"], edited["record"]["name"]) == (None, 99, [], None, "team-2")
    assert edited["record"]["quota_remaining"] == 99
    disabled = client.post(f"{API}/keys/{rec['id']}/disable", headers=h).json()["record"]
    assert disabled["state"] == "disabled"
    _wait_status(client, key, 401)
    assert client.post(f"{API}/keys/{rec['id']}/enable", headers=h).json()["record"]["state"] == "active"
    _wait_status(client, key, None)
    revoked = client.post(f"{API}/keys/{rec['id']}/revoke", headers=h).json()
    assert revoked["changed"] is True and revoked["record"]["state"] == "revoked"
    assert client.post(f"{API}/keys/{rec['id']}/revoke", headers=h).json()["changed"] is False
    err = _wait_status(client, key, 401)
    assert err["error"]["code"] == "key_revoked"


def _wait_status(client: TestClient, key: str, status: int | None, timeout: float = 30.0) -> dict:
    """Until the key's GET /v1/models answers `status` (None: anything but 401); the edge polls
    the store's revision, so a change lands within AUTH_REFRESH_SECONDS."""
    deadline = time.monotonic() + timeout
    while True:
        r = client.get(f"{ROOT}/v1/models", headers=_bearer(key))
        if (r.status_code == status) if status is not None else r.status_code != 401:
            return r.json()
        assert time.monotonic() < deadline, r.text
        time.sleep(0.05)


@pytest.mark.parametrize("body, param", [
    ({"name": ""}, None), ({"name": 5}, "name"), ({"name": "a", "rpm": -1}, "rpm"), ({"name": "a", "tpm": "x"}, "tpm"),
    ({"name": "a", "quota": True}, "quota"), ({"name": "a", "expires": "soon"}, None),
    ({"name": "a", "expires": 5}, "expires"), ({"name": "a", "secret": "x"}, "secret"),
    ({"name": "a", "models": 7}, None),
])
def test_bad_key_input_is_400(admin, body, param):
    client, token = admin
    err = _error(client.post(f"{API}/keys", headers=_bearer(token), json=body), 400)
    if param:
        assert err["param"] == param


@pytest.mark.parametrize("raw, ctype, status", [(b"not json", "application/json", 400), (b"[1]", "application/json", 400),
                                               (b"{}", "text/html", 415), (b"{" + b" " * 70_000 + b"}",
                                                                           "application/json", 413)])
def test_bad_bodies(admin, raw, ctype, status):
    client, token = admin
    _error(client.post(f"{API}/keys", headers={**_bearer(token), "content-type": ctype}, content=raw), status)


def test_unknown_keys_and_actions(admin):
    client, token = admin
    h = _bearer(token)
    _error(client.get(f"{API}/keys/999", headers=h), 404, "key_not_found")
    _error(client.patch(f"{API}/keys/999", headers=h, json={"rpm": 1}), 404, "key_not_found")
    _error(client.post(f"{API}/keys/999/revoke", headers=h), 404, "key_not_found")
    _error(client.get(f"{API}/keys/abc", headers=h), 400)
    rec = client.post(f"{API}/keys", headers=h, json={"name": "k"}).json()["record"]
    _error(client.post(f"{API}/keys/{rec['id']}/explode", headers=h), 404)
    _error(client.patch(f"{API}/keys/{rec['id']}", headers=h, json={}), 400)
    _error(client.delete(f"{API}/keys/{rec['id']}", headers=h), 405)


def test_usage_and_request_log(admin):
    client, token = admin
    h = _bearer(token)
    a = client.post(f"{API}/keys", headers=h, json={"name": "alice"}).json()["record"]["id"]
    b = client.post(f"{API}/keys", headers=h, json={"name": "bob"}).json()["record"]["id"]
    now = time.time()
    rows = [UsageRow(a, "openai", "generate", "gemini-2.5-pro", 200, 12.0, 10, 5, 1, 0, 16, created_at=now - 86400,
                     request_id="r1", credential_kind="gemini-cli-oauth", credential_id="a"),
            UsageRow(a, "gemini", "stream", "gemini-2.5-flash", 429, 3.0, created_at=now, request_id="r2"),
            UsageRow(b, "openai", "generate", "gemini-2.5-pro", 200, 7.0, 3, 4, 0, 0, 7, created_at=now,
                     request_id="r3")]
    client.portal.call(client.app.state.ctx.store.record_usage, rows)
    usage = client.get(f"{API}/usage?days=7", headers=h).json()
    assert usage["keys"] == {str(a): "alice", str(b): "bob"}
    by_day = {(d["key_id"], d["model"]): d for d in usage["by_day"]}
    assert by_day[(a, "gemini-2.5-pro")]["total_tokens"] == 16 and by_day[(b, "gemini-2.5-pro")]["requests"] == 1
    assert by_day[(a, "gemini-2.5-flash")]["errors"] == 1
    only_b = client.get(f"{API}/usage?days=7&key_id={b}", headers=h).json()
    assert {d["key_id"] for d in only_b["by_day"]} == {b}
    log = client.get(f"{API}/requests?limit=2", headers=h).json()["requests"]
    assert [r["request_id"] for r in log] == ["r3", "r2"] and log[0]["key"] == "bob"
    for q in ("days=0", "days=x", "limit=0", "limit=5000", "key_id=-1"):
        path = "requests" if q.startswith("limit") else "usage"
        _error(client.get(f"{API}/{path}?{q}", headers=h), 400)


def test_credentials_without_an_upstream_are_a_clear_503(admin):
    client, token = admin
    h = _bearer(token)
    _error(client.get(f"{API}/credentials", headers=h), 503)
    _error(client.post(f"{API}/credentials/a/disable", headers=h), 503)
    _error(client.post(f"{API}/credentials", headers=h, content=b"AIza" + b"x" * 35), 503)
    _error(client.post(f"{API}/credentials", headers=h, content=b"x" * 70_000), 413)
    _error(client.post(f"{API}/credentials/a/explode", headers=h), 404)


def test_page_and_assets(admin):
    client, _ = admin
    page = client.get(f"{ROOT}/admin")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert f'src="{ROOT}/admin/static/admin.js"' in page.text and "{{ROOT}}" not in page.text
    js = client.get(f"{ROOT}/admin/static/admin.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert "innerHTML" not in js.text  # everything is set as text
    _error(client.get(f"{ROOT}/admin/static/..%2Fapp.py"), 404)
    _error(client.get(f"{ROOT}/admin/static/index.html"), 404)


def test_a_store_that_is_down_is_503_not_500(admin):
    client, token = admin
    client.portal.call(client.app.state.ctx.store.close)
    for r in (client.get(f"{API}/keys", headers=_bearer(token)),
              client.post(f"{API}/keys", headers=_bearer(token), json={"name": "x"}),
              client.get(f"{API}/usage", headers=_bearer(token))):
        err = _error(r, 503)
        assert err["code"] in ("admin_unavailable", "store_unavailable") and "store is closed" not in err["message"]
