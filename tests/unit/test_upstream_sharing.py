"""What a replica takes from the others (REDIS_URL): token records and mirrored pool events.

No Redis here: the records and events are the shapes refresh_lease.py and shared_state.py write;
tests/integration/test_upstream_replicas.py runs them through real Redis and two upstreams.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from services.upstream.cloud_credentials import ApiKeyCredential, AuthorizedUserCredential
from services.upstream.credentials import CredentialState, fingerprint
from services.upstream.oauth_credential import OAuthCredential
from services.upstream.pool_entry import Entry
from services.upstream.shared_state import SharedState

RT = "1//shared-refresh-token"
NOW_MS = int(time.time() * 1000)
HOUR_MS = 3600 * 1000


def oauth(tmp_path: Path, rt: str = RT) -> OAuthCredential:
    data = {"refresh_token": rt, "access_token": "stale", "expiry_date": 1000}
    return OAuthCredential(tmp_path / "seat.json", data, http=httpx.AsyncClient(), token_url="http://t/token",
                           client_id="c", client_secret="s")


@pytest.mark.parametrize("record,rejected,taken", [
    ({"at": "ya29.new", "exp": NOW_MS + HOUR_MS, "fp": [fingerprint(RT)]}, None, True),
    ({"at": "ya29.new", "exp": NOW_MS + HOUR_MS, "fp": ["0" * 16, fingerprint(RT)]}, None, True),  # rotated lineage
    ({"at": "ya29.new", "exp": NOW_MS + HOUR_MS, "fp": [fingerprint("1//another-login")]}, None, False),
    ({"at": "ya29.new", "exp": NOW_MS + HOUR_MS, "fp": [fingerprint(RT)]}, "ya29.new", False),  # the refused one
    ({"at": "ya29.new", "exp": NOW_MS + 60_000, "fp": [fingerprint(RT)]}, None, False),  # expiring: refresh
    ({"at": "", "exp": NOW_MS + HOUR_MS, "fp": [fingerprint(RT)]}, None, False),
    ({"at": "ya29.new", "exp": "soon", "fp": [fingerprint(RT)]}, None, False),
    ({"at": "ya29.new", "exp": NOW_MS + HOUR_MS, "fp": fingerprint(RT)}, None, False),  # not a list
])
def test_oauth_takes_only_a_usable_record_of_its_own_login(tmp_path: Path, record: dict, rejected: str | None,
                                                           taken: bool) -> None:
    cred = oauth(tmp_path)
    assert cred.take_token(record, rejected) is taken
    assert (cred.access_token == "ya29.new") is taken
    assert cred.needs_refresh() is not taken


def test_oauth_record_round_trip_carries_a_rotated_refresh_token(tmp_path: Path) -> None:
    first, second = oauth(tmp_path), oauth(tmp_path)
    assert first.token_record() is not None and "rt" not in first.token_record()
    first._data.update(access_token="ya29.a", expiry_date=NOW_MS + HOUR_MS, refresh_token="1//rotated")
    first._lineage.append(first.fingerprint())
    record = orjson.loads(orjson.dumps(first.token_record()))
    assert record["rt"] == "1//rotated" and record["fp"] == [fingerprint(RT), fingerprint("1//rotated")]
    assert second.take_token(record, None) and second._data["refresh_token"] == "1//rotated"
    assert not second.reload({"refresh_token": RT})  # its older file: same login, not a new one
    assert second.reload({"refresh_token": "1//new-login"})  # a new login is one


def test_authorized_user_takes_a_record_of_the_same_secret(tmp_path: Path) -> None:
    info = {"type": "authorized_user", "refresh_token": "1//adc", "client_id": "id", "client_secret": "s"}
    make = lambda: AuthorizedUserCredential("adc", dict(info), http=httpx.AsyncClient(), token_url="http://t",  # noqa: E731
                                            timeout=5, path=None, project=None)
    first, second = make(), make()
    first._token, first._expires_at = "ya29.adc", time.time() + 3600
    record = first.token_record()
    assert record is not None and record["fp"] == [first.fingerprint()]
    assert not second.take_token(record, "ya29.adc")
    assert second.take_token(record, None) and not second.needs_refresh()
    other = AuthorizedUserCredential("adc", {**info, "refresh_token": "1//other"}, http=httpx.AsyncClient(),
                                     token_url="http://t", timeout=5, path=None, project=None)
    assert not other.take_token(record, None)


# --- the mirror ---------------------------------------------------------------------------------

def entry_for(cred: Any) -> Entry:
    return Entry(cred)


@pytest.fixture
def mirror():
    # Never connects: only the apply side is exercised.
    state = SharedState("redis://127.0.0.1:1/0", refresh_timeout=5)
    entries: list[Entry] = []
    state._entries = lambda: entries
    return state, entries


def event(state: SharedState, **fields: Any) -> bytes:
    return orjson.dumps({"from": "another-replica", **fields})


def test_a_cool_down_from_another_replica_is_taken_when_longer(mirror) -> None:
    state, entries = mirror
    key = ApiKeyCredential("k1", "AIza-one", kind="ai-studio-key")
    entries.append(entry_for(key))
    until = time.time() + 30
    state._apply(event(state, t="cool", k=key.share_key, m="gemini-2.5-pro", u=until, r="RATE_LIMIT_EXCEEDED"))
    assert entries[0].wait("gemini-2.5-pro", time.time()) > 25
    assert entries[0].wait("gemini-2.5-flash", time.time()) == 0
    state._apply(event(state, t="cool", k=key.share_key, m="gemini-2.5-pro", u=until - 20, r="x"))  # shorter
    assert entries[0].cooling["gemini-2.5-pro"] == until
    state._apply(orjson.dumps({"from": state.replica_id, "t": "cool", "k": key.share_key, "m": "m2",
                               "u": until, "r": "x"}))  # its own echo
    assert "m2" not in entries[0].cooling
    state._apply(event(state, t="cool", k="ai-studio-key/unknown", m="m3", u=until, r="x"))  # not a member here
    state._apply(b"not json")
    assert set(entries[0].cooling) == {"gemini-2.5-pro"}


def test_dead_and_alive_marks_follow_the_secret(mirror, tmp_path: Path) -> None:
    state, entries = mirror
    cred = oauth(tmp_path)
    heard: list[str] = []
    cred.on_change = lambda c: heard.append(c.state.value)
    entries.append(entry_for(cred))
    state._apply(event(state, t="dead", k=cred.share_key, fp=fingerprint("1//other"), d="invalid_grant", i=False,
                       at=1.0))
    assert cred.state is CredentialState.READY  # another secret was condemned
    state._apply(event(state, t="dead", k=cred.share_key, fp=cred.fingerprint(), d="invalid_grant", i=False, at=5.0))
    assert cred.state is CredentialState.DEAD and "invalid_grant" in cred.detail and cred.dead_at == 5.0
    state._apply(event(state, t="alive", k=cred.share_key, fp=fingerprint("1//other")))
    assert cred.state is CredentialState.DEAD
    state._apply(event(state, t="alive", k=cred.share_key, fp=cred.fingerprint()))
    assert cred.state is CredentialState.READY
    assert heard == []  # learnt from another replica: not published again
    cred.mark_dead("refused here")
    assert heard == ["DEAD"]
