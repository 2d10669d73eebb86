"""Google's trace id of the backend call reaches the client in `x-gemini-trace-id` (through the
real Envoy), on every generating API, streamed and not, and the edge's request log line names it.

The trace id is the simulator's: Code Assist's `traceId` (the envelope of every answer), AI
Studio's `responseId` (those backends have no other id). Embeddings carry one when the backend's
answer names one (see the end of this file). The simulator records which one it
sent for each call; the request is found there by a text no other request carries.
"""
from __future__ import annotations

import uuid
from typing import Callable

import pytest

from tests.faults.conftest import rigs  # noqa: F401  (the fault suite's stack factory)
from tests.faults.rig import Rig, client, wait_for
from tests.harness import sent_request, start_simulator

HEADER = "x-gemini-trace-id"
MODEL = "gemini-2.5-flash"


def _chat(text: str, stream: bool) -> tuple[str, dict]:
    return "/v1/chat/completions", {"model": MODEL, "stream": stream,
                                    "messages": [{"role": "user", "content": text}]}


def _responses(text: str, stream: bool) -> tuple[str, dict]:
    return "/v1/responses", {"model": MODEL, "stream": stream, "input": text}


def _anthropic(text: str, stream: bool) -> tuple[str, dict]:
    return "/v1/messages", {"model": MODEL, "stream": stream, "max_tokens": 100,
                            "messages": [{"role": "user", "content": text}]}


def _gemini(text: str, stream: bool) -> tuple[str, dict]:
    method = "streamGenerateContent?alt=sse" if stream else "generateContent"
    return f"/v1beta/models/{MODEL}:{method}", {"contents": [{"role": "user", "parts": [{"text": text}]}]}


APIS: dict[str, Callable[[str, bool], tuple[str, dict]]] = {
    "openai": _chat, "responses": _responses, "anthropic": _anthropic, "gemini": _gemini}


@pytest.fixture(scope="module")
def code_assist(rigs) -> Rig:
    return rigs(label="trace-ca", envoy=True)


@pytest.fixture(scope="module")
def ai_studio(rigs) -> Rig:
    return rigs(label="trace-ais", credentials=0, envoy=True,
                upstream_env={"GEMINI_API_KEYS": f"AIza-trace-{uuid.uuid4().hex[:8]}"})


def _sent_trace(rig: Rig, text: str) -> str:
    """The trace id the simulator sent with its answer to the request carrying `text`."""
    def find():
        for entry in rig.sim.requests():
            body = entry.get("body")
            if isinstance(body, dict) and text in str(sent_request(entry)) and entry.get("trace_id"):
                return entry["trace_id"]
        return None
    return wait_for(find, 10, f"the simulator's record of {text!r}")


@pytest.mark.parametrize("backend", ["code_assist", "ai_studio"])
@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize("api", list(APIS))
def test_trace_id_header(request: pytest.FixtureRequest, backend: str, api: str, stream: bool):
    rig: Rig = request.getfixturevalue(backend)
    key = rig.key()
    text = f"trace me {uuid.uuid4().hex}"
    path, body = APIS[api](text, stream)
    with client() as http:
        r = http.post(f"{rig.public}{path}", json=body, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text[:300]
    sent = _sent_trace(rig, text)
    assert r.headers.get(HEADER) == sent
    # ... and the request's log line names it.
    rid = r.headers["x-request-id"]
    wait_for(lambda: any(rid in line and f"trace_id={sent}" in line for line in rig.edge.log().splitlines()),
             10, "the request's log line with its trace id")


# --- embeddings ----------------------------------------------------------------------------
# Google's embedding answers name no id, so the session simulator (faithful to them) sends
# none; a simulator of this module's own gives them a `responseId`, as generations have, to
# show that one reaches the client when a backend names it.

EMBED_MODEL = "gemini-embedding-001"


def _openai_embeddings(text: str) -> tuple[str, dict]:
    return "/v1/embeddings", {"model": EMBED_MODEL, "input": [text, "and another"]}


def _embed_content(text: str) -> tuple[str, dict]:
    return f"/v1beta/models/{EMBED_MODEL}:embedContent", {"content": {"parts": [{"text": text}]}}


def _batch_embed(text: str) -> tuple[str, dict]:
    return f"/v1beta/models/{EMBED_MODEL}:batchEmbedContents", {"requests": [
        {"model": f"models/{EMBED_MODEL}", "content": {"parts": [{"text": text}]}}]}


EMBED_APIS: dict[str, Callable[[str], tuple[str, dict]]] = {
    "openai": _openai_embeddings, "embedContent": _embed_content, "batchEmbedContents": _batch_embed}


@pytest.fixture(scope="module")
def naming_simulator(tmp_path_factory: pytest.TempPathFactory):
    proc = start_simulator(tmp_path_factory.mktemp("naming-sim"), "--embed-response-ids")
    yield proc
    proc.stop()


def _ai_studio_rig(rigs, label: str, simulator_proc=None) -> Rig:
    return rigs(simulator_proc, label=label, credentials=0, envoy=True,
                upstream_env={"GEMINI_API_KEYS": f"AIza-{label}-{uuid.uuid4().hex[:8]}"})


@pytest.fixture(scope="module")
def ai_studio_naming(rigs, naming_simulator) -> Rig:
    return _ai_studio_rig(rigs, "trace-embed", naming_simulator)


def _embed(rig: Rig, api: str, text: str):
    path, body = EMBED_APIS[api](text)
    with client() as http:
        r = http.post(f"{rig.public}{path}", json=body, headers={"Authorization": f"Bearer {rig.key()}"})
    assert r.status_code == 200, r.text[:300]
    return r


def _embed_trace(rig: Rig, text: str) -> str:
    def find():
        for entry in rig.sim.requests(op="embed"):
            if text in str(entry.get("body")) and entry.get("trace_id"):
                return entry["trace_id"]
        return None
    return wait_for(find, 10, f"the simulator's record of {text!r}")


@pytest.mark.parametrize("api", list(EMBED_APIS))
def test_embeddings_trace_id_header(ai_studio_naming: Rig, api: str):
    text = f"trace me {uuid.uuid4().hex}"
    r = _embed(ai_studio_naming, api, text)
    sent = _embed_trace(ai_studio_naming, text)
    assert r.headers.get(HEADER) == sent
    rid = r.headers["x-request-id"]
    wait_for(lambda: any(rid in line and f"trace_id={sent}" in line
                         for line in ai_studio_naming.edge.log().splitlines()),
             10, "the request's log line with its trace id")


def test_embeddings_without_an_id_send_no_trace_header(ai_studio: Rig):
    # Google's own answers (the session simulator's): nothing to pass on, and nothing made up.
    r = _embed(ai_studio, "openai", f"no trace {uuid.uuid4().hex}")
    assert HEADER not in r.headers and r.headers["x-request-id"]
