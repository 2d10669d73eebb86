"""The OpenAPI document is built from the app's own routes: valid OpenAPI 3.1, every public
route documented, every documented path served by the route that declares it."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import schemathesis

from services.edge.apidoc.build import flat_routes, openapi
from services.edge.apidoc.common import Operation, documented
from services.edge.app import create_app
from services.edge.settings import EdgeSettings

ROOT = Path(__file__).resolve().parents[2]
# Served without being part of the described API: probes, the index and the docs themselves.
UNDOCUMENTED = {"/healthz", "/readyz", "/", "/openapi.json", "/docs", "/docs/assets/{name}"}
# The admin console and its JSON API are the operator's, behind the admin token, not the public API.
ADMIN = "/admin"


@pytest.fixture(scope="module")
def app():
    return create_app(EdgeSettings(root_path="/gemini_cli"))


@pytest.fixture(scope="module")
def doc(app) -> dict:
    return openapi(app.routes, "/gemini_cli", title="t", version="1")


def test_valid_openapi_31(doc: dict):
    schemathesis.openapi.from_dict(doc).validate()
    assert doc["openapi"] == "3.1.0"


def test_every_public_route_is_documented(app, doc: dict):
    documented_paths = {re.sub(r"{[^}]*}", "{}", p) for p in doc["paths"]}
    for route in flat_routes(app.routes):
        path = getattr(route, "path", "")
        rel = path.removeprefix("/gemini_cli")
        if not path.startswith("/gemini_cli") or rel in UNDOCUMENTED or rel == "" or rel.startswith(ADMIN):
            continue
        if rel == "/admin" or rel.startswith("/admin/"):
            continue  # the operators' console and its API: not the clients' API
        if rel.startswith("/v1alpha/") or re.match(r"^/v1/models/{target", rel):
            continue  # Gemini's other API versions: documented once, under v1beta
        if rel.startswith("/v1beta/models/{target"):
            # one route, documented per method
            assert all(f"/gemini_cli/v1beta/models/{{}}:{m}" in documented_paths
                       for m in ("generateContent", "streamGenerateContent", "countTokens", "embedContent",
                                 "batchEmbedContents"))
            continue
        assert re.sub(r"{[^}]*}", "{}", path) in documented_paths, path


def test_auth_and_errors_described(doc: dict):
    schemes = doc["components"]["securitySchemes"]
    assert {(s.get("in"), s.get("name") or s.get("scheme")) for s in schemes.values()} == {
        (None, "bearer"), ("header", "Authorization"), ("header", "x-goog-api-key"), ("header", "x-api-key"),
        ("query", "key")}
    errors = {"/gemini_cli/v1/chat/completions": "OpenAIError", "/gemini_cli/v1/messages": "AnthropicError",
              "/gemini_cli/v1beta/models/{model}:generateContent": "GoogleError"}
    for path, model in errors.items():
        op = doc["paths"][path]["post"]
        assert op["security"]
        for status in ("400", "401", "429"):
            assert op["responses"][status]["content"]["application/json"]["schema"]["$ref"].endswith("/" + model)
        assert "x-gemini-trace-id" in op["responses"]["200"]["headers"]
    # clients send more than is described: request bodies stay open
    assert doc["components"]["schemas"]["ChatCompletionRequest"]["additionalProperties"] is True


def test_a_documented_path_no_route_serves_is_refused(app):
    from services.edge.apidoc.openai_models import OpenAIError
    ghost = Operation("post", "/v1/nowhere", "ghost", "x", tag="t", error=OpenAIError)

    async def endpoint(request):  # pragma: no cover - never called
        raise AssertionError

    from starlette.routing import Route
    route = Route("/gemini_cli/v1/chat/completions", documented(ghost)(endpoint), methods=["POST"])
    with pytest.raises(RuntimeError, match="ghost"):
        openapi([route], "/gemini_cli", title="t", version="1")


def test_document_is_the_same_without_docstrings(doc: dict):
    """The edge runs under python -OO (services/docstrings.py): nothing in the document may come
    from a docstring. Fails if a schema's description is written as a docstring again."""
    script = ("import sys, orjson\n"
              "from services.edge.apidoc.build import openapi\n"
              "from services.edge.app import create_app\n"
              "from services.edge.settings import EdgeSettings\n"
              "app = create_app(EdgeSettings(root_path='/gemini_cli'))\n"
              "sys.stdout.buffer.write(orjson.dumps(openapi(app.routes, '/gemini_cli', title='t', version='1')))\n")
    out = subprocess.run([sys.executable, "-OO", "-c", script], cwd=ROOT, capture_output=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "gen")])})
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    assert orjson.loads(out.stdout) == doc
    assert sum("description" in s for s in doc["components"]["schemas"].values()) >= 13
