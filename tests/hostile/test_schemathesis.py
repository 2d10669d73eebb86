"""schemathesis against the running edge, both APIs, with a valid key: never a 5xx.

Every operation of `edge_openapi()` gets schema-valid cases (which reach the translators, the
upstream and the simulator) and schema-violating ones (wrong types, missing fields, bad enum
values), each sent to the real edge process. The key is also fuzzed on its own: any value in
any of the four places a key may travel is a 401, never a 5xx.
"""
from __future__ import annotations

import time
from typing import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from tests.faults.rig import Rig
from tests.hostile.edge_openapi import edge_openapi

pytestmark = pytest.mark.timeout(120)

SCHEMA = schemathesis.openapi.from_dict(edge_openapi())
OPERATIONS = {op.label: op for op in (r.ok() for r in SCHEMA.get_all_operations())}
# POSTs carry bodies and reach the backend: they get most of the examples.
EXAMPLES = {"POST": 60, "GET": 15}
# Every case is a real request through three processes: report the first failure as found
# rather than spend minutes shrinking it.
NO_SHRINK = (Phase.explicit, Phase.generate)


@pytest.fixture(scope="module")
def rig(rigs) -> Rig:
    return rigs(label="fuzz")


@pytest.fixture(scope="module")
def key(rig: Rig) -> str:
    return rig.key()


@pytest.fixture(scope="module")
def embed_rig(rigs) -> Rig:
    # Embeddings need a pool member that has them (Code Assist has none): an AI Studio key.
    return rigs(label="fuzz-embed", upstream_env={"GEMINI_API_KEYS": "AIza-fuzz-embed-1"})


def _embeds(path: str) -> bool:
    return path.endswith(("/embeddings", ":embedContent", ":batchEmbedContents"))


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30, trust_env=False) as c:
        yield c


def _cases():
    for label, op in OPERATIONS.items():
        yield pytest.param(label, GenerationMode.POSITIVE, id=f"{label}-positive")
        if op.path_parameters or op.query or op.body:
            yield pytest.param(label, GenerationMode.NEGATIVE, id=f"{label}-negative")


@pytest.mark.parametrize(("label", "mode"), list(_cases()))
def test_no_5xx(request: pytest.FixtureRequest, label: str, mode: GenerationMode):
    op = OPERATIONS[label]
    if _embeds(op.path):
        rig: Rig = request.getfixturevalue("embed_rig")
        key = rig.key()
    else:
        rig, key = request.getfixturevalue("rig"), request.getfixturevalue("key")
    assert rig.edge is not None
    base_url = rig.edge.url
    seen: dict[int, int] = {}
    # The Google way for Gemini routes, Bearer for OpenAI's: each API with its own clients' habit.
    auth = {"x-goog-api-key": key} if "/v1beta/" in op.path else {"Authorization": f"Bearer {key}"}

    @settings(max_examples=EXAMPLES[op.method.upper()], deadline=None, database=None, derandomize=True,
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
    if mode is GenerationMode.POSITIVE and op.method.upper() == "POST":
        assert seen.get(200), f"no schema-valid case was served: {seen}"


junk_key = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=300)


@pytest.mark.parametrize("where", ["bearer", "bare", "x-goog-api-key", "x-api-key", "query"])
def test_any_key_value_is_a_401(rig: Rig, http: httpx.Client, where: str):
    url = f"{rig.api}/v1/chat/completions"
    body = {"model": "gemini-2.5-pro", "messages": [{"role": "user", "content": "hi"}]}
    if where == "x-api-key":  # as Anthropic clients send it
        url = f"{rig.api}/v1/messages"
        body = {**body, "max_tokens": 10}
    started = time.monotonic()

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

    run()
    assert time.monotonic() - started < 60
