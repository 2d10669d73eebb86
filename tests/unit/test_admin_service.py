"""The one admin service layer, as the keys CLI uses it: create, find, edit, revoke, usage; the
CLI's `edit` and `admin-token rotate` commands; errors with statuses the HTTP API passes on."""
from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest

from services.edge import keys as cli
from services.edge.admin_service import AdminError, AdminService
from services.edge.admin_token import AdminTokenCheck, FailedLogins, ensure_admin_token, rotate_admin_token
from services.edge.store import hash_key, open_store

SECRET = b"service-secret"


@pytest.fixture
async def admin(license_db: str):
    """The service layer on either engine (SQLite file, PostgreSQL database)."""
    store = open_store(license_db)
    yield AdminService(store, SECRET)
    await store.close()


async def test_create_find_edit_revoke(admin: AdminService):
    key, rec = await admin.create_key(" team ", models="gemini-2.5-*, x", rpm=5)
    assert rec.name == "team" and rec.models == ("gemini-2.5-*", "x") and rec.key_hash == hash_key(SECRET, key)
    assert (await admin.find(key)).id == rec.id and (await admin.find("team")).id == rec.id
    assert (await admin.find(rec.prefix)).id == rec.id
    edited = await admin.update_key(rec.id, {"rpm": "", "tpm": 7, "models": ""})
    assert (edited.rpm, edited.tpm, edited.models) == (None, 7, ())
    assert (await admin.set_enabled(rec.id, False)).enabled is False
    after, changed = await admin.revoke(rec.id)
    assert changed and after.revoked_at is not None
    assert (await admin.revoke(rec.id))[1] is False


async def test_errors_carry_statuses(admin: AdminService):
    with pytest.raises(AdminError) as err:
        await admin.create_key("  ")
    assert err.value.status == 400
    with pytest.raises(AdminError) as err:
        await admin.create_key("a", rpm=-1)
    assert err.value.status == 400
    with pytest.raises(AdminError) as err:
        await admin.find("nobody")
    assert err.value.status == 404
    await admin.create_key("twin")
    await admin.create_key("twin")
    with pytest.raises(AdminError) as err:
        await admin.find("twin")
    assert err.value.status == 409 and "use the id" in err.value.message
    with pytest.raises(AdminError) as err:
        await admin.update_key(999, {"rpm": 1})
    assert err.value.status == 404
    with pytest.raises(AdminError) as err:
        await admin.update_key(1, {"key_hash": "x"})
    assert err.value.status == 400
    with pytest.raises(AdminError) as err:
        await admin.recent(limit=0)
    assert err.value.status == 400
    # No upstream: the credential calls say so (503), they do not crash.
    with pytest.raises(AdminError) as err:
        await admin.credentials()
    assert err.value.status == 503


async def test_a_key_named_like_an_id_is_not_taken_for_that_id(admin: AdminService):
    await admin.create_key("first")
    _, named = await admin.create_key("7")
    with pytest.raises(AdminError):
        await admin.key(7)
    assert (await admin.key(named.id)).name == "7"


def _cli(tmp_path: Path, monkeypatch, *argv: str) -> tuple[int, str, str]:
    monkeypatch.setenv("LICENSE_SECRET", SECRET.decode())
    out, err = io.StringIO(), io.StringIO()
    try:
        code = asyncio.run(cli.run(cli.build_parser().parse_args(["--data-dir", str(tmp_path), *argv]), out=out,
                                   err=err))
    except AdminError as exc:
        return 1, out.getvalue(), exc.message
    return code, out.getvalue(), err.getvalue()


def test_cli_edit(tmp_path: Path, monkeypatch):
    code, out, _ = _cli(tmp_path, monkeypatch, "create", "--name", "alice", "--rpm", "5", "--quota", "100")
    assert code == 0
    code, out, _ = _cli(tmp_path, monkeypatch, "edit", "alice", "--rpm", "none", "--tpm", "900", "--models",
                        "gemini-2.5-*", "--expires", "never", "--max-concurrent", "3")
    assert code == 0
    fields = dict(line.split(":", 1) for line in out.splitlines())
    assert fields["rpm"].strip() == "-" and fields["tpm"].strip() == "900" and fields["quota"].strip() == "100"
    assert fields["models"].strip() == "gemini-2.5-*" and fields["concurrent"].strip() == "3"
    assert _cli(tmp_path, monkeypatch, "edit", "alice")[0] == 1
    code, _, message = _cli(tmp_path, monkeypatch, "edit", "alice", "--rpm", "lots")
    assert code == 1 and "whole number" in message


def test_cli_rotate_replaces_the_admin_token(tmp_path: Path, monkeypatch):
    first = ensure_admin_token(tmp_path, SECRET)
    assert first and ensure_admin_token(tmp_path, SECRET) is None  # generated once only
    check = AdminTokenCheck(SECRET, tmp_path, None)
    assert check.verify(first)
    code, out, err = _cli(tmp_path, monkeypatch, "admin-token", "rotate")
    new = out.strip()
    assert code == 0 and new.startswith("gwadmin-") and "cannot be shown again" in err
    assert check.verify(new) and not check.verify(first)
    assert not AdminTokenCheck(SECRET, tmp_path / "nothing-here", None).verify(new)
    assert AdminTokenCheck(SECRET, tmp_path, "set-by-operator").verify("set-by-operator")
    assert not AdminTokenCheck(SECRET, tmp_path, "set-by-operator").verify(new)
    assert rotate_admin_token(tmp_path, b"other-secret") != new


def test_failed_logins_window():
    f = FailedLogins(limit=3, window=60.0)
    for t in (0.0, 1.0, 2.0):
        assert f.retry_after("a", t) == 0.0
        f.failed("a", t)
    assert f.retry_after("a", 3.0) == pytest.approx(57.0)
    assert f.retry_after("b", 3.0) == 0.0
    assert f.retry_after("a", 60.5) == 0.0  # the first failure left the window
    f.succeeded("a")
    assert f.retry_after("a", 61.0) == 0.0
    small = FailedLogins(limit=1, max_sources=10)
    for i in range(50):
        small.failed(f"s{i}", 0.0)
    assert len(small._seen) <= 10
