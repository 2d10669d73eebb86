"""Google's trace id of the backend call reaches the client in `x-gemini-trace-id` (through the
real Envoy), on every generating API, streamed and not, and the edge's request log line names it.

The trace id is the simulator's: Code Assist's `traceId` (the envelope of every answer), AI
Studio's `responseId` (those backends have no other id). The simulator records which one it
sent for each call; the request is found there by a text no other request carries.
"""
from __future__ import annotations

import uuid
from typing import Callable

import pytest

from tests.faults.conftest import rigs  # noqa: F401  (the fault suite's stack factory)
from tests.faults.rig import Rig, client, wait_for
from tests.harness import sent_request

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
