"""What the console may do to credentials, on real files: uploaded content recognised by its
shape (garbage refused), the directory chosen from the configuration only, generated names,
0600 files, the oauth_creds "disabled" flag kept in step with memory, *.key directories."""
from __future__ import annotations

import json
import stat
from pathlib import Path

import httpx
import orjson
import pytest

from services.upstream import credential_admin as ca
from services.upstream.cloud_credentials import ApiKeyCredential
from services.upstream.credentials import CredentialState
from services.upstream.oauth_credential import OAuthCredential
from services.upstream.pool_entry import Entry
from services.upstream.roster import plan
from services.upstream.settings import Settings
from tests.cloud_keys import write_service_account
from tests.harness import write_credential


def _oauth(rt: str = "rt-1") -> bytes:
    return json.dumps({"access_token": "a", "refresh_token": rt, "token_type": "Bearer", "expiry_date": 1}).encode()


def test_recognise_each_kind(tmp_path: Path):
    kind, what, payload = ca.recognise(_oauth())
    assert (kind, what) == ("code-assist", "gemini-cli-oauth") and orjson.loads(payload)["refresh_token"] == "rt-1"
    write_service_account(tmp_path / "sa.json", "sa@p.iam.gserviceaccount.com", "p", "http://127.0.0.1:9/token")
    assert ca.recognise((tmp_path / "sa.json").read_bytes())[:2] == ("vertex", "service-account")
    adc = {"type": "authorized_user", "refresh_token": "r", "client_id": "c", "client_secret": "s"}
    assert ca.recognise(json.dumps(adc).encode())[:2] == ("vertex", "authorized-user")
    assert ca.recognise(b"  AIzaSyA-0123456789abcdefghijklmnopqrstu \n") == (
        "ai-studio", "ai-studio-key", b"AIzaSyA-0123456789abcdefghijklmnopqrstu\n")


@pytest.mark.parametrize("content", [b"", b"  \n", b"{}", b'{"type": "service_account"}', b"[1, 2]", b"{oops",
                                     b"\xff\xfe\x00", b"short", b"a key with spaces in it", b"../../../etc/passwd",
                                     b"x" * (ca.MAX_CONTENT_BYTES + 1), b'"AIzaSyA-0123456789abcdefghijklmnop"'])
def test_garbage_is_invalid_argument(content: bytes):
    with pytest.raises(ca.CredentialAdminError) as err:
        ca.recognise(content)
    assert err.value.code == "INVALID_ARGUMENT" and err.value.message


def test_upload_dir_comes_from_the_configuration(tmp_path: Path):
    creds, keys = tmp_path / "creds", tmp_path / "keys"
    creds.mkdir()
    keys.mkdir()
    pool = tmp_path / "pool.toml"
    pool.write_text(f'[[members]]\nkind = "ai-studio"\nfile = "{keys}"\n')
    settings = Settings(gemini_credentials=str(creds), pool_config=str(pool))
    assert ca.upload_dir(settings, "code-assist") == creds
    assert ca.upload_dir(settings, "ai-studio") == keys
    with pytest.raises(ca.CredentialAdminError) as err:
        ca.upload_dir(settings, "vertex")
    assert err.value.code == "FAILED_PRECONDITION" and str(tmp_path) not in err.value.message
    # A single file (not a directory) and keys from the environment give nowhere to write.
    single = write_credential(tmp_path / "one.json", "rt")
    with pytest.raises(ca.CredentialAdminError):
        ca.upload_dir(Settings(gemini_credentials=str(single), gemini_api_keys="AIza-env-key-0123456"), "code-assist")
    with pytest.raises(ca.CredentialAdminError):
        ca.upload_dir(Settings(gemini_api_keys="AIza-env-key-0123456"), "ai-studio")


def test_written_files_have_generated_names_and_mode_0600(tmp_path: Path):
    a = ca.write_new(tmp_path, "code-assist", _oauth())
    b = ca.write_new(tmp_path, "ai-studio", b"AIza-key-0123456789\n")
    assert a.parent == b.parent == tmp_path and a.name != b.name
    assert a.name.startswith("uploaded-") and a.suffix == ".json" and b.suffix == ".key"
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in (a, b))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left


def test_key_directory_members_read_one_key_per_file(tmp_path: Path):
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "one.key").write_text("AIza-first-0123456789\n")
    (keys / "two.key").write_text("AIza-second-0123456789\n")
    (keys / "ignored.txt").write_text("AIza-not-read-0123456789\n")
    pool = tmp_path / "pool.toml"
    pool.write_text(f'[[members]]\nname = "studio"\nkind = "ai-studio"\nfile = "{keys}"\n')
    candidates, notes = plan(Settings(pool_config=str(pool)), {})
    assert sorted(c.data for c in candidates) == ["AIza-first-0123456789", "AIza-second-0123456789"]
    assert sorted(c.id for c in candidates) == ["studio-one", "studio-two"] and not notes


async def test_disabling_an_oauth_credential_is_written_to_its_file_and_survives_a_refresh(tmp_path: Path):
    path = write_credential(tmp_path / "seat.json", "rt-seat")
    async with httpx.AsyncClient() as http:
        cred = OAuthCredential(path, json.loads(path.read_text()), http=http, token_url="http://127.0.0.1:9/token",
                               client_id="c", client_secret="s")
        entry = Entry(cred)
        await ca.set_enabled(entry, False)
        assert cred.state is CredentialState.DISABLED and json.loads(path.read_text())["disabled"] is True
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        # A new OAuthCredential from the file (a restart) is still off.
        assert OAuthCredential(path, json.loads(path.read_text()), http=http, token_url="x", client_id="c",
                               client_secret="s").state is CredentialState.DISABLED
        await ca.set_enabled(entry, True)
        assert cred.state is CredentialState.READY and "disabled" not in json.loads(path.read_text())
        # What the credential writes back after a refresh does not bring the flag back.
        await cred._persist()
        assert "disabled" not in json.loads(path.read_text())


async def test_other_kinds_are_switched_off_in_memory():
    cred = ApiKeyCredential("k", "AIza-key", kind="ai-studio-key")
    await ca.set_enabled(Entry(cred), False)
    assert cred.state is CredentialState.DISABLED and "until the upstream restarts" in cred.detail
    await ca.set_enabled(Entry(cred), True)
    assert cred.state is CredentialState.READY
    # Enabling does not resurrect a DEAD credential.
    cred.mark_dead("key deleted")
    await ca.set_enabled(Entry(cred), True)
    assert cred.state is CredentialState.DEAD


async def test_the_same_secret_is_not_added_twice(tmp_path: Path):
    path = write_credential(tmp_path / "seat.json", "rt-same")
    async with httpx.AsyncClient() as http:
        entries = [Entry(OAuthCredential(path, json.loads(path.read_text()), http=http, token_url="x",
                                         client_id="c", client_secret="s")),
                   Entry(ApiKeyCredential("k", "AIza-known-0123456789", kind="ai-studio-key"))]
        assert ca.already_in_pool(entries, "code-assist", ca.recognise(_oauth("rt-same"))[2])
        assert not ca.already_in_pool(entries, "code-assist", ca.recognise(_oauth("rt-other"))[2])
        assert ca.already_in_pool(entries, "ai-studio", b"AIza-known-0123456789\n")
        assert not ca.already_in_pool(entries, "ai-studio", b"AIza-new-0123456789\n")
