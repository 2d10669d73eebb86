"""Settings sources, the model catalog and request envelopes."""
from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from services.upstream.catalog import BUILTIN, build_catalog
from services.upstream.code_assist import build_count_body, build_envelope, check_body
from services.upstream.errors import InvalidRequest
from services.upstream.settings import GEMINI_CLI_CLIENT_ID, Settings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.delenv("GATEWAY_CONFIG", raising=False)
    return monkeypatch


def test_defaults(clean_env: pytest.MonkeyPatch) -> None:
    s = Settings()
    assert s.base_url == "https://cloudcode-pa.googleapis.com/v1internal"
    assert s.oauth_token_url == "https://oauth2.googleapis.com/token"
    assert s.oauth_client_id == GEMINI_CLI_CLIENT_ID
    assert s.credentials_path == Path("~/.gemini/oauth_creds.json").expanduser()
    assert s.upstream_listen == "127.0.0.1:50051"
    assert s.onboard_poll_interval == 5


def test_toml_file_then_env(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text('CODE_ASSIST_ENDPOINT = "http://file:1/"\nread_timeout = 5\nedge_port = 9\n'
                   'default_cooldown_seconds = 3\n[upstream]\nread_timeout = 7\n[edge]\nlog_level = "DEBUG"\n')
    clean_env.setenv("GATEWAY_CONFIG", str(cfg))
    s = Settings()
    assert s.code_assist_endpoint == "http://file:1"      # upper-case key, trailing slash dropped
    assert s.read_timeout == 7                             # [upstream] refines the top level
    assert s.default_cooldown_seconds == 3
    assert s.log_level == "INFO"                           # another service's table is not ours
    clean_env.setenv("READ_TIMEOUT", "11")
    clean_env.setenv("code_assist_api_version", "v9")
    s = Settings()
    assert s.read_timeout == 11 and s.code_assist_api_version == "v9"  # the environment wins


def test_missing_config_file_is_an_error(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("GATEWAY_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(ValueError, match="missing file"):
        Settings()


@pytest.mark.parametrize("value,ids", [
    ("", []),
    ("gemini-x, gemini-y", ["gemini-x", "gemini-y"]),
    ('["gemini-x", {"id": "gemini-z", "output_token_limit": 8192}]', ["gemini-x", "gemini-z"]),
])
def test_models_setting_extends_the_catalog(clean_env: pytest.MonkeyPatch, value: str, ids: list[str]) -> None:
    clean_env.setenv("MODELS", value)
    catalog = build_catalog(Settings().models)
    assert [m.id for m in catalog] == [m.id for m in BUILTIN] + ids


def test_catalog_thinking_ranges() -> None:
    by_id = {m.id: m for m in build_catalog()}
    pro = by_id["gemini-2.5-pro"].to_proto()
    assert (pro.thinking.min_budget, pro.thinking.max_budget, pro.thinking.can_disable) == (128, 32768, False)
    assert by_id["gemini-2.5-flash"].thinking.can_disable
    assert by_id["gemini-2.5-flash-lite"].thinking.min_budget == 512
    assert by_id["gemini-3-pro-preview"].thinking.uses_level
    replaced = {m.id: m for m in build_catalog([{"id": "gemini-2.5-pro", "display_name": "Mine"}])}
    assert replaced["gemini-2.5-pro"].display_name == "Mine"


def test_envelope_splices_the_request_bytes_unchanged() -> None:
    body = b'{"contents":[{"role":"user","parts":[{"text":"h\\u00e9 \\"q\\"","thoughtSignature":"c2ln"}]}],' \
           b'"generationConfig":{"temperature":1.0e0}}'
    env = build_envelope("gemini-2.5-pro", "proj-1", "rid########1", body)
    assert env.endswith(b',"request":' + body + b"}")
    parsed = orjson.loads(env)
    assert parsed["model"] == "gemini-2.5-pro" and parsed["project"] == "proj-1"
    assert parsed["user_prompt_id"] == "rid########1"
    assert parsed["request"] == orjson.loads(body)
    assert "project" not in orjson.loads(build_envelope("m", None, "r", b"{}"))


@pytest.mark.parametrize("body", [b"", b"not json", b"[1,2]", b'"s"', b'{"a":1},"project":"evil","x":{}'])
def test_bodies_that_would_break_the_envelope_are_refused(body: bytes) -> None:
    with pytest.raises(InvalidRequest):
        check_body(body)


def test_count_body() -> None:
    contents = [{"role": "user", "parts": [{"text": "hi"}]}]
    assert orjson.loads(build_count_body("gemini-2.5-pro", orjson.dumps({"contents": contents}))) == \
        {"request": {"model": "models/gemini-2.5-pro", "contents": contents}}
    wrapped = orjson.dumps({"generateContentRequest": {"model": "models/x", "contents": contents}})
    assert orjson.loads(build_count_body("m", wrapped))["request"]["contents"] == contents
    with pytest.raises(InvalidRequest):
        build_count_body("m", b'{"nothing": 1}')


@pytest.mark.parametrize("name", ["GOOGLE_CLOUD_PROJECT", "GOOGLE_CLOUD_PROJECT_ID", "google_cloud_project"])
def test_project_override_names(clean_env: pytest.MonkeyPatch, name: str) -> None:
    clean_env.delenv("GOOGLE_CLOUD_PROJECT_ID", raising=False)
    clean_env.setenv(name, "my-proj")
    assert Settings().google_cloud_project == "my-proj"
    assert Settings(google_cloud_project="init").google_cloud_project == "init"


def test_model_aliases_default_and_override(clean_env: pytest.MonkeyPatch) -> None:
    assert Settings().model_aliases["gemini-2.0-pro"] == "gemini-2.5-pro"
    clean_env.setenv("MODEL_ALIASES", "old-model=gemini-2.5-flash, x=y")
    assert Settings().model_aliases == {"old-model": "gemini-2.5-flash", "x": "y"}
    clean_env.setenv("MODEL_ALIASES", "broken")
    with pytest.raises(ValueError):
        Settings()
