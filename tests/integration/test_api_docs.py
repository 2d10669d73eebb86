"""The docs page and the OpenAPI document through the real Envoy, without a key: the page and
every asset it references are served by the gateway itself (no CDN), and a headless Chromium
with no network beyond loopback renders the API's operations from it."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.faults.conftest import rigs  # noqa: F401  (the fault suite's stack factory)
from tests.faults.rig import Rig, client

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def rig(rigs) -> Rig:
    return rigs(label="docs", envoy=True)


def _references(html: str) -> list[str]:
    """Every URL the page loads: src= and href= attributes, and the document Swagger UI fetches."""
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    refs += re.findall(r"url: '([^']+)'", html)
    return refs


def test_docs_and_assets_served_keyless_through_envoy(rig: Rig):
    with client() as http:
        page = http.get(f"{rig.public}/docs")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        refs = _references(page.text)
        assert len(refs) >= 4, page.text  # stylesheet, icon, script, openapi.json
        for ref in refs:
            assert ref.startswith("/gemini_cli/"), f"{ref}: the page must not load anything from elsewhere"
            r = http.get(f"{rig.envoy.url}{ref}")
            assert r.status_code == 200, (ref, r.status_code)
            assert len(r.content) > 0
        assert "//" not in "".join(refs)
        doc = http.get(f"{rig.public}/openapi.json").json()
        assert doc["openapi"].startswith("3.1") and "/gemini_cli/v1/chat/completions" in doc["paths"]
        # only the docs are open: the API itself still wants a key, and no other file is served
        assert http.get(f"{rig.public}/v1/models").status_code == 401
        missing = http.get(f"{rig.public}/docs/assets/..%2F..%2Fcore.py")
        assert missing.status_code == 404 and missing.json()["error"]["message"]
        index = http.get(f"{rig.public}/").json()
        assert index["docs"] == "/gemini_cli/docs" and index["openapi"] == "/gemini_cli/openapi.json"


def test_chromium_renders_the_operations(rig: Rig, tmp_path: Path):
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed (tests/system_deps.sh installs it)"
    # Any host but loopback is unreachable to this browser: a page that needed a CDN would
    # render no operation.
    out = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
         f"--user-data-dir={tmp_path / 'profile'}", "--proxy-server=127.0.0.1:9",
         "--virtual-time-budget=15000", "--dump-dom", f"{rig.public}/docs"],
        capture_output=True, text=True, timeout=120)
    dom = out.stdout
    assert "swagger-ui" in dom, out.stderr[-2000:]
    for summary in ("Chat completion (OpenAI)", "Create a message (Anthropic)", "Generate content (Gemini)"):
        assert summary in dom, f"{summary!r} not rendered; stderr: {out.stderr[-1500:]}"
