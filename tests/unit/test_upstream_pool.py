"""Pool policy, credentials and project discovery, against the simulator app in process.

The simulator (tests/simulator) runs inside the test's event loop through httpx's ASGI
transport: the upstream's real HTTP code talks to the real simulator code, without sockets.
Streaming, cancellation and timing are covered by the integration tests over real sockets.
"""
from __future__ import annotations

import asyncio
import stat
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import httpx
import orjson
import pytest

from services.upstream import errors
from services.upstream.code_assist import CodeAssistClient
from services.upstream.credentials import CredentialState
from services.upstream.errors import BackendError, PoolExhausted, ProjectError, RefreshError
from services.upstream.pool import Pool, cooldown_seconds
from services.upstream.project import ProjectResolver, ineligible_reason
from services.upstream.settings import Settings
from tests import harness
from tests.asgi_transport import AsgiTransport
from tests.simulator.app import create_app

BASE = "http://sim.test"
REQUEST = orjson.dumps({"contents": [{"role": "user", "parts": [{"text": "hello there"}]}]})


@pytest.mark.parametrize("delay,strikes,expect", [
    (None, 1, 30.0),      # no hint: the default
    (None, 2, 60.0),      # ... doubled per consecutive 429
    (None, 3, 120.0),
    (None, 10, 1800.0),   # ... capped
    (2.5, 1, 2.5),        # the backend's delay wins
    (2.5, 5, 2.5),
    (0.0, 1, 0.0),
    (21599.96, 1, 1800.0),  # a 6 h quota hint is capped: the credential is probed again later
    (-1.0, 1, 30.0),      # nonsense delay: treated as none
])
def test_cooldown_seconds(delay: float | None, strikes: int, expect: float) -> None:
    assert cooldown_seconds(delay, strikes, default=30.0, maximum=1800.0) == pytest.approx(expect)


@pytest.mark.parametrize("status,reason,message,expect", [
    (403, "SUBSCRIPTION_REQUIRED", "lack a license", "SUBSCRIPTION_REQUIRED"),
    (403, "VALIDATION_REQUIRED", "verify", "VALIDATION_REQUIRED"),
    (403, "CONSUMER_INVALID", "x", "CONSUMER_INVALID"),
    (403, "TOS_VIOLATION", "x", "TOS_VIOLATION"),
    (403, "", "Cloud Code Private API has not been used in project 123 before or it is disabled.", "API_NOT_ENABLED"),
    (403, "", "The caller does not have permission", None),
    (400, "SUBSCRIPTION_REQUIRED", "x", None),
])
def test_ineligible_reason(status: int, reason: str, message: str, expect: str | None) -> None:
    assert ineligible_reason(BackendError(status, reason=reason, message=message)) == expect


# --- in-process simulator ---------------------------------------------------------------------

class Rig:
    def __init__(self, tmp_path: Path, **overrides: Any) -> None:
        self.app = create_app()
        self.sim = self.app.state.sim
        self.dir = tmp_path / "creds"
        self.dir.mkdir()
        fields = dict(code_assist_endpoint=BASE, oauth_token_url=f"{BASE}/token", gemini_credentials=str(self.dir),
                      onboard_poll_interval=0.0, google_cloud_project="")
        fields.update(overrides)
        self.settings = Settings(**fields)
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app))
        self.client = CodeAssistClient(self.settings, AsgiTransport(self.http))
        self.resolver = ProjectResolver(self.client, poll_interval=self.settings.onboard_poll_interval,
                                        max_polls=self.settings.onboard_max_polls)
        self.pool = Pool(self.settings, self.http, self.client, self.resolver)

    def account(self, name: str, **spec: Any) -> str:
        rt = f"1//unit-{name}-{uuid.uuid4().hex[:8]}"
        if spec:
            self.sim.accounts.upsert({"refresh_token": rt, **spec})
        harness.write_credential(self.dir / f"{name}.json", rt)
        return rt

    def fault(self, **spec: Any) -> None:
        self.sim.faults.add(spec)

    def log(self, op: str | None = None) -> list[dict[str, Any]]:
        return self.sim.log.entries(op=op)

    def entry(self, cred_id: str):
        return next(e for e in self.pool.entries if e.cred.id == cred_id)

    async def generate(self, model: str = "gemini-2.5-flash") -> tuple[dict, str]:
        chunk, entry = await self.pool.generate(model, REQUEST, "req-1")
        return orjson.loads(chunk.data), entry.cred.id


@pytest.fixture
async def rig(tmp_path: Path):
    r = Rig(tmp_path)
    yield r
    await r.http.aclose()


async def test_generate_refreshes_discovers_and_sends_the_envelope(rig: Rig) -> None:
    rt = rig.account("a")
    body, cred = await rig.generate()
    assert cred == "a"
    assert body["candidates"][0]["content"]["parts"][-1]["text"] == "echo: hello there"
    gen = rig.log("generate")[0]
    assert gen["body"]["model"] == "gemini-2.5-flash" and gen["body"]["user_prompt_id"] == "req-1"
    assert gen["body"]["project"] == rig.sim.accounts.accounts[rt].project
    assert gen["headers"].get("user-agent", "").startswith("GeminiCLI/")
    # The refreshed token went back to the file: valid JSON, 0600, refresh token kept.
    data = orjson.loads((rig.dir / "a.json").read_bytes())
    assert data["refresh_token"] == rt and data["access_token"].startswith("ya29.sim-")
    assert data["expiry_date"] > time.time() * 1000
    assert stat.S_IMODE((rig.dir / "a.json").stat().st_mode) == 0o600


async def test_fifty_concurrent_calls_refresh_and_discover_once(rig: Rig) -> None:
    rig.account("a")
    results = await asyncio.gather(*(rig.generate() for _ in range(50)))
    assert len(results) == 50
    assert len(rig.log("refresh")) == 1
    assert len(rig.log("load")) == 1
    # The access token stops working: 50 calls get 401 together and share one refresh.
    rig.sim.accounts.expire(next(iter(rig.sim.accounts.accounts)))
    rig.sim.log.clear()
    await asyncio.gather(*(rig.generate() for _ in range(50)))
    assert len(rig.log("refresh")) == 1
    assert sum(1 for e in rig.log("generate") if e["status"] == 401) >= 1


async def test_429_moves_to_the_next_credential_and_cools_the_first(rig: Rig) -> None:
    rt_a, rt_b = rig.account("a"), rig.account("b")
    await rig.pool.ensure_loaded()
    rig.fault(account=rt_a, op="generate", kind="429", retry_delay="40s")
    rig.fault(account=rt_b, op="generate", kind="429", retry_delay="40s")
    rig.fault(account=rt_a, op="generate", kind="429", retry_delay="40s")
    with pytest.raises(PoolExhausted) as info:
        await rig.generate()
    assert info.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert 38 < info.value.retry_delay_s <= 40
    report = {r.id: r for r in rig.pool.report()}
    assert report["a"].state == report["b"].state == "COOLING"
    assert set(report["a"].cooling_until) == {"gemini-2.5-flash"}
    # Another model is not affected by the cool-down.
    _, cred = await rig.generate("gemini-2.5-pro")
    assert cred in ("a", "b")


async def test_429_on_a_served_by_b(rig: Rig) -> None:
    rt_a, _ = rig.account("a"), rig.account("b")
    await rig.pool.ensure_loaded()
    rig.pool._cursor = 0  # start with "a"
    rig.fault(account=rt_a, op="generate", kind="429", retry_delay="5s")
    before = time.time()
    body, cred = await rig.generate()
    after = time.time()
    assert cred == "b" and body["candidates"]
    # Cooling for the backend's 5 s from the moment of the 429, which fell within the call.
    assert before + 5 <= rig.entry("a").cooling["gemini-2.5-flash"] <= after + 5


async def test_default_cooldown_without_retry_info(tmp_path: Path) -> None:
    rig = Rig(tmp_path, default_cooldown_seconds=7.0)
    try:
        rt = rig.account("a")
        rig.fault(account=rt, op="generate", kind="429")  # the generic body: no delay at all
        with pytest.raises(PoolExhausted) as info:
            await rig.generate()
        assert info.value.retry_delay_s == pytest.approx(7.0, abs=0.5)
        desc = errors.describe(info.value)
        assert desc.metadata["upstream_reason"] == "rateLimitExceeded"
    finally:
        await rig.http.aclose()


async def test_400_is_never_retried(rig: Rig) -> None:
    rig.account("a"), rig.account("b")
    rig.fault(op="generate", kind="400", message="Request contains an invalid argument.", times=-1)
    with pytest.raises(BackendError) as info:
        await rig.generate()
    assert info.value.http_status == 400
    assert len(rig.log("generate")) == 1


async def test_unknown_model_is_learned_per_member_then_not_found_without_backend_calls(rig: Rig) -> None:
    rig.account("a"), rig.account("b")
    with pytest.raises(BackendError) as info:
        await rig.generate("gemini-9-ultra")
    assert errors.describe(info.value).code is grpc.StatusCode.NOT_FOUND
    # Each member was asked once and learned that it cannot serve the model ...
    assert sorted(e["account"] for e in rig.log("generate")) == sorted({e["account"] for e in rig.log("generate")})
    assert len(rig.log("generate")) == 2
    assert all(r.unsupported == ("gemini-9-ultra",) for r in rig.pool.report())
    # ... so the next call is NOT_FOUND at once, and other models still work.
    with pytest.raises(PoolExhausted) as again:
        await rig.generate("gemini-9-ultra")
    assert again.value.code is grpc.StatusCode.NOT_FOUND
    assert len(rig.log("generate")) == 2
    _, cred = await rig.generate("gemini-2.5-flash")
    assert cred in ("a", "b")


async def test_account_specific_403_kills_that_credential_only(rig: Rig) -> None:
    rt_a, _ = rig.account("a"), rig.account("b")
    await rig.pool.ensure_loaded()
    rig.pool._cursor = 0
    rig.fault(account=rt_a, op="generate", kind="403", reason="SUBSCRIPTION_REQUIRED",
              message="You lack a Gemini Code Assist license")
    _, cred = await rig.generate()
    assert cred == "b"
    report = {r.id: r for r in rig.pool.report()}
    assert report["a"].state == "DEAD" and "SUBSCRIPTION_REQUIRED" in report["a"].detail


async def test_generic_403_is_learned_for_that_model_only(rig: Rig) -> None:
    rig.account("a"), rig.account("b")
    rig.fault(op="generate", kind="403", model="gemini-2.5-flash", times=-1)
    with pytest.raises(BackendError) as info:
        await rig.generate()
    assert errors.describe(info.value).code is grpc.StatusCode.PERMISSION_DENIED
    assert len(rig.log("generate")) == 2  # each member once, then the caller gets the 403
    report = rig.pool.report()
    assert all(r.state == "READY" and r.unsupported == ("gemini-2.5-flash",) for r in report)
    _, cred = await rig.generate("gemini-2.5-pro")
    assert cred in ("a", "b")


async def test_5xx_tries_other_credentials_a_bounded_number_of_times(tmp_path: Path) -> None:
    rig = Rig(tmp_path, max_attempts=2)
    try:
        for name in "abc":
            rig.account(name)
        rig.fault(op="generate", kind="503", times=-1)
        with pytest.raises(BackendError) as info:
            await rig.generate()
        assert errors.describe(info.value).code is grpc.StatusCode.UNAVAILABLE
        assert len(rig.log("generate")) == 2
        rig.sim.faults.clear()
        rig.fault(op="generate", kind="500", times=1)
        _, cred = await rig.generate()
        assert cred
    finally:
        await rig.http.aclose()


async def test_invalid_grant_is_dead_and_skipped(rig: Rig) -> None:
    rig.account("a", revoked=True)
    rig.account("b")
    for _ in range(3):
        _, cred = await rig.generate()
        assert cred == "b"
    report = {r.id: r for r in rig.pool.report()}
    assert report["a"].state == "DEAD" and "invalid_grant" in report["a"].detail
    assert len([e for e in rig.log("refresh") if e["account"].startswith("1//unit-a")]) == 1


async def test_only_dead_credentials_give_unauthenticated(rig: Rig) -> None:
    rig.account("a", revoked=True)
    with pytest.raises(PoolExhausted) as info:
        await rig.generate()
    desc = errors.describe(info.value)
    assert desc.code is grpc.StatusCode.UNAUTHENTICATED and desc.reason == errors.REASON_CREDENTIALS_DEAD
    assert "invalid_grant" in desc.message


async def test_token_endpoint_outage_sets_the_credential_aside(rig: Rig) -> None:
    rt_a = rig.account("a")
    rig.account("b")
    await rig.pool.ensure_loaded()
    rig.pool._cursor = 0
    rig.fault(account=rt_a, op="refresh", kind="503")
    _, cred = await rig.generate()
    assert cred == "b"
    report = {r.id: r for r in rig.pool.report()}
    assert report["a"].state == "COOLING" and "503" in report["a"].detail
    assert rig.entry("a").cred.state is CredentialState.READY


async def test_no_credentials_says_where_it_looked(rig: Rig) -> None:
    with pytest.raises(errors.NoCredentials) as info:
        await rig.generate()
    assert str(rig.dir) in info.value.message and "GEMINI_CREDENTIALS" in info.value.message


async def test_directory_scan_skips_files_that_are_not_credentials(rig: Rig) -> None:
    rig.account("a")
    (rig.dir / "settings.json").write_text('{"theme": "dark"}')
    (rig.dir / "broken.json").write_text("{")
    (rig.dir / "notes.txt").write_text("x")
    await rig.pool.ensure_loaded()
    assert [e.cred.id for e in rig.pool.entries] == ["a"]


async def test_count_tokens(rig: Rig) -> None:
    rig.account("a")
    body = orjson.dumps({"contents": [{"role": "user", "parts": [{"text": "one two three"}]}]})
    result, _ = await rig.pool.count_tokens("gemini-2.5-pro", body, "r")
    assert result["totalTokens"] == 3
    assert rig.log("count")[0]["body"]["request"]["model"] == "models/gemini-2.5-pro"


# --- project discovery ---------------------------------------------------------------------

async def test_new_account_is_onboarded_by_polling_the_operation(rig: Rig) -> None:
    rt = rig.account("new", onboarded=False)
    body, cred = await rig.generate()
    assert body["candidates"]
    ops = [e["op"] for e in rig.log() if e["op"] in ("load", "onboard", "operation")]
    assert ops == ["load", "onboard", "operation", "operation"]
    assert rig.log("generate")[0]["body"]["project"] == rig.sim.accounts.accounts[rt].project


async def test_onboarding_polls_are_bounded(tmp_path: Path) -> None:
    rig = Rig(tmp_path, onboard_max_polls=1)
    try:
        rig.account("new", onboarded=False)
        await rig.pool.ensure_loaded()
        with pytest.raises(ProjectError) as info:
            await rig.resolver.resolve(rig.pool.entries[0].cred)
        assert not info.value.permanent and "1 polls" in info.value.message
    finally:
        await rig.http.aclose()


async def test_validation_required_marks_the_credential_dead_with_the_reason(rig: Rig) -> None:
    rt = rig.account("v")
    rig.fault(account=rt, op="load", kind="403", reason="VALIDATION_REQUIRED",
              message="Verify your account at https://accounts.google.com/verify")
    with pytest.raises(PoolExhausted) as info:
        await rig.generate()
    desc = errors.describe(info.value)
    assert (desc.code, desc.reason) == (grpc.StatusCode.PERMISSION_DENIED, errors.REASON_CREDENTIALS_INELIGIBLE)
    report = {r.id: r for r in rig.pool.report()}
    assert report["v"].state == "DEAD"
    assert "VALIDATION_REQUIRED" in report["v"].detail and "https://accounts.google.com/verify" in report["v"].detail


async def test_standard_tier_without_project_is_a_clear_error(rig: Rig) -> None:
    rig.account("std", onboarded=False, tier="standard-tier")
    with pytest.raises(PoolExhausted) as info:
        await rig.generate()
    desc = errors.describe(info.value)
    assert desc.code is grpc.StatusCode.PERMISSION_DENIED
    assert "GOOGLE_CLOUD_PROJECT" in desc.message


async def test_project_override_skips_discovery(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    try:
        rt = rig.account("a")
        project = rig.sim.accounts.lookup(rt).project
        data = orjson.loads((rig.dir / "a.json").read_bytes())
        (rig.dir / "a.json").write_bytes(orjson.dumps({**data, "project_id": project}))
        await rig.generate()
        assert rig.log("load") == []
        assert rig.log("generate")[0]["body"]["project"] == project
    finally:
        await rig.http.aclose()


async def test_refresh_error_kinds(rig: Rig) -> None:
    rt = rig.account("a")
    await rig.pool.ensure_loaded()
    cred = rig.pool.entries[0].cred
    rig.fault(account=rt, op="refresh", kind="500")
    with pytest.raises(RefreshError) as info:
        await cred.auth_headers()
    assert not info.value.permanent and cred.state is CredentialState.READY
    rig.fault(account=rt, op="refresh", kind="invalid_grant")
    with pytest.raises(RefreshError) as info:
        await cred.auth_headers()
    assert info.value.permanent and cred.state is CredentialState.DEAD
    # Dead stays dead without asking the token endpoint again.
    before = len(rig.log("refresh"))
    with pytest.raises(RefreshError):
        await cred.auth_headers()
    assert len(rig.log("refresh")) == before


async def test_a_failing_token_endpoint_is_asked_once_for_concurrent_callers(rig: Rig) -> None:
    rt = rig.account("a")
    await rig.pool.ensure_loaded()
    cred = rig.pool.entries[0].cred
    rig.fault(account=rt, op="refresh", kind="503", times=-1)
    outcomes = await asyncio.gather(*(cred.auth_headers() for _ in range(20)), return_exceptions=True)
    assert all(isinstance(o, RefreshError) and not o.permanent for o in outcomes)
    assert len(rig.log("refresh")) == 1


async def test_a_cancelled_caller_does_not_cancel_the_shared_refresh(rig: Rig) -> None:
    rt = rig.account("a")
    await rig.pool.ensure_loaded()
    cred = rig.pool.entries[0].cred
    rig.fault(account=rt, op="refresh", kind="slow", delay=0.3)
    first = asyncio.ensure_future(cred.auth_headers())
    second = asyncio.ensure_future(cred.auth_headers())
    # Cancel only once the shared refresh is at the token endpoint (the simulator records a call
    # as it begins): a starved loop must not let the cancel come first and leave nothing shared.
    end = asyncio.get_running_loop().time() + 30
    while not rig.log("refresh"):
        assert asyncio.get_running_loop().time() < end, "hung: the refresh never reached the token endpoint"
        await asyncio.sleep(0.01)
    assert not first.done()
    first.cancel()
    headers = await second
    assert headers["Authorization"].startswith("Bearer ya29.sim-")
    assert first.cancelled()
    assert len(rig.log("refresh")) == 1
