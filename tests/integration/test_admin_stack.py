"""The admin API through the real stack and the real Envoy: the generated admin token works
through Envoy's public listener, license keys and admin tokens stay apart, and credentials are
switched off and on and added in the real upstream (files, modes, names, what comes back)."""
from __future__ import annotations

import json
import stat
import uuid
from pathlib import Path
from typing import Iterator

import grpc
import httpx
import pytest

from gemini_cli.upstream.v1 import upstream_pb2, upstream_pb2_grpc
from tests import harness
from tests.admin_stack import AdminStack, start_admin_stack
from tests.cloud_keys import write_service_account

MODEL = "gemini-2.5-flash"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture(scope="module")
def stack(simulator: harness.Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdminStack]:
    s = start_admin_stack(simulator, tmp_path_factory.mktemp("admin-stack"))
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def api(stack: AdminStack) -> Iterator[httpx.Client]:
    with stack.api() as client:
        yield client


def _chat(stack: AdminStack, key: str) -> httpx.Response:
    return httpx.post(f"{stack.public}/v1/chat/completions", json=CHAT, timeout=60, trust_env=False,
                      headers={"Authorization": f"Bearer {key}"})


def _credential(api: httpx.Client, cid: str) -> dict:
    found = [c for c in api.get("/credentials").json()["credentials"] if c["id"] == cid]
    assert len(found) == 1, found
    return found[0]


def test_admin_token_through_envoy(stack: AdminStack, api: httpx.Client):
    assert api.get("/session").json()["ok"] is True
    bare = httpx.get(f"{stack.public}/admin/api/keys", trust_env=False, timeout=30)
    assert bare.status_code == 401 and bare.json()["error"]["code"] == "admin_token_required"
    page = httpx.get(f"{stack.public}/admin", trust_env=False, timeout=30)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]


def test_key_made_in_the_console_works_and_is_refused_once_revoked(stack: AdminStack, api: httpx.Client):
    made = api.post("/keys", json={"name": f"console-{uuid.uuid4().hex[:6]}", "rpm": 100})
    assert made.status_code == 201, made.text
    key, rec = made.json()["key"], made.json()["record"]
    assert _chat(stack, key).status_code == 200
    # Neither secret opens the other's routes, through Envoy too.
    assert api.get("/keys", headers={"Authorization": f"Bearer {key}"}).status_code == 403
    assert _chat(stack, stack.token).status_code == 401
    # The CLI sees what the console made (one store, one service layer).
    cli = subprocess_cli(stack, "show", str(rec["id"]))
    assert rec["name"] in cli and "rpm:         100" in cli
    assert api.post(f"/keys/{rec['id']}/revoke").json()["record"]["state"] == "revoked"
    refused = harness_wait(lambda: _chat(stack, key), lambda r: r.status_code == 401)
    assert refused.json()["error"]["code"] == "key_revoked"


def subprocess_cli(stack: AdminStack, *args: str) -> str:
    import subprocess

    env = harness._base_env()
    env.update(stack.edge.extra["env"])
    out = subprocess.run([harness.PY, "-m", "services.edge.keys", *args], cwd=harness.ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def harness_wait(call, done, timeout: float = 30.0):
    import time

    deadline = time.monotonic() + timeout
    while True:
        r = call()
        if done(r) or time.monotonic() > deadline:
            return r
        time.sleep(0.1)


def test_credential_table_disable_and_enable(stack: AdminStack, api: httpx.Client):
    seat = _credential(api, "seat")
    assert seat["kind"] == "gemini-cli-oauth" and seat["state"] in ("READY", "COOLING")
    assert "refresh_token" not in json.dumps(seat) and "rt-admin" not in json.dumps(seat)
    key = api.post("/keys", json={"name": "cred-test"}).json()["key"]

    off = api.post("/credentials/seat/disable")
    assert off.status_code == 200 and off.json()["credential"]["state"] == "DISABLED"
    assert json.loads((stack.creds / "seat.json").read_text())["disabled"] is True
    assert _credential(api, "seat")["state"] == "DISABLED"
    # Only the (empty) AI Studio directory is left: nothing can serve.
    assert _chat(stack, key).status_code >= 400

    on = api.post("/credentials/seat/enable")
    assert on.status_code == 200 and on.json()["credential"]["state"] == "READY"
    assert "disabled" not in json.loads((stack.creds / "seat.json").read_text())
    assert _chat(stack, key).status_code == 200
    missing = api.post("/credentials/no-such-credential/disable")
    assert missing.status_code == 404 and missing.json()["error"]["message"]


def test_upload_oauth_creds_and_an_ai_studio_key(stack: AdminStack, api: httpx.Client):
    token = f"rt-upload-{uuid.uuid4().hex}"
    creds = {"access_token": "stale", "refresh_token": token, "token_type": "Bearer", "expiry_date": 1000}
    added = api.post("/credentials", content=json.dumps(creds), headers={"content-type": "application/json"})
    assert added.status_code == 201, added.text
    cid = added.json()["credential"]["id"]
    assert cid.startswith("uploaded-") and token not in added.text
    path = stack.creds / f"{cid}.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["refresh_token"] == token
    assert _credential(api, cid)["kind"] == "gemini-cli-oauth"
    again = api.post("/credentials", content=json.dumps(creds))
    assert again.status_code == 409 and token not in again.text

    studio_key = f"AIza-admin-{uuid.uuid4().hex}"
    added = api.post("/credentials", content=studio_key, headers={"content-type": "text/plain"})
    assert added.status_code == 201, added.text
    assert added.json()["credential"]["kind"] == "ai-studio-key" and studio_key not in added.text
    files = list(stack.keys_dir.glob("uploaded-*.key"))
    assert len(files) == 1 and files[0].read_text().strip() == studio_key
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600


@pytest.mark.parametrize("content, status", [
    (b"{\"hello\": 1}", 400), (b"{not json", 400), (b"   ", 400), (b"\xff\xfe", 400),
    (b"has spaces in it, not a key", 400), (b"../../etc/passwd", 400),
])
def test_garbage_is_refused_with_400(api: httpx.Client, stack: AdminStack, content: bytes, status: int):
    before = sorted(p.name for p in stack.creds.iterdir())
    r = api.post("/credentials", content=content)
    assert r.status_code == status, r.text
    assert r.json()["error"]["message"] and str(stack.creds) not in r.text
    assert sorted(p.name for p in stack.creds.iterdir()) == before


def test_kind_without_a_directory_is_409(api: httpx.Client, tmp_path: Path, stack: AdminStack):
    write_service_account(tmp_path / "sa.json", "sa@proj.iam.gserviceaccount.com", "proj", "http://127.0.0.1:9/token")
    r = api.post("/credentials", content=(tmp_path / "sa.json").read_bytes())
    assert r.status_code == 409, r.text
    assert "directory" in r.json()["error"]["message"] and str(stack.creds) not in r.text


def test_env_only_upstream_refuses_uploads(simulator: harness.Proc, tmp_path: Path):
    up = harness.start_upstream(tmp_path / "logs", simulator.url, None, {"GEMINI_API_KEYS": "AIza-env-only-key-123456"})
    try:
        with grpc.insecure_channel(up.addr) as ch:
            stub = harness.AuthedStub(ch, "edge")
            with pytest.raises(grpc.RpcError) as err:
                stub.AddCredential(upstream_pb2.AddCredentialRequest(content=b"AIza-another-key-1234567"), timeout=30)
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            # In-memory disable works for a key from the environment.
            listed = stub.ListModels(upstream_pb2.ListModelsRequest(), timeout=30)
            cid = listed.credentials[0].id
            off = stub.SetCredentialEnabled(upstream_pb2.SetCredentialEnabledRequest(id=cid, enabled=False), timeout=30)
            assert off.state == upstream_pb2.CredentialStatus.DISABLED
    finally:
        up.stop()


def test_credential_rpcs_need_internal_credentials(stack: AdminStack):
    with grpc.insecure_channel(stack.upstream.addr) as ch:
        stub = upstream_pb2_grpc.UpstreamStub(ch)
        for call, req in ((stub.AddCredential, upstream_pb2.AddCredentialRequest(content=b"AIza-sneaky-key-123456")),
                          (stub.SetCredentialEnabled, upstream_pb2.SetCredentialEnabledRequest(id="seat"))):
            with pytest.raises(grpc.RpcError) as err:
                call(req, timeout=30)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert not list(stack.keys_dir.glob("*sneaky*"))


def test_zz_failed_logins_through_envoy_are_limited_whatever_forwarded_for_says(stack: AdminStack):
    """Last in this module: it locks 127.0.0.1 out of the admin API for a minute. A client
    cannot reset its count by sending its own X-Forwarded-For (Envoy appends the real peer)."""
    url = f"{stack.public}/admin/api/session"
    for i in range(10):
        r = httpx.get(url, trust_env=False, timeout=30,
                      headers={"Authorization": "Bearer gwadmin-guess", "X-Forwarded-For": f"10.0.0.{i}"})
        assert r.status_code == 401, r.text
    r = httpx.get(url, trust_env=False, timeout=30,
                  headers={"Authorization": f"Bearer {stack.token}", "X-Forwarded-For": "10.9.9.9"})
    assert r.status_code == 429 and r.json()["error"]["code"] == "admin_login_rate_limited"
    assert int(r.headers["retry-after"]) >= 1
