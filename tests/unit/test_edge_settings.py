"""Edge settings: defaults, environment, the GATEWAY_CONFIG TOML file, and the HMAC secret."""
from __future__ import annotations

from pathlib import Path

import pytest

from services.edge.settings import EdgeSettings, load_settings

NAMES = ("EDGE_PORT", "EDGE_HOST", "ROOT_PATH", "MAX_BODY_BYTES", "LICENSE_DB", "LICENSE_SECRET", "DATA_DIR",
         "GATEWAY_CONFIG", "UPSTREAM_ADDR", "MEDIA_ALLOW_PRIVATE", "SSE_KEEPALIVE_SECONDS")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in NAMES:
        monkeypatch.delenv(name, raising=False)


def test_defaults():
    s = load_settings()
    assert (s.root_path, s.edge_host, s.edge_port, s.upstream_addr) == ("/gemini_cli", "127.0.0.1", 8081,
                                                                         "127.0.0.1:50051")
    assert s.max_body_bytes == 32 * 1024 * 1024
    assert s.media_allow_private is False
    assert s.license_db_location == str(Path("data") / "licenses.db")


def test_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGE_PORT", "9999")
    monkeypatch.setenv("ROOT_PATH", "api/")
    monkeypatch.setenv("MAX_BODY_BYTES", "1000")
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MEDIA_ALLOW_PRIVATE", "true")
    s = load_settings()
    assert (s.edge_port, s.root_path, s.max_body_bytes, s.media_allow_private) == (9999, "/api", 1000, True)
    assert s.license_db_location == str(tmp_path / "licenses.db")


def test_toml_file_edge_table_and_env_precedence(monkeypatch, tmp_path):
    cfg = tmp_path / "gateway.toml"
    cfg.write_text('[upstream]\nupstream_listen = "x"\n\n[edge]\nEDGE_PORT = 7000\nroot_path = ""\n'
                   'sse_keepalive_seconds = 2.5\nunknown_thing = 1\n')
    monkeypatch.setenv("GATEWAY_CONFIG", str(cfg))
    s = load_settings()
    assert (s.edge_port, s.root_path, s.sse_keepalive_seconds) == (7000, "", 2.5)
    monkeypatch.setenv("EDGE_PORT", "7001")
    assert load_settings().edge_port == 7001


def test_toml_top_level(monkeypatch, tmp_path):
    cfg = tmp_path / "edge.toml"
    cfg.write_text('upstream_addr = "10.0.0.1:50051"\n')
    monkeypatch.setenv("GATEWAY_CONFIG", str(cfg))
    assert load_settings().upstream_addr == "10.0.0.1:50051"


def test_invalid_values_are_refused(monkeypatch):
    monkeypatch.setenv("MAX_BODY_BYTES", "0")
    with pytest.raises(ValueError):
        load_settings()


def test_secret_generated_once_and_private(tmp_path):
    s = EdgeSettings(data_dir=tmp_path / "d")
    first = s.resolve_secret()
    path = tmp_path / "d" / "license_secret"
    assert len(first) >= 32 and path.read_bytes().strip() == first
    assert path.stat().st_mode & 0o777 == 0o600
    assert EdgeSettings(data_dir=tmp_path / "d").resolve_secret() == first


def test_explicit_secret_wins(tmp_path):
    s = EdgeSettings(data_dir=tmp_path, license_secret="from-env")
    assert s.resolve_secret() == b"from-env"
    assert not (tmp_path / "license_secret").exists()


def test_toml_top_level_shared_and_edge_table_refines(monkeypatch, tmp_path):
    cfg = tmp_path / "gateway.toml"
    cfg.write_text('max_body_bytes = 1000\nedge_port = 7001\n\n[edge]\nedge_port = 7002\n')
    monkeypatch.setenv("GATEWAY_CONFIG", str(cfg))
    for name in ("EDGE_PORT", "MAX_BODY_BYTES"):
        monkeypatch.delenv(name, raising=False)
    s = EdgeSettings()
    assert (s.max_body_bytes, s.edge_port) == (1000, 7002)
