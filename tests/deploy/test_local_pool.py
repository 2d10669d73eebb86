"""`make run` with AI Studio / Vertex AI members and no Code Assist file."""
from __future__ import annotations

from pathlib import Path

import pytest

from deploy.local_checks import SetupError, check_credentials


def test_api_keys_alone_need_no_code_assist_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.gemini/oauth_creds.json here
    assert check_credentials({"GEMINI_API_KEYS": "AIza-1,AIza-2"}) is None
    assert check_credentials({"VERTEX_API_KEYS": "express-1"}) is None


def test_vertex_file_that_is_missing_is_explained(tmp_path: Path) -> None:
    with pytest.raises(SetupError) as info:
        check_credentials({"VERTEX_CREDENTIALS": str(tmp_path / "sa.json")})
    assert "does not exist" in str(info.value)


def test_broken_pool_file_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "pool.toml"
    path.write_text('[[members]]\nkind = "ai-studio"\nkey = "inline"\n')
    with pytest.raises(SetupError) as info:
        check_credentials({"POOL_CONFIG": str(path)})
    assert "allow_inline_secrets" in str(info.value)
