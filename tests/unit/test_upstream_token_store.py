"""Credential files: atomic rewrite, mode 0600, token merge keeping what we do not manage."""
from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import orjson
import pytest

from services.upstream.token_store import atomic_write_json, merge_token_reply, read_json

CREDS = {"access_token": "ya29.old", "refresh_token": "1//rt", "scope": "s", "token_type": "Bearer",
         "expiry_date": 1000, "project_id": "my-proj", "x_custom": {"keep": True}}


def test_atomic_write_mode_content_and_no_leftovers(tmp_path: Path) -> None:
    target = tmp_path / "oauth_creds.json"
    target.write_text("{}")
    target.chmod(0o644)
    atomic_write_json(target, CREDS)
    assert read_json(target) == CREDS
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["oauth_creds.json"]
    # Pretty-printed like the Gemini CLI writes it.
    assert target.read_text().startswith("{\n  ")


def test_failed_write_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "c.json"
    atomic_write_json(target, CREDS)
    with pytest.raises(TypeError):
        atomic_write_json(target, {"bad": object()})
    assert read_json(target) == CREDS
    assert [p.name for p in tmp_path.iterdir()] == ["c.json"]


@pytest.mark.parametrize("reply,expect", [
    # No refresh_token in the reply (the usual case): the old one stays.
    ({"access_token": "ya29.new", "expires_in": 3599, "token_type": "Bearer"},
     {"access_token": "ya29.new", "refresh_token": "1//rt", "expiry_date": 1_000_000 + 3_599_000}),
    # A rotated refresh token replaces the old one.
    ({"access_token": "a2", "expires_in": 10, "refresh_token": "1//rt2", "id_token": "eyJ"},
     {"access_token": "a2", "refresh_token": "1//rt2", "id_token": "eyJ", "expiry_date": 1_010_000}),
    # No lifetime: assume an hour rather than keep an expiry already past.
    ({"access_token": "a3"}, {"access_token": "a3", "expiry_date": 1_000_000 + 3_600_000}),
])
def test_merge_token_reply(reply: dict, expect: dict) -> None:
    merged = merge_token_reply(CREDS, reply, now_ms=1_000_000)
    for key, value in expect.items():
        assert merged[key] == value, key
    # Unknown fields survive.
    assert merged["project_id"] == "my-proj" and merged["x_custom"] == {"keep": True}
    assert CREDS["access_token"] == "ya29.old"  # input untouched


def test_readers_never_see_a_torn_file_during_concurrent_writes(tmp_path: Path) -> None:
    target = tmp_path / "c.json"
    atomic_write_json(target, CREDS)
    big = {**CREDS, "padding": "x" * 200_000}
    stop = threading.Event()
    problems: list[str] = []

    def writer(n: int) -> None:
        for i in range(40):
            atomic_write_json(target, {**big, "access_token": f"w{n}-{i}"})

    def reader() -> None:
        while not stop.is_set():
            try:
                data = orjson.loads(target.read_bytes())
            except orjson.JSONDecodeError as exc:
                problems.append(str(exc))
                return
            if stat.S_IMODE(os.stat(target).st_mode) != 0o600:
                problems.append("mode")
            assert data["refresh_token"] == "1//rt"

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    r = threading.Thread(target=reader)
    r.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    r.join()
    assert problems == []
    assert read_json(target)["access_token"].startswith("w")
    assert [p.name for p in tmp_path.iterdir()] == ["c.json"]
