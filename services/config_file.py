"""The one settings loader both services use: environment first, then the TOML file named by
`GATEWAY_CONFIG` (its top level, shared by the services, refined by the service's own table,
`[upstream]` or `[edge]`), then the defaults.

It is pydantic-settings' own TOML source; only the file's layout is ours: one file for the whole
gateway, keys matched case-insensitively to field names, tables of other services (and keys
another service owns) ignored, and a named file that is missing or broken is an error rather
than silently nothing.
"""
from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, ClassVar

from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, TomlConfigSettingsSource

ENV_VAR = "GATEWAY_CONFIG"


def config_path() -> Path | None:
    """The file GATEWAY_CONFIG names, or None when it is unset."""
    value = os.environ.get(ENV_VAR, "").strip()
    return Path(value).expanduser() if value else None


class GatewayConfigSource(TomlConfigSettingsSource):
    """GATEWAY_CONFIG's values for one service's settings class."""

    def __init__(self, settings_cls: type[BaseSettings], table: str) -> None:
        self._table = table
        self._fields = set(settings_cls.model_fields)
        path = config_path()
        if path is not None and not path.is_file():
            raise ValueError(f"{ENV_VAR} names a missing file: {path}")
        super().__init__(settings_cls, toml_file=path)

    def _read_file(self, file_path: Path) -> dict[str, Any]:  # type: ignore[override]
        try:
            raw = super()._read_file(file_path)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{ENV_VAR} {file_path} is not valid TOML: {exc}") from exc
        own = raw.get(self._table)
        merged: dict[str, Any] = {}
        # The shared top level first, refined by the service's table. Tables (the other
        # services', or a table where a scalar belongs) are not settings of this service.
        for table in (raw, own if isinstance(own, dict) else {}):
            for key, value in table.items():
                name = key.lower()
                if name in self._fields and not isinstance(value, dict):
                    merged[name] = value
        return merged


class GatewaySettings(BaseSettings):
    """Base of both services' settings: sources in the gateway's order of precedence."""

    config_table: ClassVar[str] = ""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, GatewayConfigSource(settings_cls, cls.config_table)
