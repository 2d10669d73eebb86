"""JSON Schema amplification (issue #10 item 1): a tool schema or a structured-output schema
whose `$ref`s fan out exponentially is refused with 400 schema_too_complex, through Envoy, and
the edge keeps answering /healthz while it is thrown at it. Today's failure: a 2.5 KB schema
with 30 $defs blocked the event loop and grew the edge to 10 GB."""
from __future__ import annotations

import threading
from typing import Iterator

import httpx
import pytest

from tests.faults.rig import Rig

pytestmark = pytest.mark.timeout(180)


def fan_out(depth: int) -> dict:
    """`depth` $defs, each referring twice to the next: 2^depth nodes once inlined."""
    defs = {f"d{i}": {"type": "object", "properties": {"a": {"$ref": f"#/$defs/d{i + 1}"},
                                                       "b": {"$ref": f"#/$defs/d{i + 1}"}}} for i in range(depth)}
    defs[f"d{depth}"] = {"type": "string"}
    return {"type": "object", "$defs": defs, "properties": {"x": {"$ref": "#/$defs/d0"}}}


@pytest.fixture(scope="module")
def rig(rigs) -> Rig:
    return rigs(label="fanout", envoy=True)


@pytest.fixture(scope="module")
def key(rig: Rig) -> str:
    return rig.key()


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=120, trust_env=False) as c:
        yield c


def chat(**extra) -> dict:
    return {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}], **extra}


def tool(name: str, schema: dict) -> dict:
    return {"type": "function", "function": {"name": name, "parameters": schema}}


# Depth 18 stalled /healthz for 7 s on the old code (and 30 never finished); the per-request
# budget also catches many tools that are each modest but add up.
ATTACKS = {
    "tool-parameters-depth-18": chat(tools=[tool("f", fan_out(18))]),
    "tool-parameters-depth-30": chat(tools=[tool("f", fan_out(30))]),
    "response-format-depth-18": chat(response_format={"type": "json_schema",
                                                      "json_schema": {"name": "r", "schema": fan_out(18)}}),
    "many-modest-tools": chat(tools=[tool(f"f{i}", fan_out(9)) for i in range(60)]),
}


@pytest.mark.parametrize("name", [n for n in ATTACKS if n != "tool-parameters-depth-30"])
def test_fan_out_is_refused_and_healthz_keeps_answering(rig: Rig, key: str, http: httpx.Client, name: str):
    result: dict = {}

    def attack() -> None:
        result["r"] = http.post(f"{rig.public}/v1/chat/completions", json=ATTACKS[name],
                                headers={"Authorization": f"Bearer {key}"})

    t = threading.Thread(target=attack)
    t.start()
    healthy = 0
    while t.is_alive():
        # A short timeout: a blocked event loop shows as a healthz that does not answer.
        try:
            healthy += httpx.get(f"{rig.edge.url}/healthz", timeout=2).status_code == 200
        except httpx.TimeoutException:
            pytest.fail("the edge stopped answering /healthz while it cleaned the schema")
        t.join(0.02)
    r = result["r"]
    assert r.status_code == 400, r.text[:300]
    err = r.json()["error"]
    assert err["code"] == "schema_too_complex", err
    assert err["type"] == "invalid_request_error"
    assert err["param"] and ("parameters" in err["param"] or "schema" in err["param"])
    assert httpx.get(f"{rig.edge.url}/healthz", timeout=5).status_code == 200


def test_the_30_deep_schema_of_the_report_is_refused(rig: Rig, key: str, http: httpx.Client):
    # Only with the fix in place: on the old code this request grew the edge to 10 GB.
    body = ATTACKS["tool-parameters-depth-30"]
    r = http.post(f"{rig.public}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"},
                  timeout=30)
    assert r.status_code == 400 and r.json()["error"]["code"] == "schema_too_complex", r.text[:300]


def test_a_shared_definition_used_modestly_still_works(rig: Rig, key: str, http: httpx.Client):
    r = http.post(f"{rig.public}/v1/chat/completions", json=chat(tools=[tool("f", fan_out(6))]),
                  headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text[:300]
