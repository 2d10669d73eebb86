"""One settings loader for both services (services/config_file.py): the same file, the same
precedence, each service refining the shared top level with its own table."""
from __future__ import annotations

from pathlib import Path

import pytest

from services.edge.settings import EdgeSettings
from services.upstream.settings import Settings as UpstreamSettings


@pytest.fixture
def config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("LOG_LEVEL", "MAX_BODY_BYTES", "READ_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "gateway.toml"
    monkeypatch.setenv("GATEWAY_CONFIG", str(path))
    return path


def test_one_file_serves_both_services_each_with_its_table(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config.write_text('LOG_LEVEL = "WARNING"\nmax_body_bytes = 1024\nread_timeout = 9\n'
                      '[upstream]\nlog_level = "DEBUG"\n[edge]\nmax_body_bytes = 2048\n')
    up, edge = UpstreamSettings(), EdgeSettings()
    assert up.log_level == "DEBUG" and up.read_timeout == 9
    assert edge.log_level == "WARNING" and edge.max_body_bytes == 2048
    monkeypatch.setenv("MAX_BODY_BYTES", "4096")
    assert EdgeSettings().max_body_bytes == 4096  # the environment wins over the file


@pytest.mark.parametrize("cls", [UpstreamSettings, EdgeSettings])
def test_a_broken_or_missing_file_is_an_error_for_both(config: Path, cls) -> None:
    with pytest.raises(ValueError, match="missing file"):
        cls()
    config.write_text("log_level = \n")
    with pytest.raises(ValueError, match="not valid TOML"):
        cls()
