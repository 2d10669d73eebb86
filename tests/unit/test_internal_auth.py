"""Internal callers' credentials: the file format, verification, the logged caller, the CLI."""
from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from deploy import internal_tokens
from services.upstream import internal_auth
from services.upstream.internal_auth import (TokenFileError, Verifier, basic_credentials, htpasswd_line,
                                             is_loopback_listen, parse_tokens, verifier_for)
from tests import harness

TOKEN = "s3cret-token-value"


def test_htpasswd_line_is_what_htpasswd_prints():
    # htpasswd -nbs edge s3cret-token-value
    digest = base64.b64encode(hashlib.sha1(TOKEN.encode()).digest()).decode()
    assert htpasswd_line("edge", TOKEN) == f"edge:{{SHA}}{digest}"


@pytest.mark.parametrize("name", ["", "a:b", "a/b", "a b", "-x", "x" * 65])
def test_caller_names_are_plain(name: str):
    with pytest.raises(TokenFileError):
        htpasswd_line(name, TOKEN)


@pytest.mark.parametrize("text, problem", [
    ("", "lists no caller"),
    ("# only a comment\n", "lists no caller"),
    ("edge:plaintext\n", "expected name"),
    ("edge:{SHA}not-base64!\n", "not a base64 SHA-1"),
    ("edge:{SHA}" + base64.b64encode(b"short").decode() + "\n", "not a base64 SHA-1"),
    (htpasswd_line("edge", "a") + "\n" + htpasswd_line("edge", "b") + "\n", "listed twice"),
])
def test_bad_token_files_are_refused_with_the_line(text: str, problem: str):
    with pytest.raises(TokenFileError, match=problem):
        parse_tokens(text)


VERIFIER = Verifier(parse_tokens(f"# callers\n{htpasswd_line('edge', TOKEN)}\n\n{htpasswd_line('ops', 'o')}\n"))


@pytest.mark.parametrize("authorization, who", [
    (basic_credentials("edge", TOKEN), "edge"),
    (basic_credentials("ops", "o"), "ops"),
    ("basic " + base64.b64encode(f"edge:{TOKEN}".encode()).decode(), "edge"),
    (basic_credentials("ops", TOKEN), None),          # another caller's token
    (basic_credentials("mallory", TOKEN), None),      # unknown name
    (basic_credentials("edge", TOKEN + "x"), None),
    ("Bearer " + TOKEN, None),
    ("Basic " + base64.b64encode(b"edge").decode(), None),
    ("Basic %%%", None),
    ("Basic " + base64.b64encode(b"\xff\xfe:x").decode(), None),
    ("", None),
    (None, None),
])
def test_verifier_identifies_only_valid_credentials(authorization, who):
    assert VERIFIER.identify(authorization) == who


def test_without_a_file_everyone_is_local_but_only_on_loopback(tmp_path: Path):
    assert verifier_for("", "127.0.0.1:50051").identify(None) == internal_auth.ANONYMOUS
    assert verifier_for("", "localhost:1").callers is None
    for listen in ("0.0.0.0:50051", "[::]:50051", "10.1.2.3:50051", "upstream:50051"):
        with pytest.raises(TokenFileError, match="INTERNAL_TOKENS_FILE"):
            verifier_for("", listen)
    with pytest.raises(TokenFileError, match="No such file"):
        verifier_for(str(tmp_path / "missing"), "0.0.0.0:1")
    path = tmp_path / "tokens"
    path.write_text(htpasswd_line("edge", TOKEN) + "\n")
    assert verifier_for(str(path), "0.0.0.0:1").identify(basic_credentials("edge", TOKEN)) == "edge"


@pytest.mark.parametrize("listen, loopback", [("127.0.0.1:1", True), ("127.0.0.2:1", True), ("[::1]:1", True),
                                              ("0.0.0.0:1", False), ("[::]:1", False), ("edge:1", False)])
def test_loopback_listen_addresses(listen: str, loopback: bool):
    assert is_loopback_listen(listen) is loopback


@pytest.mark.parametrize("who, label, logged", [
    ("edge", "alice", "edge/alice"),
    ("ops", "edge", "ops/edge"),
    ("ops", "", "ops"),
    ("", "edge", "local/edge"),
    ("edge", "a b\nfake=1", "edge/abfake=1"),
    ("edge", "x" * 200, "edge/" + "x" * 64),
])
def test_the_logged_caller_is_the_identity_then_the_label(who: str, label: str, logged: str):
    import contextvars

    def run() -> str:
        if who:
            internal_auth._identity.set(who)
        return internal_auth.caller_of(label)
    assert contextvars.copy_context().run(run) == logged


def test_cli_add_and_init(tmp_path: Path):
    env = {"PYTHONPATH": str(harness.ROOT), "PATH": "/usr/bin:/bin"}
    tokens = tmp_path / "internal_tokens"

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "deploy.internal_tokens", *args], env=env,
                              capture_output=True, text=True, timeout=60)

    added = cli("add", "ops", "--file", str(tokens))
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    assert Verifier(parse_tokens(tokens.read_text())).identify(basic_credentials("ops", token)) == "ops"
    assert token not in tokens.read_text() and oct(tokens.stat().st_mode & 0o777) == "0o600"
    again = cli("add", "ops", "--file", str(tokens))
    assert again.returncode == 2 and "already lists" in again.stderr and "Traceback" not in again.stderr

    auth = internal_tokens.ensure(tmp_path / "dir")
    edge_token = auth.edge_token_file.read_text().strip()
    assert Verifier(parse_tokens(auth.tokens_file.read_text())).identify(basic_credentials("edge", edge_token)) == "edge"
    # Kept on the next start.
    assert internal_tokens.ensure(tmp_path / "dir") == auth and auth.edge_token_file.read_text().strip() == edge_token
    auth.edge_token_file.unlink()
    with pytest.raises(TokenFileError, match="only one of"):
        internal_tokens.ensure(tmp_path / "dir")


@pytest.mark.parametrize("metadata, admitted, recorded", [
    ((("authorization", basic_credentials("edge", TOKEN)),), True, "edge"),
    ((("x-other", "1"), ("authorization", basic_credentials("edge", TOKEN))), True, "edge"),
    ((("authorization", basic_credentials("edge", TOKEN + "x")),), False, ""),
    ((("x-other", "1"),), False, ""),
    ((), False, ""),
    (None, False, ""),
])
def test_admit_records_the_caller_only_when_admitted(metadata, admitted: bool, recorded: str):
    import contextvars

    def run() -> tuple[bool, str]:
        return internal_auth.admit(VERIFIER, metadata), internal_auth.current_identity()
    assert contextvars.copy_context().run(run) == (admitted, recorded)
