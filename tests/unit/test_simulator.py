"""The Code Assist simulator, exercised over real HTTP (one subprocess, see tests/conftest.py `sim`)."""
from __future__ import annotations

import base64
import hashlib
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import httpx
import orjson
import pytest

from tests import harness
from tests.simulator.control import SimControl
from tests.simulator.signatures import BYPASS_SIGNATURE, signature_for

WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {
        "type": "OBJECT",
        "properties": {
            "city": {"type": "STRING"},
            "unit": {"type": "STRING", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "INTEGER"},
            "detailed": {"type": "BOOLEAN"},
            "note": {"type": "STRING"},
        },
        "required": ["city", "unit", "days", "detailed"],
    },
}
TIME = {"name": "get_time", "parametersJsonSchema": {"type": "object", "properties": {"tz": {"type": "string"}},
                                                      "required": ["tz"]}}


@pytest.fixture
def http(sim: SimControl) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url, trust_env=False, timeout=10) as client:
        yield client


def new_token() -> str:
    return f"1//sim-{uuid.uuid4().hex}"


def refresh(http: httpx.Client, rt: str) -> httpx.Response:
    return http.post("/token", data={"grant_type": "refresh_token", "refresh_token": rt,
                                     "client_id": "cid", "client_secret": "secret"})


class Caller:
    """An onboarded account with a fresh access token."""

    def __init__(self, http: httpx.Client, rt: str | None = None) -> None:
        self.http = http
        self.rt = rt or new_token()
        resp = refresh(http, self.rt)
        assert resp.status_code == 200, resp.text
        self.token = resp.json()["access_token"]
        load = self.post("/v1internal:loadCodeAssist", {"metadata": {"pluginType": "GEMINI"}})
        self.project = load.json().get("cloudaicompanionProject")

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}

    def post(self, path: str, body: Any) -> httpx.Response:
        return self.http.post(path, json=body, headers=self.headers)

    def envelope(self, request: dict[str, Any], model: str = "gemini-2.5-pro") -> dict[str, Any]:
        return {"model": model, "project": self.project, "user_prompt_id": "p########1", "request": request}

    def generate(self, request: dict[str, Any], model: str = "gemini-2.5-pro") -> httpx.Response:
        return self.post("/v1internal:generateContent", self.envelope(request, model))

    def stream(self, request: dict[str, Any], model: str = "gemini-2.5-pro") -> httpx.Response:
        return self.post("/v1internal:streamGenerateContent?alt=sse", self.envelope(request, model))


def user(*parts: Any, role: str = "user") -> dict[str, Any]:
    return {"role": role, "parts": [{"text": p} if isinstance(p, str) else p for p in parts]}


def ask(text: str, **extra: Any) -> dict[str, Any]:
    return {"contents": [user(text)], **extra}


def sse_events(resp: httpx.Response) -> list[dict[str, Any]]:
    """Parse an SSE body the way the Gemini CLI does, insisting on CRLF framing."""
    assert resp.headers["content-type"].startswith("text/event-stream")
    raw = resp.text
    assert raw.endswith("\r\n\r\n") and "[DONE]" not in raw
    events = []
    for block in raw.split("\r\n\r\n")[:-1]:
        assert block.startswith("data: "), block
        events.append(orjson.loads(block[len("data: "):]))
    return events


def parts_of(reply: dict[str, Any]) -> list[dict[str, Any]]:
    return reply["response"]["candidates"][0]["content"]["parts"]


def wait_record(sim: SimControl, op: str, pred=lambda e: e["finished"] is not None, timeout: float = 3.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entries = [e for e in sim.requests(op) if pred(e)]
        if entries:
            return entries[-1]
        time.sleep(0.02)
    raise AssertionError(f"no finished {op} record: {sim.requests(op)}")


# --- OAuth, auth, projects ------------------------------------------------------------------

def test_refresh_issues_working_tokens_and_rejects_bad_grants(sim: SimControl, http: httpx.Client) -> None:
    rt = new_token()
    first, second = refresh(http, rt).json(), refresh(http, rt).json()
    assert first["token_type"] == "Bearer" and first["expires_in"] == 3600
    assert "cloud-platform" in first["scope"] and "refresh_token" not in first
    assert first["access_token"] != second["access_token"]

    bad = http.post("/token", data={"grant_type": "password", "refresh_token": rt})
    assert bad.status_code == 400 and bad.json()["error"] == "unsupported_grant_type"
    missing = http.post("/token", data={"grant_type": "refresh_token"})
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"

    sim.revoke(rt)
    revoked = refresh(http, rt)
    assert revoked.status_code == 400
    assert revoked.json() == {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}
    # Revocation also kills the access tokens already issued.
    old = http.post("/v1internal:loadCodeAssist", json={},
                    headers={"authorization": f"Bearer {second['access_token']}"})
    assert old.status_code == 401

    rec = sim.requests("refresh")[-1]
    assert rec["account"] == rt and rec["status"] == 400 and rec["body"]["grant_type"] == "refresh_token"


def test_expired_and_missing_tokens_get_401(sim: SimControl, http: httpx.Client) -> None:
    caller = Caller(http)
    assert caller.generate(ask("hi")).status_code == 200
    sim.expire(caller.rt)
    resp = caller.generate(ask("hi"))
    assert resp.status_code == 401
    err = resp.json()["error"]
    assert err["status"] == "UNAUTHENTICATED" and err["details"][0]["reason"] == "ACCESS_TOKEN_EXPIRED"
    assert resp.headers["www-authenticate"].startswith("Bearer")
    # A new token from the same refresh token works again.
    caller.token = refresh(http, caller.rt).json()["access_token"]
    assert caller.generate(ask("hi")).status_code == 200

    anon = http.post("/v1internal:generateContent", json=caller.envelope(ask("hi")))
    assert anon.status_code == 401 and anon.json()["error"]["details"][0]["reason"] == "CREDENTIALS_MISSING"

    short = new_token()
    sim.add_account(short, token_ttl=0)
    tok = refresh(http, short).json()
    assert tok["expires_in"] == 0
    assert http.post("/v1internal:loadCodeAssist", json={},
                     headers={"authorization": f"Bearer {tok['access_token']}"}).status_code == 401


def test_project_model_and_body_checks(sim: SimControl, http: httpx.Client) -> None:
    caller = Caller(http)
    wrong = caller.post("/v1internal:generateContent", dict(caller.envelope(ask("hi")), project="someone-else"))
    assert wrong.status_code == 403 and wrong.json()["error"]["status"] == "PERMISSION_DENIED"
    no_project = caller.post("/v1internal:generateContent", {"model": "gemini-2.5-pro", "request": ask("hi")})
    assert no_project.status_code == 403

    unknown = caller.generate(ask("hi"), model="gemini-1.0-ultra")
    assert unknown.status_code == 404 and unknown.json()["error"]["status"] == "NOT_FOUND"

    garbage = http.post("/v1internal:generateContent", content=b"{nope", headers=caller.headers)
    assert garbage.status_code == 400 and garbage.json()["error"]["status"] == "INVALID_ARGUMENT"
    empty = caller.generate({"contents": []})
    assert empty.status_code == 400
    for think, model in [({"thinkingBudget": 1024, "thinkingLevel": "HIGH"}, "gemini-3-pro-preview"),
                         ({"thinkingLevel": "HIGH"}, "gemini-2.5-flash"),
                         ({"thinkingBudget": 0}, "gemini-2.5-pro"),
                         ({"thinkingLevel": "MINIMAL"}, "gemini-3-pro-preview")]:
        resp = caller.generate(ask("hi", generationConfig={"thinkingConfig": think}), model=model)
        assert resp.status_code == 400, (think, model)

    # Streaming errors come as a JSON array with the HTTP error status.
    stream_err = caller.stream(ask("hi"), model="gemini-0")
    assert stream_err.status_code == 404
    assert stream_err.json()[0]["error"]["code"] == 404

    stray = http.post("/v1internal:embedContent", json={})
    assert stray.status_code == 404 and stray.json()["error"]["status"] == "NOT_FOUND"
    assert sim.requests("unknown")[-1]["path"] == "/v1internal:embedContent"


def test_onboarding_flow(sim: SimControl, http: httpx.Client) -> None:
    rt = new_token()
    sim.add_account(rt, onboarded=False, email="new@example.com")
    caller = Caller(http, rt)
    assert caller.project is None
    load = caller.post("/v1internal:loadCodeAssist", {}).json()
    assert "currentTier" not in load
    assert load["allowedTiers"][0]["id"] == "free-tier" and load["allowedTiers"][0]["isDefault"] is True
    # Before onboarding nothing can be generated, whatever project is claimed.
    assert caller.post("/v1internal:generateContent", {"model": "gemini-2.5-pro", "project": "x",
                                                       "request": ask("hi")}).status_code == 403
    # The free tier runs on a managed project: sending one is refused.
    refused = caller.post("/v1internal:onboardUser", {"tierId": "free-tier", "cloudaicompanionProject": "mine"})
    assert refused.status_code == 400 and refused.json()["error"]["status"] == "FAILED_PRECONDITION"

    lro = caller.post("/v1internal:onboardUser", {"tierId": "free-tier", "metadata": {}}).json()
    assert lro["done"] is False and lro["name"].startswith("operations/")
    first = http.get(f"/v1internal/{lro['name']}", headers=caller.headers).json()
    assert first == {"name": lro["name"], "done": False}
    done = http.get(f"/v1internal/{lro['name']}", headers=caller.headers).json()
    assert done["done"] is True
    project = done["response"]["cloudaicompanionProject"]["id"]
    assert project.startswith("sim-project-")

    load = caller.post("/v1internal:loadCodeAssist", {}).json()
    assert load["currentTier"]["id"] == "free-tier" and load["cloudaicompanionProject"] == project
    caller.project = project
    assert caller.generate(ask("hi")).status_code == 200
    assert http.get("/v1internal/operations/nope", headers=caller.headers).status_code == 404

    # A standard-tier account brings its own project.
    std = new_token()
    sim.add_account(std, onboarded=False, tier="standard-tier")
    c2 = Caller(http, std)
    assert c2.post("/v1internal:onboardUser", {"tierId": "standard-tier"}).status_code == 400
    op = c2.post("/v1internal:onboardUser", {"tierId": "standard-tier", "cloudaicompanionProject": "my-proj"}).json()
    # Older CLIs re-POST onboardUser instead of polling.
    c2.post("/v1internal:onboardUser", {"tierId": "standard-tier", "cloudaicompanionProject": "my-proj"})
    final = c2.post("/v1internal:onboardUser", {"tierId": "standard-tier", "cloudaicompanionProject": "my-proj"})
    assert final.json()["done"] is True and final.json()["name"] == op["name"]
    assert final.json()["response"]["cloudaicompanionProject"]["id"] == "my-proj"


def test_strict_accounts_only_knows_registered_tokens(tmp_path: Path) -> None:
    proc = harness.start_simulator(tmp_path, "--strict-accounts")
    try:
        with httpx.Client(base_url=proc.url, trust_env=False, timeout=5) as http, SimControl(proc.url) as ctl:
            assert refresh(http, "1//stranger").json()["error"] == "invalid_grant"
            ctl.add_account("1//known", project="fixed-project")
            caller = Caller(http, "1//known")
            assert caller.project == "fixed-project"
            assert caller.generate(ask("hello")).status_code == 200
    finally:
        proc.stop()


# --- answers -------------------------------------------------------------------------------

def test_text_answer_unary_and_stream_agree(sim: SimControl, http: httpx.Client) -> None:
    caller = Caller(http)
    request = {"contents": [user("earlier question"), user("earlier answer", role="model"),
                            user("hello big world [chunks=4]")],
               "systemInstruction": {"parts": [{"text": "be brief"}]}}
    unary = caller.generate(request)
    assert unary.status_code == 200
    reply = unary.json()
    expected = "system: be brief | echo: hello big world [chunks=4]"
    assert parts_of(reply) == [{"text": expected}]
    resp = reply["response"]
    assert resp["candidates"][0]["finishReason"] == "STOP"
    assert resp["modelVersion"] == "gemini-2.5-pro" and resp["responseId"] and resp["createTime"].endswith("Z")
    assert reply["traceId"] == unary.headers["x-cloudaicompanion-trace-id"]
    usage = resp["usageMetadata"]
    prompt_words = len("earlier question earlier answer hello big world [chunks=4] be brief".split())
    assert usage["promptTokenCount"] == prompt_words
    assert usage["candidatesTokenCount"] == len(expected.split())
    assert usage["totalTokenCount"] == prompt_words + len(expected.split())
    assert "thoughtsTokenCount" not in usage

    events = sse_events(caller.stream(request))
    assert len(events) == 4
    assert "".join(parts_of(e)[0]["text"] for e in events) == expected
    assert len({e["traceId"] for e in events}) == 1
    for event in events[:-1]:
        assert "finishReason" not in event["response"]["candidates"][0]
        assert "usageMetadata" not in event["response"]
    assert events[-1]["response"]["candidates"][0]["finishReason"] == "STOP"
    assert events[-1]["response"]["usageMetadata"] == usage

    # Without alt=sse the stream endpoint answers one JSON array.
    arr = caller.post("/v1internal:streamGenerateContent", caller.envelope(request))
    assert [parts_of(e) for e in arr.json()] == [parts_of(e) for e in events]


def test_thoughts_first_and_split_in_two_when_streaming(sim: SimControl, http: httpx.Client) -> None:
    caller = Caller(http)
    request = ask("why is the sky blue", generationConfig={"thinkingConfig": {"includeThoughts": True,
                                                                              "thinkingBudget": 1024}})
    parts = parts_of(caller.generate(request).json())
    assert parts[0] == {"text": "Thinking about: why is the sky blue", "thought": True}
    assert parts[1] == {"text": "echo: why is the sky blue"}
    events = sse_events(caller.stream(request))
    thoughts = [parts_of(e)[0] for e in events[:2]]
    assert all(p["thought"] for p in thoughts)
    assert "".join(p["text"] for p in thoughts) == parts[0]["text"]
    assert not any(p.get("thought") for e in events[2:] for p in parts_of(e))
    usage = events[-1]["response"]["usageMetadata"]
    assert usage["thoughtsTokenCount"] == 7
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["candidatesTokenCount"] + 7

    # Flash with thinking switched off gives no thoughts even when asked for.
    off = ask("x", generationConfig={"thinkingConfig": {"includeThoughts": True, "thinkingBudget": 0}})
    assert parts_of(caller.generate(off, model="gemini-2.5-flash").json()) == [{"text": "echo: x"}]


def test_function_calls_single_default_and_parallel(sim: SimControl, http: httpx.Client) -> None:
    caller = Caller(http)
    tools = [{"functionDeclarations": [WEATHER, TIME]}]
    single = parts_of(caller.generate(ask("use get_time please", tools=tools)).json())
    assert single == [{"functionCall": {"id": "call_1", "name": "get_time", "args": {"tz": "sim-tz"}},
                       "thoughtSignature": signature_for("get_time", {"tz": "sim-tz"})}]

    default = parts_of(caller.generate(ask("anything", tools=tools)).json())
    args = {"city": "sim-city", "unit": "celsius", "days": 1, "detailed": True}
    assert default[0]["functionCall"] == {"id": "call_1", "name": "get_weather", "args": args}

    request = ask("do both [parallel]", tools=tools)
    parallel = parts_of(caller.generate(request).json())
    assert [p["functionCall"]["name"] for p in parallel] == ["get_weather", "get_time"]
    assert [p["functionCall"]["id"] for p in parallel] == ["call_1", "call_2"]
    assert parallel[0]["thoughtSignature"] == signature_for("get_weather", args)
    assert "thoughtSignature" not in parallel[1]
    events = sse_events(caller.stream(request))
    assert [parts_of(e) for e in events] == [[p] for p in parallel]

    off = ask("use get_time", tools=tools, toolConfig={"functionCallingConfig": {"mode": "NONE"}})
    assert parts_of(caller.generate(off).json()) == [{"text": "echo: use get_time"}]


def test_function_response_round_and_gemini3_signatures(sim: SimControl, http: httpx.Client) -> None:
    caller = Caller(http)
    tools = [{"functionDeclarations": [TIME]}]
    call_part = parts_of(caller.generate(ask("get_time", tools=tools), model="gemini-3-pro-preview").json())[0]
    history = [user("get_time"), {"role": "model", "parts": [call_part]},
               {"role": "user", "parts": [{"functionResponse": {"id": "call_1", "name": "get_time",
                                                                "response": {"time": "12:00", "ok": True}}}]}]
    done = caller.generate({"contents": history, "tools": tools}, model="gemini-3-pro-preview")
    assert done.status_code == 200, done.text
    assert parts_of(done.json()) == [{"text": 'tool results: get_time={"time":"12:00","ok":true}'}]

    unsigned = dict(call_part)
    del unsigned["thoughtSignature"]
    history[1] = {"role": "model", "parts": [unsigned]}
    rejected = caller.generate({"contents": history, "tools": tools}, model="gemini-3-flash-preview")
    assert rejected.status_code == 400 and "thought_signature" in rejected.json()["error"]["message"]
    # Gemini 2.5 does not check signatures.
    assert caller.generate({"contents": history, "tools": tools}).status_code == 200
    history[1] = {"role": "model", "parts": [dict(unsigned, thoughtSignature=BYPASS_SIGNATURE)]}
    assert caller.generate({"contents": history, "tools": tools}, model="gemini-3.1-pro-preview").status_code == 200
    history[1] = {"role": "model", "parts": [dict(unsigned, thoughtSignature="sig-0000000000000000")]}
    assert caller.generate({"contents": history, "tools": tools}, model="gemini-3-pro-preview").status_code == 400
    # The next call's id continues the conversation's numbering.
    history.append(user("again get_time", role="user"))
    history[1] = {"role": "model", "parts": [call_part]}
    again = parts_of(caller.generate({"contents": history, "tools": tools}).json())
    assert again[0]["functionCall"]["id"] == "call_2"


def test_code_execution_parts(sim: SimControl, http: httpx.Client) -> None:
    caller = Caller(http)
    request = ask("compute three words", tools=[{"codeExecution": {}}])
    parts = parts_of(caller.generate(request).json())
    assert parts == [{"executableCode": {"language": "PYTHON", "code": "print(3 * 3)"}},
                     {"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": "9"}},
                     {"text": "The result is 9."}]
    assert [parts_of(e) for e in sse_events(caller.stream(request))] == [[p] for p in parts]


def test_inline_and_file_data(sim: SimControl, http: httpx.Client) -> None:
    caller = Caller(http)
    small = bytes(range(256)) * 3
    big = b"\x89PNG" + b"z" * (20 * 1024 * 1024)  # 20 MiB raw, ~28 MB of base64 on the wire
    turn = user("look", {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(small).decode()}},
                {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(big).decode()}},
                {"fileData": {"mimeType": "application/pdf", "fileUri": "gs://bucket/doc.pdf"}})
    reply = caller.generate({"contents": [turn]}).json()
    text = parts_of(reply)[0]["text"]
    assert text == (f"echo: look | inline: image/png {len(small)} bytes sha={hashlib.sha256(small).hexdigest()[:12]}"
                    f" | inline: image/png {len(big)} bytes sha={hashlib.sha256(big).hexdigest()[:12]}"
                    f" | file: application/pdf gs://bucket/doc.pdf")
    assert reply["response"]["usageMetadata"]["promptTokenCount"] == 1 + 2 * 258

    rec = sim.requests("generate")[-1]
    data = [p["inlineData"]["data"] for p in rec["body"]["request"]["contents"][0]["parts"] if "inlineData" in p]
    assert data == [f"<{len(small)} bytes>", f"<{len(big)} bytes>"]

    bad = caller.generate({"contents": [user("x", {"inlineData": {"mimeType": "image/png", "data": "!!!"}})]})
    assert bad.status_code == 400 and "Base64" in bad.json()["error"]["message"]


def test_json_mode_length_limits_and_stop(sim: SimControl, http: httpx.Client) -> None:
    caller = Caller(http)
    json_reply = caller.generate(ask("give json", generationConfig={"responseMimeType": "application/json"}))
    assert orjson.loads(parts_of(json_reply.json())[0]["text"]) == {"echo": "give json"}

    long = caller.generate(ask("[len=50]")).json()
    assert parts_of(long)[0]["text"] == " ".join(f"w{i}" for i in range(1, 51))

    capped = caller.generate(ask("[len=50]", generationConfig={"maxOutputTokens": 10})).json()["response"]
    assert capped["candidates"][0]["content"]["parts"][0]["text"] == " ".join(f"w{i}" for i in range(1, 11))
    assert capped["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert capped["usageMetadata"]["candidatesTokenCount"] == 10
    events = sse_events(caller.stream(ask("[len=50]", generationConfig={"maxOutputTokens": 10})))
    assert events[-1]["response"]["candidates"][0]["finishReason"] == "MAX_TOKENS"

    stopped = caller.generate(ask("[len=9]", generationConfig={"stopSequences": [" w5"]})).json()
    assert parts_of(stopped)[0]["text"] == "w1 w2 w3 w4"


def test_count_tokens(sim: SimControl, http: httpx.Client) -> None:
    caller = Caller(http)
    body = {"request": {"model": "models/gemini-2.5-flash",
                        "contents": [user("one two three", {"inlineData": {"mimeType": "image/png", "data": "AAAA"}}),
                                     user("four", role="model")]}}
    resp = caller.post("/v1internal:countTokens", body)
    assert resp.json() == {"totalTokens": 4 + 258}
    assert sim.requests("count")[-1]["model"] == "gemini-2.5-flash"
    body["request"]["model"] = "models/nope"
    assert caller.post("/v1internal:countTokens", body).status_code == 404


# --- faults ----------------------------------------------------------------------------------

def test_429_bodies_with_and_without_retry_info(sim: SimControl, http: httpx.Client) -> None:
    caller = Caller(http)
    sim.add_fault(account=caller.rt, op="generate", kind="429", retry_delay="2.5s")
    resp = caller.generate(ask("hi"))
    assert resp.status_code == 429
    err = resp.json()["error"]
    assert err["status"] == "RESOURCE_EXHAUSTED"
    info = next(d for d in err["details"] if d["@type"].endswith("ErrorInfo"))
    retry = next(d for d in err["details"] if d["@type"] == "type.googleapis.com/google.rpc.RetryInfo")
    assert info["reason"] == "RATE_LIMIT_EXCEEDED" and info["metadata"]["quotaResetDelay"] == "2.5s"
    assert info["metadata"]["model"] == "gemini-2.5-pro"
    assert retry["retryDelay"] == "2.5s"
    assert caller.generate(ask("hi")).status_code == 200  # times=1 used up

    sim.add_fault(op="stream", kind="429")
    generic = caller.stream(ask("hi"))
    assert generic.status_code == 429
    body = generic.json()
    assert isinstance(body, list) and body[0]["error"]["errors"][0]["reason"] == "rateLimitExceeded"
    assert "details" not in body[0]["error"]


def test_status_faults_match_account_op_model_and_count(sim: SimControl, http: httpx.Client) -> None:
    a, b = Caller(http), Caller(http)
    sim.add_fault(account=a.rt, op="generate", kind="503", model="gemini-2.5-flash", times=2)
    assert b.generate(ask("x"), model="gemini-2.5-flash").status_code == 200      # other account
    assert a.generate(ask("x")).status_code == 200                                 # other model
    assert a.stream(ask("x"), model="gemini-2.5-flash").status_code == 200         # other op
    assert [a.generate(ask("x"), model="gemini-2.5-flash").status_code for _ in range(3)] == [503, 503, 200]

    for kind, status in [("400", "INVALID_ARGUMENT"), ("401", "UNAUTHENTICATED"), ("403", "PERMISSION_DENIED"),
                         ("500", "INTERNAL")]:
        sim.add_fault(account=a.rt, kind=kind)
        resp = a.generate(ask("x"))
        assert resp.status_code == int(kind) and resp.json()["error"]["status"] == status
    assert [e["fault"] for e in sim.requests("generate", account=a.rt)[-4:]] == ["400", "401", "403", "500"]

    sim.add_fault(account=a.rt, kind="403", reason="SUBSCRIPTION_REQUIRED", message="no licence")
    err = a.generate(ask("x")).json()["error"]
    assert err["message"] == "no licence" and err["details"][0]["reason"] == "SUBSCRIPTION_REQUIRED"

    forever = sim.add_fault(account=b.rt, op="count", kind="500", times=-1)
    count = {"request": {"model": "models/gemini-2.5-pro", "contents": [user("x")]}}
    assert [b.post("/v1internal:countTokens", count).status_code for _ in range(3)] == [500] * 3
    sim.remove_fault(forever)
    assert b.post("/v1internal:countTokens", count).status_code == 200

    with pytest.raises(RuntimeError):
        sim.add_fault(kind="teapot")
    with pytest.raises(RuntimeError):
        sim.add_fault(kind="invalid_grant", op="generate")


def test_refresh_faults(sim: SimControl, http: httpx.Client) -> None:
    rt = new_token()
    sim.add_fault(account=rt, op="refresh", kind="invalid_grant")
    assert refresh(http, rt).json()["error"] == "invalid_grant"
    assert refresh(http, rt).status_code == 200
    sim.add_fault(account=rt, kind="503")  # op "*" also covers the token endpoint
    assert refresh(http, rt).status_code == 503
    sim.add_fault(account=rt, op="refresh", kind="slow", delay=0.2)
    assert refresh(http, rt).status_code == 200
    # The delay the simulator waited out, as it reports it (not the client's clock).
    rec = sim.requests("refresh")[-1]
    assert rec["fault"] == "slow" and rec["slept"] == pytest.approx(0.2), rec


def test_cut_stream_is_a_protocol_error_for_the_client(sim: SimControl, http: httpx.Client) -> None:
    caller = Caller(http)
    sim.add_fault(account=caller.rt, op="stream", kind="cut", after_chunks=2)
    received = []
    with pytest.raises(httpx.RemoteProtocolError):
        with http.stream("POST", "/v1internal:streamGenerateContent?alt=sse",
                         json=caller.envelope(ask("one two three four five [chunks=5]")),
                         headers=caller.headers) as resp:
            assert resp.status_code == 200
            for line in resp.iter_lines():
                if line.startswith("data: "):
                    received.append(orjson.loads(line[6:]))
    assert len(received) == 2
    rec = sim.requests("stream")[-1]
    assert rec["fault"] == "cut" and rec["status"] == 200

    sim.add_fault(account=caller.rt, op="generate", kind="cut")
    with pytest.raises(httpx.RemoteProtocolError):
        caller.generate(ask("x"))
    # The connection pool recovers: the next call is fine.
    assert caller.generate(ask("x")).status_code == 200


def test_slow_stream_and_client_cancellation_is_recorded(sim: SimControl, http: httpx.Client) -> None:
    caller = Caller(http)
    sim.add_fault(account=caller.rt, op="stream", kind="slow", delay=0.15)
    events = sse_events(caller.stream(ask("a b c")))
    assert len(events) == 3
    rec = sim.requests("stream")[-1]
    # 0.15 s before each of the three events, as the simulator reports what it waited out.
    assert rec["cancelled"] is False and rec["sent"] == 3 and rec["slept"] == pytest.approx(0.45), rec

    sim.add_fault(account=caller.rt, op="stream", kind="slow", delay=0.3)
    with http.stream("POST", "/v1internal:streamGenerateContent?alt=sse",
                     json=caller.envelope(ask("a b c d e f [chunks=6]")), headers=caller.headers) as resp:
        first = next(resp.iter_lines())
        assert first.startswith("data: ")
    # Leaving the block closed the connection mid-stream; the simulator must notice.
    rec = wait_record(sim, "stream", lambda e: e["account"] == caller.rt and e["finished"] and e["fault"] == "slow"
                      and e["seq"] > 0 and e["cancelled"])
    assert rec["sent"] < 6, rec  # noticed at once, not after all six chunks


def test_hold_stops_after_the_first_events_until_released(sim: SimControl, http: httpx.Client) -> None:
    caller = Caller(http)
    assert sim.release() == 0  # nothing held
    sim.add_fault(account=caller.rt, op="stream", kind="hold", after_chunks=1)
    events, released = [], None
    with http.stream("POST", "/v1internal:streamGenerateContent?alt=sse",
                     json=caller.envelope(ask("a b c d [chunks=3]")), headers=caller.headers) as resp:
        for line in resp.iter_lines():
            if line.startswith("data: "):
                events.append(orjson.loads(line[6:]))
                if released is None:
                    rec = sim.requests("stream")[-1]
                    assert rec["sent"] == 1 and rec["finished"] is None, rec  # the rest is held back
                    released = sim.release()
    assert released == 1 and len(events) == 3
    rec = sim.requests("stream")[-1]
    assert rec["fault"] == "hold" and rec["sent"] == 3 and rec["cancelled"] is False
    with pytest.raises(RuntimeError):
        sim.add_fault(kind="hold", after_chunks=-1)


def test_hang_until_the_client_gives_up(sim: SimControl, http: httpx.Client) -> None:
    caller = Caller(http)
    sim.add_fault(account=caller.rt, op="generate", kind="hang")
    with pytest.raises(httpx.ReadTimeout):
        http.post("/v1internal:generateContent", json=caller.envelope(ask("x")), headers=caller.headers,
                  timeout=0.3)
    rec = wait_record(sim, "generate", lambda e: e["account"] == caller.rt and e["fault"] == "hang"
                      and e["finished"])
    assert rec["cancelled"] is True and rec["status"] is None


def test_config_latency_and_chunk_delay(sim: SimControl, http: httpx.Client) -> None:
    caller = Caller(http)
    assert sim.config(latency=0.2, chunk_delay=0.1) == {"latency": 0.2, "chunk_delay": 0.1}
    # What the simulator reports it waited out: the latency, then the delay between chunks.
    assert caller.generate(ask("x")).status_code == 200
    assert sim.requests("generate")[-1]["slept"] == pytest.approx(0.2)
    assert len(sse_events(caller.stream(ask("a b c")))) == 3
    rec = sim.requests("stream")[-1]
    assert rec["sent"] == 3 and rec["slept"] == pytest.approx(0.2 + 2 * 0.1), rec
    sim.config(latency=0, chunk_delay=0)
    with pytest.raises(RuntimeError):
        sim.config(latency=-1)


def test_request_record(sim: SimControl, http: httpx.Client) -> None:
    caller = Caller(http)
    caller.http.post("/v1internal:generateContent", json=caller.envelope(ask("recorded")),
                     headers={**caller.headers, "user-agent": "GeminiCLI/0.1.0/gemini-2.5-pro (linux; x64; terminal)"})
    entries = sim.requests(account=caller.rt)
    assert [e["op"] for e in entries] == ["refresh", "load", "generate"]
    assert [e["seq"] for e in entries] == sorted(e["seq"] for e in entries)
    gen = entries[-1]
    assert gen["model"] == "gemini-2.5-pro" and gen["status"] == 200 and gen["cancelled"] is False
    assert gen["path"] == "/v1internal:generateContent"
    assert gen["body"]["request"]["contents"][0]["parts"][0]["text"] == "recorded"
    assert gen["headers"]["authorization"] == "..." + caller.token[-6:]
    assert gen["headers"]["user-agent"].startswith("GeminiCLI/")
    assert gen["started"] <= gen["finished"]
    sim.clear_requests()
    assert sim.requests() == []


async def test_in_process_app() -> None:
    from tests.simulator.app import create_app

    app = create_app(strict_accounts=True)
    app.state.sim.accounts.upsert({"refresh_token": "1//inproc"})

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
        assert (await client.post("/token", data={"grant_type": "refresh_token",
                                                  "refresh_token": "1//other"})).status_code == 400
        tok = (await client.post("/token", data={"grant_type": "refresh_token",
                                                 "refresh_token": "1//inproc"})).json()["access_token"]
        resp = await client.post("/v1internal:generateContent", headers={"authorization": f"Bearer {tok}"},
                                 json={"model": "gemini-2.5-flash", "project": "sim-project-" +
                                       hashlib.sha256(b"1//inproc").hexdigest()[:8], "request": ask("hey")})
        assert parts_of(resp.json()) == [{"text": "echo: hey"}]


def test_pure_helpers() -> None:
    from tests.simulator.record import base64_size, redact_body
    from tests.simulator.responder import split_words, truncate_words

    for n in range(0, 12):
        raw = bytes(range(n))
        assert base64_size(base64.b64encode(raw).decode()) == n
        assert base64_size(base64.b64encode(raw).decode().rstrip("=")) == n
    for text, k in [("a", 3), ("  lead and trail  ", 2), ("one two three four five", 3), ("", 2)]:
        pieces = split_words(text, k)
        assert "".join(pieces) == text and len(pieces) <= k and all(pieces) == bool(text)
    assert truncate_words("a b  c d", 2) == ("a b", True)
    assert truncate_words("a b", 2) == ("a b", False)

    body = {"request": {"contents": [{"parts": [{"text": "t"}, {"inlineData": {"mimeType": "x", "data": "AAAA"}}]}]}}
    redacted = redact_body(body)
    assert redacted["request"]["contents"][0]["parts"][1]["inlineData"]["data"] == "<3 bytes>"
    assert body["request"]["contents"][0]["parts"][1]["inlineData"]["data"] == "AAAA"  # original untouched


def test_a_service_account_with_a_ttl_that_is_no_number_is_refused(http: httpx.Client):
    # The control API answers bad input with a 400 saying why, as the backends it stands in for do.
    spec = {"client_email": "sa@p.iam.gserviceaccount.com", "public_key_pem": "pem"}
    for ttl in ("soon", None, True, [1]):
        r = http.post("/_sim/service_accounts", json={**spec, "token_ttl": ttl})
        assert r.status_code == 400 and "token_ttl" in r.text, (ttl, r.status_code, r.text)
    assert http.post("/_sim/service_accounts", json={**spec, "token_ttl": 60}).status_code == 200


CRASH_ROUTES = [
    # (path, the body of a 500 on it is a JSON array): Vertex wraps every streamed error in an
    # array, with or without alt=sse; AI Studio sends the object (backends.md §1.6, §2.5).
    ("/v1/publishers/google/models/gemini-2.5-flash:streamGenerateContent", True),
    ("/v1/publishers/google/models/gemini-2.5-flash:streamGenerateContent?alt=sse", True),
    ("/v1/projects/p/locations/global/publishers/google/models/gemini-2.5-flash:streamGenerateContent", True),
    ("/v1/publishers/google/models/gemini-2.5-flash:generateContent", False),
    ("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", False),
    ("/v1beta/models/gemini-2.5-flash:generateContent", False),
]


@pytest.mark.parametrize("where", ["answer", "request"])
@pytest.mark.parametrize("path,array", CRASH_ROUTES)
async def test_the_simulators_own_failure_has_the_backends_error_shape(monkeypatch, where: str, path: str,
                                                                       array: bool) -> None:
    # A bug in the simulator (made here by a part that raises) is still answered as the backend
    # would answer a 500 on that route, so a gateway test that meets one sees the real shape.
    from tests.simulator import google_api_handlers, responder
    from tests.simulator.app import create_app

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a simulator bug")

    if where == "answer":
        monkeypatch.setattr(responder, "answer", boom)
    else:  # before the handler has taken in the request (and which method it calls)
        monkeypatch.setattr(google_api_handlers, "_serve", boom)
    app = create_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim") as client:
        grant = await client.post("/token", data={"grant_type": "refresh_token", "refresh_token": new_token()})
        headers = {"x-goog-api-key": "AIza-sim", "authorization": f"Bearer {grant.json()['access_token']}"}
        resp = await client.post(path, headers=headers, json=ask("hey"))
    assert resp.status_code == 500, resp.text
    error = {"error": {"code": 500, "message": "Internal error encountered.", "status": "INTERNAL"}}
    assert resp.json() == ([error] if array else error)
    entry = app.state.sim.log.entries()[-1]
    assert (entry["op"], entry["status"]) == ("stream" if "stream" in path else "generate", 500), entry
