"""When each credential kind is ready, through its public methods: `ready_headers()` (the pool's
synchronous fast path) and `auth_headers()` (refreshes when due) must agree on it.

Token endpoints are the simulator app in process (httpx's ASGI transport): the credentials'
real HTTP code talks to the real simulator code, without sockets. Expiries are minutes away
from the refresh margins, so no case depends on how fast the machine is.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any, Awaitable, Callable

import httpx
import orjson
import pytest

from services.upstream.cloud_credentials import (REFRESH_AHEAD_S, ApiKeyCredential, AuthorizedUserCredential,
                                                 ServiceAccountCredential)
from services.upstream.credentials import Credential, CredentialState
from services.upstream.oauth_credential import EAGER_REFRESH_MS, OAuthCredential
from services.upstream.errors import RefreshError
from tests.cloud_keys import write_service_account
from tests.simulator.app import create_app
from tests.simulator.google_api import ServiceAccount

BASE = "http://sim.test"
TOKEN_URL = f"{BASE}/token"
FILE_TOKEN = "ya29.from-the-file"
MINUTE_MS = 60_000


class Rig:
    def __init__(self, tmp_path: Path) -> None:
        self.app = create_app()
        self.sim = self.app.state.sim
        self.tmp = tmp_path
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app))

    def grants(self) -> int:
        """Token requests the simulator has answered (refresh-token and JWT-bearer grants)."""
        return len(self.sim.log.entries(op="refresh"))

    def oauth(self, *, access_token: str | None, expiry_in_ms: int | None, token_ttl: float = 3600) -> OAuthCredential:
        rt = f"1//ready-{uuid.uuid4().hex[:8]}"
        self.sim.accounts.upsert({"refresh_token": rt, "token_ttl": token_ttl})
        data: dict[str, Any] = {"refresh_token": rt, "token_type": "Bearer"}
        if access_token is not None:
            data["access_token"] = access_token
        if expiry_in_ms is not None:
            data["expiry_date"] = int(time.time() * 1000) + expiry_in_ms
        path = self.tmp / f"{uuid.uuid4().hex[:6]}.json"
        path.write_bytes(orjson.dumps(data))
        return OAuthCredential(path, data, http=self.http, token_url=TOKEN_URL, client_id="cid",
                               client_secret="cs", timeout=10.0)

    def authorized_user(self, token_ttl: float = 3600) -> AuthorizedUserCredential:
        rt = f"1//adc-{uuid.uuid4().hex[:8]}"
        self.sim.accounts.upsert({"refresh_token": rt, "token_ttl": token_ttl})
        info = {"type": "authorized_user", "client_id": "cid.apps.googleusercontent.com", "client_secret": "cs",
                "refresh_token": rt}
        return AuthorizedUserCredential("adc", info, http=self.http, token_url=TOKEN_URL, timeout=10.0, path=None)

    def service_account(self, token_ttl: float = 3600) -> ServiceAccountCredential:
        email = f"sa-{uuid.uuid4().hex[:6]}@proj-r.iam.gserviceaccount.com"
        path = self.tmp / f"{email}.json"
        public = write_service_account(path, email, "proj-r", TOKEN_URL)
        self.sim.cloud.service_accounts[email] = ServiceAccount(email, public, "proj-r", token_ttl=token_ttl)
        return ServiceAccountCredential("sa", orjson.loads(path.read_bytes()), http=self.http, token_url=TOKEN_URL,
                                        timeout=10.0, path=path)


@pytest.fixture
async def rig(tmp_path: Path):
    r = Rig(tmp_path)
    yield r
    await r.http.aclose()


def bearer(headers: dict[str, str] | None) -> str | None:
    return None if headers is None else headers["Authorization"].removeprefix("Bearer ")


# --- Code Assist OAuth ---------------------------------------------------------------------------

# (what is in the file: access token, ms until expiry or None for no expiry_date; the token
#  endpoint's lifetime for new tokens) → (refreshed by the first auth_headers(), ready after it)
OAUTH_CASES = [
    pytest.param(FILE_TOKEN, 60 * MINUTE_MS, 3600, False, True, id="an-hour-left"),
    pytest.param(FILE_TOKEN, None, 3600, False, True, id="no-expiry-means-valid-until-a-401"),
    pytest.param(FILE_TOKEN, EAGER_REFRESH_MS + MINUTE_MS, 3600, False, True, id="a-minute-past-the-margin"),
    pytest.param(FILE_TOKEN, EAGER_REFRESH_MS - MINUTE_MS, 3600, True, True, id="inside-the-margin"),
    pytest.param(FILE_TOKEN, -60 * MINUTE_MS, 3600, True, True, id="expired"),
    pytest.param("", 60 * MINUTE_MS, 3600, True, True, id="empty-token"),
    pytest.param(None, None, 3600, True, True, id="no-token"),
    # The endpoint hands out a token already inside the margin: ready never, each call refreshes.
    pytest.param(FILE_TOKEN, -60 * MINUTE_MS, 120, True, False, id="new-token-inside-the-margin"),
]


@pytest.mark.parametrize("access_token,expiry_in_ms,token_ttl,refreshes,ready_after", OAUTH_CASES)
async def test_oauth_readiness(rig: Rig, access_token: str | None, expiry_in_ms: int | None, token_ttl: float,
                               refreshes: bool, ready_after: bool) -> None:
    cred = rig.oauth(access_token=access_token, expiry_in_ms=expiry_in_ms, token_ttl=token_ttl)
    # Headers are built by the first auth_headers(): before it the fast path always says "not ready".
    assert cred.ready_headers() is None
    headers = await cred.auth_headers()
    assert rig.grants() == int(refreshes), f"token requests after the first auth_headers(): {rig.grants()}"
    token = bearer(headers)
    if refreshes:
        assert token is not None and token.startswith("ya29.sim-"), f"expected a refreshed token, got {token!r}"
    else:
        assert token == FILE_TOKEN
    ready = cred.ready_headers()
    if ready_after:
        assert ready is headers, f"fast path after auth_headers() gave {ready!r}, expected {headers!r}"
        assert await cred.auth_headers() is headers
        assert rig.grants() == int(refreshes), "a ready credential asked the token endpoint again"
    else:
        assert ready is None, f"fast path offered {ready!r} although the token is inside the refresh margin"
        again = await cred.auth_headers()
        assert rig.grants() == 2, f"token requests after a second auth_headers(): {rig.grants()}"
        assert bearer(again) != token


async def test_oauth_401_refresh_makes_the_next_headers_ready(rig: Rig) -> None:
    cred = rig.oauth(access_token=FILE_TOKEN, expiry_in_ms=60 * MINUTE_MS)
    rejected = await cred.auth_headers()
    await cred.refresh(rejected=rejected)
    ready = cred.ready_headers()
    assert rig.grants() == 1
    assert ready is not None and bearer(ready) not in (None, FILE_TOKEN), f"fast path after the 401 refresh: {ready!r}"
    assert await cred.auth_headers() is ready


# --- AI Studio / Vertex AI keys -------------------------------------------------------------------

@pytest.mark.parametrize("express", [False, True], ids=["ai-studio-key", "vertex-express-key"])
async def test_api_key_is_ready_until_dead(express: bool) -> None:
    cred = ApiKeyCredential("k", "AIza-ready-key", kind="vertex-ai" if express else "ai-studio-key", express=express)
    expected = {"x-goog-api-key": "AIza-ready-key"}
    assert cred.ready_headers() == expected
    assert await cred.auth_headers() == expected
    # A new key in its file is ready at once.
    assert cred.reload("AIza-second-key")
    assert cred.ready_headers() == await cred.auth_headers() == {"x-goog-api-key": "AIza-second-key"}


# --- Vertex AI token grants -----------------------------------------------------------------------

TOKEN_KINDS = ["authorized_user", "service_account"]


@pytest.mark.parametrize("kind", TOKEN_KINDS)
@pytest.mark.parametrize("token_ttl,ready_after", [
    pytest.param(3600, True, id="an-hour"),
    pytest.param(REFRESH_AHEAD_S + 120, True, id="two-minutes-past-the-margin"),
    pytest.param(REFRESH_AHEAD_S - 120, False, id="inside-the-margin"),
])
async def test_token_grant_readiness(rig: Rig, kind: str, token_ttl: float, ready_after: bool) -> None:
    cred = getattr(rig, kind)(token_ttl=token_ttl)
    assert cred.ready_headers() is None, "ready before any token was granted"
    headers = await cred.auth_headers()
    token = bearer(headers)
    assert token is not None and token.startswith("ya29."), f"granted headers: {headers!r}"
    assert rig.grants() == 1, f"token requests after the first auth_headers(): {rig.grants()}"
    ready = cred.ready_headers()
    if ready_after:
        assert ready is headers, f"fast path after the grant gave {ready!r}, expected {headers!r}"
        assert await cred.auth_headers() is headers
        assert rig.grants() == 1, "a ready credential asked the token endpoint again"
    else:
        assert ready is None, f"fast path offered {ready!r} although the token is inside the refresh margin"
        again = await cred.auth_headers()
        assert rig.grants() == 2, f"token requests after a second auth_headers(): {rig.grants()}"
        assert bearer(again) != token


# --- every kind: DEAD, and concurrent callers -----------------------------------------------------

def _ready_oauth(rig: Rig) -> Credential:
    return rig.oauth(access_token=FILE_TOKEN, expiry_in_ms=60 * MINUTE_MS)


def _expired_oauth(rig: Rig) -> Credential:
    return rig.oauth(access_token=FILE_TOKEN, expiry_in_ms=-MINUTE_MS)


MAKERS: dict[str, Callable[[Rig], Credential]] = {
    "oauth-ready": _ready_oauth,
    "oauth-expired": _expired_oauth,
    "api-key": lambda rig: ApiKeyCredential("k", "AIza-dead-key", kind="ai-studio-key"),
    "authorized-user": lambda rig: rig.authorized_user(),
    "service-account": lambda rig: rig.service_account(),
}


@pytest.mark.parametrize("ineligible", [False, True], ids=["login-dead", "account-ineligible"])
@pytest.mark.parametrize("make", list(MAKERS.values()), ids=list(MAKERS))
async def test_dead_is_never_ready_and_refuses_without_a_token_request(rig: Rig, make: Callable[[Rig], Credential],
                                                                        ineligible: bool) -> None:
    cred = make(rig)
    cred.mark_dead("the operator must act", ineligible=ineligible)
    assert cred.ready_headers() is None
    with pytest.raises(RefreshError) as info:
        await cred.auth_headers()
    err = info.value
    assert (err.permanent, err.ineligible, err.message) == (True, ineligible, "the operator must act"), \
        f"auth_headers() of a DEAD credential raised {err!r}"
    assert rig.grants() == 0, f"a DEAD credential made {rig.grants()} token request(s)"
    assert cred.state is CredentialState.DEAD


@pytest.mark.parametrize("make", [_expired_oauth, lambda rig: rig.authorized_user(), lambda rig: rig.service_account()],
                         ids=["oauth", "authorized-user", "service-account"])
async def test_concurrent_callers_share_one_refresh(rig: Rig, make: Callable[[Rig], Credential]) -> None:
    cred = make(rig)
    calls: list[Awaitable[dict[str, str]]] = [cred.auth_headers() for _ in range(20)]
    results = await asyncio.gather(*calls)
    assert rig.grants() == 1, f"20 concurrent callers made {rig.grants()} token requests"
    assert len({bearer(h) for h in results}) == 1, f"callers got different tokens: {set(map(bearer, results))}"
    assert cred.ready_headers() == results[0]


# --- a refreshed OAuth token is served only once it is in the file --------------------------------

async def test_a_refreshed_token_is_not_served_before_it_is_in_the_file(rig: Rig, monkeypatch) -> None:
    """The quota poll (or the warm-up) can start the refresh, so callers arrive while the new
    token is being written: none may be answered with it before the file holds it (a crash then
    would lose a rotated refresh token; readers of the file, the Gemini CLI and tests, would see
    the old one). The file write is held until every caller has had its chance to run."""
    from services.upstream import token_store

    cred = rig.oauth(access_token=FILE_TOKEN, expiry_in_ms=-MINUTE_MS)
    write_started, release = asyncio.Event(), asyncio.Event()
    real_write = token_store.write_async

    async def held_write(path: Path, data: Any) -> None:
        write_started.set()
        await release.wait()
        await real_write(path, data)

    monkeypatch.setattr(token_store, "write_async", held_write)

    def on_disk() -> str:
        return orjson.loads(cred.path.read_bytes()).get("access_token", "")

    async def pool_caller() -> tuple[str | None, str]:
        """As Pool._attempt asks: the fast path, else auth_headers(); then what the file says."""
        headers = cred.ready_headers() or await cred.auth_headers()
        return bearer(headers), on_disk()

    starter = asyncio.create_task(cred.auth_headers())  # the poll that found the token expired
    await asyncio.wait_for(write_started.wait(), 30)
    fast_path, file_then = cred.ready_headers(), on_disk()
    callers = [asyncio.create_task(pool_caller()) for _ in range(5)]
    for _ in range(20):  # let each caller run as far as it can without the write
        await asyncio.sleep(0)
    answered_early = [c.result() for c in callers if c.done()]
    release.set()
    results = await asyncio.wait_for(asyncio.gather(*callers), 30)
    new_token = bearer(await starter)
    assert fast_path is None, f"fast path offered {fast_path!r} while the file held {file_then!r}"
    assert answered_early == [], f"callers answered (token, file) before the write finished: {answered_early}"
    assert new_token is not None and new_token != FILE_TOKEN and on_disk() == new_token, \
        f"refresh gave {new_token!r}; the file holds {on_disk()!r}"
    assert results == [(new_token, new_token)] * 5, f"(token served, file at that moment) per caller: {results}"
    assert rig.grants() == 1, f"token requests: {rig.grants()}"


# --- a new login that lands in the file during a refresh wins ------------------------------------

@pytest.mark.parametrize("new_login_fresh", [pytest.param(True, id="new-login-with-a-fresh-token"),
                                             pytest.param(False, id="new-login-with-an-expired-token")])
async def test_a_new_login_written_during_a_refresh_is_not_overwritten(rig: Rig, monkeypatch,
                                                                      new_login_fresh: bool) -> None:
    """The Gemini CLI's /auth writes a new login into the file while the upstream refreshes the
    old one: the refreshed token of the old login must not be written over it (the new login
    would be lost for good), and callers are served with the new login."""
    from services.upstream import token_endpoint

    cred = rig.oauth(access_token=FILE_TOKEN, expiry_in_ms=-MINUTE_MS)
    old_rt = orjson.loads(cred.path.read_bytes())["refresh_token"]
    new_rt = f"1//new-login-{uuid.uuid4().hex[:8]}"
    rig.sim.accounts.upsert({"refresh_token": new_rt, "token_ttl": 3600})
    new_login = {"refresh_token": new_rt, "token_type": "Bearer", "access_token": "ya29.the-new-login",
                 "expiry_date": int(time.time() * 1000) + (60 if new_login_fresh else -1) * MINUTE_MS}
    real_request = token_endpoint.request_token
    calls: list[str] = []

    async def request_while_the_cli_logs_in(http, url, form, timeout):
        calls.append(form["refresh_token"])
        if len(calls) == 1:
            cred.path.write_bytes(orjson.dumps(new_login))  # lands between the grant and the write
        return await real_request(http, url, form, timeout)

    monkeypatch.setattr(token_endpoint, "request_token", request_while_the_cli_logs_in)
    served = bearer(await cred.auth_headers())
    on_file = orjson.loads(cred.path.read_bytes())
    assert on_file.get("refresh_token") == new_rt, \
        f"the file's login after the refresh: {on_file.get('refresh_token')!r} (old {old_rt!r}, new {new_rt!r})"
    if new_login_fresh:
        assert calls == [old_rt], f"grants asked with refresh tokens {calls}"
        assert served == "ya29.the-new-login" and on_file["access_token"] == served, \
            f"served {served!r}; the file holds {on_file.get('access_token')!r}"
    else:
        # The new login's token is expired too: it gets its own refresh, which is then written.
        assert calls == [old_rt, new_rt], f"grants asked with refresh tokens {calls}"
        assert served is not None and served.startswith("ya29.sim-") and on_file["access_token"] == served, \
            f"served {served!r}; the file holds {on_file.get('access_token')!r}"
    assert cred.ready_headers() is not None and bearer(cred.ready_headers()) == served


# --- what a refresh finds in the file first: the file watcher's rules (reload) -------------------

async def test_a_new_login_found_before_a_refresh_forgets_the_old_logins_project(rig: Rig) -> None:
    """A refresh that finds a new login in the file takes it as the file watcher does: the
    project discovered for the old login is not the new one's."""
    cred = rig.oauth(access_token=FILE_TOKEN, expiry_in_ms=-MINUTE_MS)
    cred.discovered_project = "old-logins-project"
    new_rt = f"1//new-login-{uuid.uuid4().hex[:8]}"
    rig.sim.accounts.upsert({"refresh_token": new_rt, "token_ttl": 3600})
    cred.path.write_bytes(orjson.dumps({"refresh_token": new_rt, "access_token": "ya29.the-new-login",
                                        "expiry_date": int(time.time() * 1000) + 60 * MINUTE_MS}))
    served = bearer(await cred.auth_headers())
    assert served == "ya29.the-new-login" and rig.grants() == 0, f"served {served!r} after {rig.grants()} grants"
    assert cred.project is None, f"the new login kept the old login's project {cred.project!r}"


async def test_an_older_refresh_token_of_the_same_login_in_the_file_is_not_taken(rig: Rig, monkeypatch) -> None:
    """Another replica rotated the refresh token and this one took it (take_token) while its
    own file still holds the older one: a refresh uses the rotated token, not the file's."""
    from services.upstream import token_endpoint
    from services.upstream.credentials import fingerprint

    cred = rig.oauth(access_token=FILE_TOKEN, expiry_in_ms=-MINUTE_MS)
    old_rt = orjson.loads(cred.path.read_bytes())["refresh_token"]
    rotated = f"1//rotated-{uuid.uuid4().hex[:8]}"
    rig.sim.accounts.upsert({"refresh_token": rotated, "token_ttl": 3600})
    assert cred.take_token({"at": "ya29.shared", "exp": int(time.time() * 1000) + 60 * MINUTE_MS,
                            "fp": [fingerprint(old_rt), fingerprint(rotated)], "rt": rotated}, None)
    real_request = token_endpoint.request_token
    sent: list[str] = []

    async def recording(http, url, form, timeout):
        sent.append(form["refresh_token"])
        return await real_request(http, url, form, timeout)

    monkeypatch.setattr(token_endpoint, "request_token", recording)
    await cred.refresh({"Authorization": "Bearer ya29.shared"})  # the backend refused the shared token
    on_file = orjson.loads(cred.path.read_bytes())
    assert sent == [rotated], f"grants asked with {sent} (file's older {old_rt!r}, rotated {rotated!r})"
    assert on_file.get("refresh_token") == rotated, f"the file holds {on_file.get('refresh_token')!r}"
