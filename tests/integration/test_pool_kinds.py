"""A pool of three credential kinds in the real upstream process, against the simulator.

Vertex service accounts get their tokens from the simulator's token endpoint (JWT-bearer
grant, signature checked); credential files are watched while the process runs.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import grpc
import httpx
import orjson
import pytest
from google.api import httpbody_pb2

from gemini_cli.upstream.v1 import upstream_pb2
from tests import harness
from tests.cloud_keys import write_service_account
from tests.integration.test_upstream import CALL_TIMEOUT, clients, details, text_of  # noqa: F401 (fixture)
from tests.simulator.control import SimControl
from tests.stack_fixtures import pool_members, start_stack

FAST_RELOAD = {"POOL_RELOAD_SECONDS": "0.2"}


async def until(check, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


async def test_list_models_reports_every_member_and_the_union_of_models(sim: SimControl, upstream_factory,
                                                                       simulator: harness.Proc, tmp_path: Path,
                                                                       clients) -> None:
    creds, env = pool_members("mixed", simulator, tmp_path, "lm")
    client = clients(upstream_factory(creds, env))
    await client.generate("warm up", stream=False)
    resp = await client.stub.ListModels(upstream_pb2.ListModelsRequest(), timeout=CALL_TIMEOUT)
    by_kind = {}
    for c in resp.credentials:
        by_kind.setdefault(c.kind, []).append(c)
    assert set(by_kind) == {"gemini-cli-oauth", "ai-studio-key", "vertex-ai"}
    assert {c.auth for c in by_kind["vertex-ai"]} == {"service-account", "express-key"}
    sa = next(c for c in by_kind["vertex-ai"] if c.auth == "service-account")
    assert sa.project == "proj-lm" and sa.location == "us-central1" and sa.priority == 1
    assert all(c.priority == 0 and c.tier == "free-tier" for c in by_kind["gemini-cli-oauth"])
    assert all("AIza" not in c.id + c.detail for c in by_kind["ai-studio-key"])  # never a secret
    ids = {m.id for m in resp.models}
    # The union: Code Assist's own id and the embedding models only the other kinds serve.
    assert {"gemini-2.5-pro", "gemini-3-flash", "gemini-3.5-flash", "gemini-embedding-001"} <= ids


async def test_only_code_assist_lists_no_embedding_model_and_embed_is_refused(sim: SimControl, upstream_factory,
                                                                             creds_dir: Path, clients) -> None:
    harness.write_credential(creds_dir / "a.json", f"1//emb-{uuid.uuid4().hex}")
    client = clients(upstream_factory(creds_dir))
    resp = await client.stub.ListModels(upstream_pb2.ListModelsRequest(), timeout=CALL_TIMEOUT)
    assert "gemini-embedding-001" not in {m.id for m in resp.models}
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.stub.Embed(upstream_pb2.EmbedRequest(model="gemini-embedding-001", body=httpbody_pb2.HttpBody(
            content_type="application/json", data=b'{"requests":[{"content":{"parts":[{"text":"x"}]}}]}')),
            timeout=CALL_TIMEOUT)
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert details(info.value)[0].reason == "NO_EMBEDDINGS_MEMBER"


async def test_embed_on_ai_studio_members(sim: SimControl, upstream_factory, simulator: harness.Proc,
                                          tmp_path: Path, clients) -> None:
    creds, env = pool_members("ai-studio", simulator, tmp_path, "emb")
    client = clients(upstream_factory(creds, env))
    body = {"requests": [{"content": {"parts": [{"text": "alpha"}]}, "outputDimensionality": 16},
                         {"content": {"parts": [{"text": "beta"}]}, "outputDimensionality": 16}]}
    resp = await client.stub.Embed(upstream_pb2.EmbedRequest(
        model="gemini-embedding-001", body=httpbody_pb2.HttpBody(content_type="application/json",
                                                                 data=orjson.dumps(body))), timeout=CALL_TIMEOUT)
    assert resp.credential_kind == "ai-studio-key"
    vectors = orjson.loads(resp.body.data)["embeddings"]
    assert [len(v["values"]) for v in vectors] == [16, 16]


async def test_first_message_names_the_kind_that_served(sim: SimControl, upstream_factory, simulator: harness.Proc,
                                                        tmp_path: Path, clients) -> None:
    creds, env = pool_members("vertex", simulator, tmp_path, "kind")
    client = clients(upstream_factory(creds, env))
    msgs = await client.generate("kind check")
    assert msgs[0].credential_kind == "vertex-ai" and text_of(msgs) == "echo: kind check"
    assert all(not m.credential_kind for m in msgs[1:])


async def test_vertex_service_account_token_revocation_and_revival(sim: SimControl, upstream_factory,
                                                                   simulator: harness.Proc, tmp_path: Path,
                                                                   clients) -> None:
    email = f"svc-{uuid.uuid4().hex[:8]}@proj-r.iam.gserviceaccount.com"
    path = tmp_path / "vertex" / "svc.json"
    public = write_service_account(path, email, "proj-r", f"{simulator.url}/token")
    sim.add_service_account(email, public, project="proj-r", token_ttl=3600)
    client = clients(upstream_factory(None, {"VERTEX_CREDENTIALS": str(path), **FAST_RELOAD}))

    assert text_of(await client.generate("one")) == "echo: one"
    grants = [r for r in sim.requests(op="refresh") if r["account"] == email]
    assert len(grants) == 1 and grants[0]["status"] == 200
    assert grants[0]["body"]["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"

    # The key is revoked: its token stops working, the next grant is refused → DEAD, clear reason.
    sim.revoke_service_account(email)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.generate("two")
    assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
    status = (await client.credentials())["svc"]
    assert status.state == upstream_pb2.CredentialStatus.DEAD
    assert "invalid_grant" in status.detail and "create a new key" in status.detail

    # A new key is created and the file rewritten: the running upstream picks it up.
    public = write_service_account(path, email, "proj-r", f"{simulator.url}/token")
    sim.add_service_account(email, public, project="proj-r")

    async def ready() -> bool:
        return (await client.credentials())["svc"].state == upstream_pb2.CredentialStatus.READY

    await until(ready)
    assert text_of(await client.generate("three")) == "echo: three"


async def test_dead_code_assist_login_comes_back_when_its_file_is_rewritten(sim: SimControl, upstream_factory,
                                                                           creds_dir: Path, clients) -> None:
    old = f"1//dead-{uuid.uuid4().hex}"
    harness.write_credential(creds_dir / "a.json", old)
    sim.add_fault(account=old, op="refresh", kind="invalid_grant", times=-1)  # the login was revoked
    client = clients(upstream_factory(creds_dir, FAST_RELOAD))
    with pytest.raises(grpc.aio.AioRpcError):
        await client.generate("x")
    assert (await client.credentials())["a"].state == upstream_pb2.CredentialStatus.DEAD
    harness.write_credential(creds_dir / "a.json", f"1//fresh-{uuid.uuid4().hex}")  # a new login

    async def ready() -> bool:
        return (await client.credentials())["a"].state == upstream_pb2.CredentialStatus.READY

    await until(ready)
    assert text_of(await client.generate("back")) == "echo: back"


def test_mixed_pool_hides_a_429_storm_on_the_seats(simulator: harness.Proc, sim: SimControl,
                                                   tmp_path: Path) -> None:
    stack = start_stack(simulator, tmp_path, pool="mixed")
    try:
        seat = stack.refresh_token
        key = stack.key()
        url = f"{stack.public_base}/v1/chat/completions"
        headers = {"Authorization": f"Bearer {key}"}
        body = {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "storm"}]}
        r = httpx.post(url, json=body, headers=headers, timeout=30)
        assert r.status_code == 200
        assert any(e["account"] == seat for e in sim.requests(op="generate"))  # the seat's tier is first
        sim.add_fault(account=seat, op="generate", kind="429", retry_delay="60s", times=-1)
        sim.add_fault(account=seat, op="stream", kind="429", retry_delay="60s", times=-1)
        sim.clear_requests()
        for i in range(6):
            r = httpx.post(url, json={**body, "stream": i % 2 == 1}, headers=headers, timeout=30)
            assert r.status_code == 200, r.text
            assert "storm" in r.text and "error" not in r.text
        served = [e for e in sim.requests() if e["op"] in ("generate", "stream") and e["status"] == 200]
        assert len(served) == 6 and all(e["account"] != seat for e in served)
        assert sum(1 for e in sim.requests() if e["status"] == 429) <= 2  # the seat rests after its 429
        # The ledger says which kind served each call.
        rows = stack.ledger(stack.key_id(key), expect=7)
        kinds = [r["credential_kind"] for r in rows]
        assert kinds[0] == "gemini-cli-oauth"
        assert len(kinds) == 7 and set(kinds[1:]) <= {"ai-studio-key", "vertex-ai"}
    finally:
        stack.stop()
