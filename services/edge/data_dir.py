"""Where the gateway keeps its state: the one rule `make run`, `make demo` and the keys CLI share.

`DATA_DIR` (default ./data) holds the license database and secret of `make run`; `make demo`
keeps its own under `$DATA_DIR/demo`, so a demo key never opens the real stack. The keys CLI
takes `--data-dir DIR` or `--demo` and resolves them here, so a key created "for the demo" lands
in exactly the database the demo's edge reads.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

DEFAULT_DATA_DIR = Path("data")
DEMO_SUBDIR = "demo"
# The demo's own license key, kept so each start reuses it instead of adding another.
DEMO_KEY_FILE = "demo_key"


def resolve_data_dir(env: Mapping[str, str], *, demo: bool = False, override: str | Path | None = None) -> Path:
    """The absolute data directory: `override` (a --data-dir flag), else DATA_DIR, else ./data;
    the demo's lives under it in demo/."""
    base = Path(override or env.get("DATA_DIR") or DEFAULT_DATA_DIR).expanduser().resolve()
    return base / DEMO_SUBDIR if demo else base
