"""AI Studio and Vertex AI members, routing across kinds, pool files, credentials coming back.

Against the simulator app in process (httpx's ASGI transport): the upstream's real code talks
to the real simulator code, without sockets.
"""
from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import grpc
import httpx
import orjson
import pytest

from services.upstream.backends import embed_requests
from services.upstream.code_assist import CodeAssistClient
from services.upstream.credentials import CredentialState
from services.upstream.errors import InvalidRequest, PoolExhausted
from services.upstream.members import PoolConfigError, configured_members
from services.upstream.pool import Pool
from services.upstream.project import ProjectResolver
from services.upstream.settings import Settings
from tests import harness
from tests.asgi_transport import AsgiTransport
from tests.cloud_keys import write_service_account
from tests.simulator.app import create_app
from tests.simulator.google_api import ApiKey, ServiceAccount

BASE = "http://sim.test"
REQUEST = orjson.dumps({"contents": [{"parts": [{"text": "hello there"}]}]})
FLASH = "gemini-2.5-flash"


class Rig:
    def __init__(self, tmp_path: Path, **overrides: Any) -> None:
        self.app = create_app()
        self.sim = self.app.state.sim
        self.tmp = tmp_path
        fields: dict[str, Any] = dict(code_assist_endpoint=BASE, oauth_token_url=f"{BASE}/token",
                                      ai_studio_endpoint=BASE, vertex_endpoint=BASE, vertex_token_url=f"{BASE}/token",
                                      onboard_poll_interval=0.0, google_cloud_project="")
        fields.update(overrides)
        self.settings = Settings(**fields)
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app))
        client = CodeAssistClient(self.settings, AsgiTransport(self.http))
        self.pool = Pool(self.settings, self.http, client, ProjectResolver(client, poll_interval=0.0, max_polls=3))

    def service_account(self, name: str, project: str = "proj-v", register: bool = True) -> tuple[Path, str]:
        email = f"{name}-{uuid.uuid4().hex[:6]}@{project}.iam.gserviceaccount.com"
        path = self.tmp / "vertex" / f"{name}.json"
        public = write_service_account(path, email, project, f"{BASE}/token")
        if register:
            self.sim.cloud.service_accounts[email] = ServiceAccount(email, public, project)
        return path, email

    def log(self, op: str | None = None) -> list[dict[str, Any]]:
        return self.sim.log.entries(op=op)

    async def generate(self, model: str = FLASH, body: bytes = REQUEST) -> tuple[dict, Any]:
        chunk, entry = await self.pool.generate(model, body, "req-1")
        return orjson.loads(chunk.data), entry

    async def close(self) -> None:
        await self.http.aclose()


@pytest.fixture
async def make_rig(tmp_path: Path):
    rigs: list[Rig] = []

    def make(**overrides: Any) -> Rig:
        rig = Rig(tmp_path, **overrides)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        await rig.close()


# --- AI Studio --------------------------------------------------------------------------------

async def test_ai_studio_key_serves_every_operation_with_plain_bodies(make_rig) -> None:
    rig = make_rig(gemini_api_keys="AIza-test-one")
    body = orjson.dumps({"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "labels": {"team": "x"},
                         "generationConfig": {"routingConfig": {"autoMode": {}}, "temperature": 0.5}})
    answer, entry = await rig.generate(body=body)
    assert answer["candidates"][0]["content"]["parts"][-1]["text"] == "echo: hi"
    assert entry.cred.kind == "ai-studio-key" and entry.cred.id.startswith("ai-studio-")
    gen = rig.log("generate")[0]
    assert gen["path"] == f"/v1beta/models/{FLASH}:generateContent"
    assert gen["headers"]["x-goog-api-key"] == "...st-one"  # masked by the simulator's record
    # Vertex-only fields were removed, the rest went as sent, with no Code Assist envelope.
    assert "labels" not in gen["body"] and "routingConfig" not in gen["body"]["generationConfig"]
    assert "request" not in gen["body"] and gen["body"]["generationConfig"]["temperature"] == 0.5

    chunks = [orjson.loads(c.data) async for c, _ in rig.pool.stream(FLASH, REQUEST, "req-2")]
    assert "".join(p.get("text", "") for c in chunks for p in c["candidates"][0]["content"]["parts"]) \
        == "echo: hello there"
    assert rig.log("stream")[0]["path"].endswith(":streamGenerateContent?alt=sse")

    counted, _ = await rig.pool.count_tokens(FLASH, orjson.dumps({"contents": [{"parts": [{"text": "a b c"}]}],
                                                                    "systemInstruction": {"parts": [{"text": "s"}]}}),
                                             "req-3")
    assert counted["totalTokens"] == 4

    (vectors, _, _), _ = await rig.pool.embed("gemini-embedding-001", orjson.dumps(
        {"requests": [{"content": {"parts": [{"text": "one"}]}, "outputDimensionality": 8},
                      {"content": {"parts": [{"text": "two"}]}, "outputDimensionality": 8}]}), "req-4")
    assert [len(v["values"]) for v in vectors] == [8, 8] and vectors[0] != vectors[1]


async def test_ai_studio_invalid_key_is_dead_and_the_next_key_serves(make_rig) -> None:
    rig = make_rig(gemini_api_keys="AIza-bad,AIza-good")
    rig.sim.cloud.keys["AIza-bad"] = ApiKey("AIza-bad", revoked=True)
    for _ in range(2):
        _, entry = await rig.generate()
    report = {r.id: r for r in rig.pool.report()}
    dead = [r for r in report.values() if r.state == "DEAD"]
    assert len(dead) == 1 and "API_KEY_INVALID" in dead[0].detail and "replace the key" in dead[0].detail
    assert "AIza" not in dead[0].detail and "AIza" not in dead[0].id


async def test_ai_studio_daily_quota_rests_longer_than_a_minute_quota(make_rig) -> None:
    rig = make_rig(gemini_api_keys="AIza-q1")
    rig.sim.faults.add({"op": "generate", "kind": "429", "retry_delay": "7s"})
    with pytest.raises(PoolExhausted) as minute:
        await rig.generate()
    assert minute.value.retry_delay_s == pytest.approx(7, abs=1)
    rig.pool.entries[0].cooling.clear()
    rig.sim.faults.add({"op": "generate", "kind": "429"})  # no delay: the per-day quota
    with pytest.raises(PoolExhausted) as day:
        await rig.generate()
    assert day.value.retry_delay_s > 60


# --- Vertex AI ----------------------------------------------------------------------------------

async def test_vertex_service_account_gets_a_token_by_jwt_grant_once(make_rig, tmp_path: Path) -> None:
    rig = make_rig(vertex_credentials=str(tmp_path / "vertex"), vertex_location="europe-west4")
    rig.service_account("sa1", project="proj-v")
    results = await asyncio.gather(*(rig.generate() for _ in range(20)))
    assert all(r[1].cred.kind == "vertex-ai" and r[1].cred.auth == "service-account" for r in results)
    grants = rig.log("refresh")
    assert len(grants) == 1 and grants[0]["status"] == 200
    assert grants[0]["body"]["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    gen = rig.log("generate")[0]
    assert gen["path"] == f"/v1/projects/proj-v/locations/europe-west4/publishers/google/models/{FLASH}:generateContent"
    # The content without a role got "user" (Vertex refuses a missing role).
    assert gen["body"]["contents"][0]["role"] == "user"
    report = rig.pool.report()[0]
    assert report.project == "proj-v" and report.location == "europe-west4" and report.priority == 1


async def test_vertex_revoked_key_is_dead_with_a_reason_and_a_new_key_file_revives_it(make_rig,
                                                                                      tmp_path: Path) -> None:
    rig = make_rig(vertex_credentials=str(tmp_path / "vertex"))
    path, email = rig.service_account("sa2")
    rig.sim.cloud.service_accounts[email].revoked = True
    with pytest.raises(PoolExhausted) as info:
        await rig.generate()
    assert info.value.code is grpc.StatusCode.UNAUTHENTICATED
    entry = rig.pool.entries[0]
    assert entry.cred.state is CredentialState.DEAD
    assert "invalid_grant" in entry.cred.detail and "create a new key" in entry.cred.detail
    # The operator creates a new key for the account and rewrites the file.
    new_public = write_service_account(path, email, "proj-v", f"{BASE}/token")
    sa = rig.sim.cloud.service_accounts[email]
    sa.public_key_pem, sa.revoked = new_public, False
    await rig.pool.reload()
    assert rig.pool.entries[0] is entry and entry.cred.state is CredentialState.READY
    _, served = await rig.generate()
    assert served is entry


async def test_vertex_express_key_uses_the_project_less_path(make_rig) -> None:
    rig = make_rig(vertex_api_keys="express-key-1")
    _, entry = await rig.generate()
    assert entry.cred.auth == "express-key" and entry.cred.kind == "vertex-ai"
    assert rig.log("generate")[0]["path"] == f"/v1/publishers/google/models/{FLASH}:generateContent"


async def test_vertex_embeddings_use_predict_or_embed_content(make_rig, tmp_path: Path) -> None:
    rig = make_rig(vertex_credentials=str(tmp_path / "vertex"))
    rig.service_account("sa3")
    body = orjson.dumps({"requests": [{"content": {"parts": [{"text": "a b"}]}, "taskType": "RETRIEVAL_QUERY"},
                                      {"content": {"parts": [{"text": "c"}]}}]})
    (vectors, tokens, _), _ = await rig.pool.embed("gemini-embedding-001", body, "e1")
    assert [len(v["values"]) for v in vectors] == [3072, 3072] and tokens == 3
    predicts = rig.log("embed")
    assert len(predicts) == 2 and all(p["path"].endswith("gemini-embedding-001:predict") for p in predicts)
    assert {p["body"]["instances"][0].get("task_type") for p in predicts} == {"RETRIEVAL_QUERY", None}
    rig.sim.log.clear()
    (vectors, _, _), _ = await rig.pool.embed("gemini-embedding-2", body, "e2")
    assert len(vectors) == 2 and all(p["path"].endswith(":embedContent") for p in rig.log("embed"))


async def test_vertex_429_without_hint_backs_off_from_one_second(make_rig) -> None:
    rig = make_rig(vertex_api_keys="express-key-2")
    rig.sim.faults.add({"op": "generate", "kind": "429", "times": 2})
    with pytest.raises(PoolExhausted) as first:
        await rig.generate()
    assert first.value.retry_delay_s == pytest.approx(1.0, abs=0.3)
    rig.pool.entries[0].cooling.clear()
    with pytest.raises(PoolExhausted) as second:
        await rig.generate()
    assert second.value.retry_delay_s == pytest.approx(2.0, abs=0.3)


# --- routing across kinds -----------------------------------------------------------------------

def _pool_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pool.toml"
    path.write_text(text)
    return path


async def test_seats_first_and_ai_studio_takes_over_a_429_storm(make_rig, tmp_path: Path) -> None:
    rt = f"1//seat-{uuid.uuid4().hex[:6]}"
    harness.write_credential(tmp_path / "ca" / "seat.json", rt)
    rig = make_rig(gemini_credentials=str(tmp_path / "ca"), gemini_api_keys="AIza-overflow")
    for _ in range(3):
        _, entry = await rig.generate()
        assert entry.cred.kind == "gemini-cli-oauth"  # the seat's tier comes first
    rig.sim.faults.add({"account": rt, "op": "generate", "kind": "429", "retry_delay": "30s", "times": -1})
    for _ in range(3):
        answer, entry = await rig.generate()
        assert entry.cred.kind == "ai-studio-key" and answer["candidates"]
    assert len([e for e in rig.log("generate") if e["status"] == 429]) == 1  # the seat rests after its 429


async def test_weighted_round_robin_within_a_tier_and_models_per_member(make_rig, tmp_path: Path,
                                                                        monkeypatch) -> None:
    monkeypatch.setenv("TEST_KEY_HEAVY", "AIza-heavy")
    monkeypatch.setenv("TEST_KEY_LIGHT", "AIza-light")
    path = _pool_file(tmp_path, """
[[members]]
name = "heavy"
kind = "ai-studio"
env = "TEST_KEY_HEAVY"
weight = 3

[[members]]
name = "light"
kind = "ai-studio"
env = "TEST_KEY_LIGHT"
models = ["gemini-2.5-*"]
""")
    rig = make_rig(pool_config=str(path))
    served = [(await rig.generate())[1].cred.id for _ in range(8)]
    assert served.count("heavy") == 6 and served.count("light") == 2
    # "light" may only serve 2.5 models.
    served = {(await rig.generate("gemini-3.1-pro-preview"))[1].cred.id for _ in range(4)}
    assert served == {"heavy"}


async def test_code_assist_model_mapping_and_session_id_apply_to_code_assist_only(make_rig, tmp_path: Path) -> None:
    harness.write_credential(tmp_path / "ca" / "seat.json", f"1//seat-{uuid.uuid4().hex[:6]}")
    rig = make_rig(gemini_credentials=str(tmp_path / "ca"), gemini_api_keys="AIza-map")
    _, entry = await rig.generate("gemini-3.5-flash")
    assert entry.cred.kind == "gemini-cli-oauth"
    ca = rig.log("generate")[-1]["body"]
    assert ca["model"] == "gemini-3-flash" and ca["request"]["session_id"] == "req-1"
    rig.pool.entries[0].cred.mark_dead("test: out of the way")
    await rig.generate("gemini-3.5-flash")
    assert rig.log("generate")[-1]["path"] == "/v1beta/models/gemini-3.5-flash:generateContent"


async def test_embed_without_a_member_that_has_embeddings_is_failed_precondition(make_rig, tmp_path: Path) -> None:
    harness.write_credential(tmp_path / "ca" / "seat.json", f"1//seat-{uuid.uuid4().hex[:6]}")
    rig = make_rig(gemini_credentials=str(tmp_path / "ca"))
    with pytest.raises(PoolExhausted) as info:
        await rig.pool.embed("gemini-embedding-001", b'{"requests":[{"content":{"parts":[{"text":"x"}]}}]}', "e")
    assert info.value.code is grpc.StatusCode.FAILED_PRECONDITION and "embeddings" in info.value.message
    assert rig.log() == []


@pytest.mark.parametrize("body", [b"{}", b'{"requests":[]}', b'{"requests":[{"x":1}]}', b"[1]"])
def test_embed_requests_are_checked(body: bytes) -> None:
    with pytest.raises(InvalidRequest):
        embed_requests(body)


# --- credentials come back ----------------------------------------------------------------------

async def test_dead_oauth_credential_revives_when_its_file_gets_a_new_login(make_rig, tmp_path: Path) -> None:
    rt = f"1//old-{uuid.uuid4().hex[:6]}"
    path = harness.write_credential(tmp_path / "ca" / "a.json", rt)
    rig = make_rig(gemini_credentials=str(path))
    rig.sim.accounts.lookup(rt)
    rig.sim.accounts.revoke(rt)
    with pytest.raises(PoolExhausted):
        await rig.generate()
    cred = rig.pool.entries[0].cred
    assert cred.state is CredentialState.DEAD and "invalid_grant" in cred.detail
    await rig.pool.reload()
    assert cred.state is CredentialState.DEAD  # nothing changed on disk: still dead
    harness.write_credential(path, f"1//new-{uuid.uuid4().hex[:6]}")
    await rig.pool.reload()
    assert cred.state is CredentialState.READY
    _, entry = await rig.generate()
    assert entry.cred is cred


async def test_subscription_required_is_rechecked_after_a_while(make_rig, tmp_path: Path) -> None:
    rt = f"1//lic-{uuid.uuid4().hex[:6]}"
    harness.write_credential(tmp_path / "ca" / "a.json", rt)
    rig = make_rig(gemini_credentials=str(tmp_path / "ca"), ineligible_recheck_seconds=0.2)
    rig.sim.faults.add({"account": rt, "op": "generate", "kind": "403", "reason": "SUBSCRIPTION_REQUIRED",
                        "message": "You lack a Gemini Code Assist license."})
    with pytest.raises(PoolExhausted) as info:
        await rig.generate()
    assert info.value.code is grpc.StatusCode.PERMISSION_DENIED
    cred = rig.pool.entries[0].cred
    assert cred.state is CredentialState.DEAD and "SUBSCRIPTION_REQUIRED" in cred.detail
    assert "licence" in cred.detail
    await asyncio.sleep(0.3)
    await rig.pool.reload()
    _, entry = await rig.generate()  # the licence was assigned meanwhile: served again
    assert entry.cred is cred and cred.state is CredentialState.READY


# --- pool file ----------------------------------------------------------------------------------

def test_pool_file_refuses_inline_secrets_without_opt_in(tmp_path: Path) -> None:
    path = _pool_file(tmp_path, '[[members]]\nkind = "ai-studio"\nkey = "AIza-inline"\n')
    with pytest.raises(PoolConfigError, match="allow_inline_secrets"):
        configured_members(Settings(pool_config=str(path)))
    path.write_text('allow_inline_secrets = true\n[[members]]\nkind = "ai-studio"\nkey = "AIza-inline"\n')
    [member] = configured_members(Settings(pool_config=str(path)))
    assert member.secret == "AIza-inline" and member.priority == 1


@pytest.mark.parametrize("text,error", [
    ('[[members]]\nkind = "nope"\nfile = "x"\n', "kind must be"),
    ('[[members]]\nkind = "vertex"\n', "exactly one of"),
    ('[[members]]\nkind = "ai-studio"\nenv = "SURELY_UNSET_VAR_1234"\n', "empty or not set"),
    ('[[members]]\nkind = "ai-studio"\nfile = "k"\nweight = 0\n', "weight"),
    ('[[members]]\nkind = "ai-studio"\nfile = "k"\ncolour = 1\n', "unknown fields"),
    ("[[members]\n", "not valid TOML"),
])
def test_pool_file_errors_are_clear(tmp_path: Path, text: str, error: str) -> None:
    with pytest.raises(PoolConfigError, match=error):
        configured_members(Settings(pool_config=str(_pool_file(tmp_path, text))))


def test_default_code_assist_file_only_when_nothing_else_is_configured() -> None:
    assert [m.kind for m in configured_members(Settings())] == ["code-assist"]
    assert [m.kind for m in configured_members(Settings(gemini_api_keys="k1,k2"))] == ["ai-studio", "ai-studio"]
    assert [m.kind for m in configured_members(Settings(vertex_api_keys="k", vertex_credentials="/x"))] == \
        ["vertex", "vertex-express"]


async def test_a_changed_pool_file_is_picked_up(make_rig, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TEST_KEY_A", "AIza-a")
    monkeypatch.setenv("TEST_KEY_B", "AIza-b")
    path = _pool_file(tmp_path, '[[members]]\nname = "a"\nkind = "ai-studio"\nenv = "TEST_KEY_A"\n')
    rig = make_rig(pool_config=str(path))
    assert (await rig.generate())[1].cred.id == "a"
    path.write_text('[[members]]\nname = "b"\nkind = "ai-studio"\nenv = "TEST_KEY_B"\n')
    await rig.pool.reload()
    assert [e.cred.id for e in rig.pool.entries] == ["b"]
    assert (await rig.generate())[1].cred.id == "b"
    path.write_text("[[members]\n")  # broken: the members stay as they were
    await rig.pool.reload()
    assert [e.cred.id for e in rig.pool.entries] == ["b"]


# --- Code Assist in 2026 ------------------------------------------------------------------------

async def test_quota_at_zero_skips_the_credential_for_that_model_until_its_reset(make_rig, tmp_path: Path) -> None:
    spent, fresh = f"1//spent-{uuid.uuid4().hex[:6]}", f"1//fresh-{uuid.uuid4().hex[:6]}"
    harness.write_credential(tmp_path / "ca" / "a.json", spent)
    harness.write_credential(tmp_path / "ca" / "b.json", fresh)
    rig = make_rig(gemini_credentials=str(tmp_path / "ca"))
    rig.sim.accounts.upsert({"refresh_token": spent, "quota": {"gemini-2.5-pro": 0.0, "gemini-3-flash": 0.0}})
    await rig.pool.reload()
    await asyncio.gather(*rig.pool._polls)
    a = next(r for r in rig.pool.report() if r.id == "a")
    assert a.quota["gemini-2.5-pro"][0] == 0.0 and a.quota["gemini-2.5-flash"][0] == 1.0
    assert a.quota["gemini-2.5-pro"][1].endswith("Z")
    # Spent models go to the other seat (the CLI's gemini-3.5-flash is gemini-3-flash here) ...
    for model in ("gemini-2.5-pro", "gemini-3-flash", "gemini-3.5-flash"):
        for _ in range(3):
            assert (await rig.generate(model))[1].cred.id == "b"
    # ... while the others still use both.
    assert {(await rig.generate(FLASH))[1].cred.id for _ in range(4)} == {"a", "b"}
    assert len(rig.log("quota")) == 2


async def test_unsupported_client_is_dead_with_what_to_do(make_rig, tmp_path: Path) -> None:
    rt = f"1//indiv-{uuid.uuid4().hex[:6]}"
    harness.write_credential(tmp_path / "ca" / "a.json", rt)
    rig = make_rig(gemini_credentials=str(tmp_path / "ca"))
    rig.sim.accounts.upsert({"refresh_token": rt, "onboarded": False, "ineligible": "UNSUPPORTED_CLIENT"})
    with pytest.raises(PoolExhausted) as info:
        await rig.generate()
    assert info.value.code is grpc.StatusCode.PERMISSION_DENIED
    detail = rig.pool.report()[0].detail
    assert "UNSUPPORTED_CLIENT" in detail and "AI Studio / Vertex AI keys" in detail


async def test_service_account_and_adc_user_files_in_one_directory(make_rig, tmp_path: Path) -> None:
    rig = make_rig(vertex_credentials=str(tmp_path / "vertex"), google_cloud_project="proj-adc")
    rig.service_account("sa9", project="proj-v")
    rt = f"1//adc-{uuid.uuid4().hex[:6]}"
    (tmp_path / "vertex" / "adc.json").write_text(orjson.dumps({
        "type": "authorized_user", "client_id": "cid.apps.googleusercontent.com", "client_secret": "cs",
        "refresh_token": rt, "quota_project_id": "proj-adc"}).decode())
    seen = {(await rig.generate())[1].cred.auth for _ in range(4)}
    assert seen == {"service-account", "authorized-user"}
    paths = {e["path"].split("/locations/")[0] for e in rig.log("generate")}
    assert paths == {"/v1/projects/proj-v", "/v1/projects/proj-adc"}
    grants = {e["body"]["grant_type"] for e in rig.log("refresh")}
    assert grants == {"refresh_token", "urn:ietf:params:oauth:grant-type:jwt-bearer"}


async def test_each_member_uses_its_own_proxy(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TEST_KEY_P", "AIza-proxied")
    path = _pool_file(tmp_path, '[[members]]\nname = "p"\nkind = "ai-studio"\nenv = "TEST_KEY_P"\n'
                                'proxy = "http://proxy.test:3128"\n\n'
                                '[[members]]\nname = "d"\nkind = "ai-studio"\nkey = "AIza-direct"\n')
    path.write_text("allow_inline_secrets = true\n" + path.read_text())
    app = create_app()
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
    seen: list[tuple[str, str | None]] = []

    class Recording(AsgiTransport):
        async def request(self, method, url, *, headers, body=None, proxy=None, timeout=None):
            seen.append((headers.get("x-goog-api-key", ""), proxy))
            return await super().request(method, url, headers=headers, body=body, proxy=proxy, timeout=timeout)

    settings = Settings(ai_studio_endpoint=BASE, pool_config=str(path))
    client = CodeAssistClient(settings, Recording(http))
    pool = Pool(settings, http, client, ProjectResolver(client, poll_interval=0.0, max_polls=1))
    try:
        for _ in range(2):
            await pool.generate(FLASH, REQUEST, "p")
    finally:
        await http.aclose()
    assert sorted(seen) == [("AIza-direct", None), ("AIza-proxied", "http://proxy.test:3128")]
