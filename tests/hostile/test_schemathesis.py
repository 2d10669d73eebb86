"""schemathesis against the running edge, from the OpenAPI document it serves: never a 5xx.

The document is fetched from the edge (`/gemini_cli/openapi.json`) and every operation gets
schema-valid cases (which reach the translators, the upstream and the simulator) and
schema-violating ones (wrong types, missing members, bad enum values), each sent to the real
edge process. Only case generation is narrowed, in `narrow()`: models are ones the simulator
serves (else nearly every case is a 404), URLs are data: URLs (no case makes the edge fetch
anything), and strings, arrays and objects stay small (the run time on 2 cores). The key is
also fuzzed on its own: any value in any of the places a key may travel is a 401, never a 5xx.
"""
from __future__ import annotations

import copy
from typing import Any, Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from services.edge.apidoc.build import openapi
from services.edge.app import create_app
from services.edge.settings import EdgeSettings
from tests.faults.rig import Rig

pytestmark = pytest.mark.timeout(180)

MODELS = ["gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-3-pro-preview",
          "gemini-3-flash-preview"]
OPENAI_MODELS = MODELS + [f"{m}-{s}" for m in MODELS[:3] for s in ("thinking", "nothinking", "maxthinking")]
CLAUDE_MODELS = ["claude-sonnet-4-6", "claude-opus-4-7", "claude-haiku-4-5-20251001", "gemini-2.5-flash"]
EMBED_MODELS = ["gemini-embedding-001", "text-embedding-005"]
# Which models a request body's `model` member names, per schema.
BODY_MODELS = {"ChatCompletionRequest": OPENAI_MODELS, "ResponsesRequest": OPENAI_MODELS,
               "MessagesRequest": CLAUDE_MODELS, "CountMessageTokensRequest": CLAUDE_MODELS,
               "EmbeddingsRequest": EMBED_MODELS}
EMBED_OPS = {"openai_embeddings", "gemini_embed", "gemini_batch_embed"}
# Members that hold a URL the edge would fetch.
URL_MEMBERS = {("ImageUrl", "url"), ("InputImage", "image_url"), ("ImageSource", "url"), ("FileData", "fileUri")}
DATA_URL = {"type": "string", "pattern": "^data:image/(png|jpeg);base64,([A-Za-z0-9+/]{4}){0,8}$"}

# The operations, from the document the app builds (the same one it serves: checked below).
LOCAL_DOC = openapi(create_app(EdgeSettings(root_path="/gemini_cli")).routes, "/gemini_cli", title="t", version="1")
OPERATIONS = {op["operationId"]: (method, path, op) for path, item in LOCAL_DOC["paths"].items()
              for method, op in item.items()}
# POSTs carry bodies and reach the backend: they get most of the examples.
EXAMPLES = {"post": 50, "get": 12}
# Every case is a real request through three processes: report the first failure as found
# rather than spend minutes shrinking it.
NO_SHRINK = (Phase.explicit, Phase.generate)


def _small(schema: Any) -> None:
    """Bound every string, array and object of a schema (in place)."""
    if isinstance(schema, list):
        for item in schema:
            _small(item)
        return
    if not isinstance(schema, dict):
        return
    kind = schema.get("type")
    if kind == "string" and "enum" not in schema and "const" not in schema:
        schema["maxLength"] = min(schema.get("maxLength", 200), 200)
    elif kind == "array":
        schema["maxItems"] = min(schema.get("maxItems", 3), 3)
    elif kind == "object":
        schema["maxProperties"] = min(schema.get("maxProperties", 6), 6)
    for value in schema.values():
        _small(value)


def narrow(doc: dict) -> dict:
    """The served document with case generation narrowed (see the module's docstring)."""
    doc = copy.deepcopy(doc)
    schemas = doc["components"]["schemas"]
    for name, models in BODY_MODELS.items():
        schemas[name]["properties"]["model"] = {"type": "string", "enum": models}
    for name, member in URL_MEMBERS:
        schemas[name]["properties"][member] = DATA_URL
    _small(schemas)
    for item in doc["paths"].values():
        for op in item.values():
            for param in op.get("parameters", ()):
                if param["name"] == "model" and param["in"] == "path":
                    param["schema"] = {"type": "string",
                                       "enum": EMBED_MODELS if op["operationId"] in EMBED_OPS else MODELS}
                _small(param["schema"])
    return doc


@pytest.fixture(scope="module")
def rig(rigs) -> Rig:
    return rigs(label="fuzz")


@pytest.fixture(scope="module")
def embed_rig(rigs) -> Rig:
    # Embeddings need a pool member that has them (Code Assist has none): an AI Studio key.
    return rigs(label="fuzz-embed", upstream_env={"GEMINI_API_KEYS": "AIza-fuzz-embed-1"})


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30, trust_env=False) as c:
        yield c


@pytest.fixture(scope="module")
def served(rig: Rig, http: httpx.Client) -> dict:
    """The document as the running edge serves it, without a key."""
    r = http.get(f"{rig.api}/openapi.json")
    assert r.status_code == 200, r.text[:300]
    doc = r.json()
    assert doc == LOCAL_DOC | {"info": doc["info"]}
    return doc


@pytest.fixture(scope="module")
def schema(served: dict):
    return schemathesis.openapi.from_dict(narrow(served))


def _cases():
    for op_id, (method, _path, op) in OPERATIONS.items():
        yield pytest.param(op_id, GenerationMode.POSITIVE, id=f"{op_id}-positive")
        if op.get("parameters") or op.get("requestBody"):
            yield pytest.param(op_id, GenerationMode.NEGATIVE, id=f"{op_id}-negative")


@pytest.mark.parametrize(("op_id", "mode"), list(_cases()))
def test_no_5xx(request: pytest.FixtureRequest, schema, op_id: str, mode: GenerationMode):
    method, path, _ = OPERATIONS[op_id]
    op = schema[path][method.upper()]
    rig: Rig = request.getfixturevalue("embed_rig" if op_id in EMBED_OPS else "rig")
    key = rig.key()
    base_url = rig.edge.url
    seen: dict[int, int] = {}
    # The Google way for Gemini routes, Bearer for the others: each API with its own clients' habit.
    auth = {"x-goog-api-key": key} if "/v1beta/" in path else {"Authorization": f"Bearer {key}"}

    @settings(max_examples=EXAMPLES[method], deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck), phases=NO_SHRINK)
    @given(case=op.as_strategy(generation_mode=mode))
    def run(case) -> None:
        r = case.call(base_url=base_url, headers=auth, timeout=30)
        seen[r.status_code] = seen.get(r.status_code, 0) + 1
        assert r.status_code < 500, (f"{r.status_code} for {case.method} {case.formatted_path} "
                                     f"query={case.query} body={case.body!r:.500}: {r.text[:500]}")
        if r.status_code >= 400:
            # An error, in a shape a client can read.
            ctype = (r.headers.get("content-type") or [""])[0]
            assert ctype.startswith("application/json"), r.text[:200]
            assert r.json()["error"]["message"]

    run()
    assert sum(seen.values()) > 0
    if mode is GenerationMode.POSITIVE and method == "post":
        assert seen.get(200), f"no schema-valid case was served: {seen}"


junk_key = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=300)


@pytest.mark.parametrize("where", ["bearer", "bare", "x-goog-api-key", "x-api-key", "query"])
def test_any_key_value_is_a_401(rig: Rig, http: httpx.Client, where: str):
    url = f"{rig.api}/v1/chat/completions"
    body = {"model": "gemini-2.5-pro", "messages": [{"role": "user", "content": "hi"}]}
    if where == "x-api-key":  # as Anthropic clients send it
        url = f"{rig.api}/v1/messages"
        body = {**body, "max_tokens": 10}

    @settings(max_examples=40, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck), phases=NO_SHRINK)
    @given(value=junk_key)
    def run(value: str) -> None:
        headers: dict[str, str] = {}
        params: dict[str, str] = {}
        if where == "bearer":
            headers["Authorization"] = f"Bearer {value}"
        elif where == "bare":
            headers["Authorization"] = value
        elif where in ("x-goog-api-key", "x-api-key"):
            headers[where] = value
        else:
            params["key"] = value
        try:
            r = http.post(url, headers={k: v.encode("latin-1") for k, v in headers.items()}, params=params,
                          json=body)
        except httpx.LocalProtocolError:
            return  # a header value no HTTP client can send (e.g. a bare CR)
        assert r.status_code == 401, (value, r.status_code, r.text[:300])
        assert r.json()["error"]["message"]

    run()  # each request's client timeout is the hang guard
