"""deploy/seed_credentials.py: read-only credentials into the upstream's writable directory."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from deploy.seed_credentials import seed
from tests import harness
from tests.deploy.conftest import ROOT


def secret_dir(tmp_path: Path, files: dict[str, str]) -> Path:
    """A directory laid out like a mounted Kubernetes Secret (hidden ..data entries included)."""
    src = tmp_path / "secret"
    data = src / "..2026_11_25_00_00_00.000"
    data.mkdir(parents=True)
    for name, content in files.items():
        (data / name).write_text(content)
        (src / name).symlink_to(Path(data.name) / name)
    (src / "..data").symlink_to(data.name)
    return src


def cred(refresh: str, access: str = "a") -> str:
    return json.dumps({"refresh_token": refresh, "access_token": access, "expiry_date": 1})


def test_copies_each_credential_from_a_secret_volume(tmp_path: Path):
    src = secret_dir(tmp_path, {"oauth_creds.json": cred("r1"), "second": cred("r2"), "notes.txt": "hello"})
    dest = tmp_path / "creds"
    outcomes = {o.source.name: o.action for o in seed(src, dest)}
    assert outcomes == {"oauth_creds.json": "copied", "second": "copied", "notes.txt": "skipped"}
    # The upstream loads *.json: a key without the suffix gets it.
    assert sorted(p.name for p in dest.iterdir()) == ["oauth_creds.json", "second.json"]
    assert json.loads((dest / "second.json").read_text())["refresh_token"] == "r2"
    assert (dest / "oauth_creds.json").stat().st_mode & 0o777 == 0o600


def test_keeps_a_refreshed_copy_and_replaces_it_after_a_new_login(tmp_path: Path):
    src = tmp_path / "oauth_creds.json"
    src.write_text(cred("r1", access="old"))
    dest = tmp_path / "creds"
    seed(src, dest)
    # The upstream refreshed the token in its copy.
    harness.write_credential(dest / "oauth_creds.json", "r1", access_token="fresh")
    assert [o.action for o in seed(src, dest)] == ["kept"]
    assert json.loads((dest / "oauth_creds.json").read_text())["access_token"] == "fresh"
    # The operator put a new login into the Secret.
    src.write_text(cred("r9", access="new"))
    assert [o.action for o in seed(src, dest)] == ["replaced"]
    assert json.loads((dest / "oauth_creds.json").read_text())["refresh_token"] == "r9"


def test_cli_fails_with_guidance_when_there_is_no_credential(tmp_path: Path):
    src = secret_dir(tmp_path, {"oauth_creds.json": "{}"})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "deploy.seed_credentials", str(src), str(tmp_path / "d")],
                         capture_output=True, text=True, env=env, timeout=30)
    assert out.returncode == 1
    assert "no Gemini CLI credential" in out.stderr and "Traceback" not in out.stderr
    assert list((tmp_path / "d").iterdir()) == []
