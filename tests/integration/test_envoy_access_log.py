"""ENVOY_ACCESS_LOG on the real Envoy: which requests get an access-log line.

Only requests Envoy answers itself are needed (its /healthz: 200, a path outside the API: 404,
a request it cannot pass to the edge: 503 with a response flag), so no edge or upstream runs:
the configured ports are free ones nothing listens on.
"""
from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tests import harness


@pytest.mark.parametrize("mode, logged", [
    ("all", {"/healthz", "/nothere", "/gemini_cli/v1beta/models"}),
    ("errors", {"/nothere", "/gemini_cli/v1beta/models"}),
    ("off", set()),
])
def test_access_log_mode_picks_the_requests_logged(tmp_path: Path, mode: str, logged: set[str]):
    envoy = harness.start_envoy(tmp_path / "logs", harness.free_port(), harness.free_port(), access_log=mode)
    try:
        with httpx.Client(base_url=envoy.url, timeout=30, trust_env=False) as client:
            assert client.get("/healthz").status_code == 200
            assert client.get("/nothere").status_code == 404
            # No edge behind Envoy: a 503 with a response flag (connection failure, retries
            # exhausted, or no healthy edge, depending on the health check's first round).
            assert client.get("/gemini_cli/v1beta/models").status_code == 503
        # Envoy writes what its flush thread still holds when it stops: the log is complete.
        assert envoy.stop() == 0
        lines = [line for line in envoy.log().splitlines() if " public " in line and '"GET ' in line]
        paths = {line.split('"GET ', 1)[1].split()[0] for line in lines}
        assert paths == logged, envoy.log()[-2000:]
        flagged = [line for line in lines if "/gemini_cli/" in line]
        if flagged:  # the fields operators rely on stay in the line
            assert re.search(r'" 503 [A-Z,]+ in=\d+ out=\d+ \d+ms ttfb=\S+ edge=', flagged[0]), flagged[0]
    finally:
        envoy.stop()
