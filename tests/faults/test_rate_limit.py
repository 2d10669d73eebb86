"""Every credential answers 429: the client gets a 429 with Retry-After, in its API's format.

The stack has three credentials; the simulator rate-limits all three for one model. The pool
must try each once, cool them down for the backend's retryDelay, and from then on answer from
its own bookkeeping without calling the backend again until the cool-down ends.
"""
from __future__ import annotations

import math
import time

import pytest

from tests.faults.rig import Rig, chat_body, client, gemini_body

pytestmark = pytest.mark.timeout(60)

RETRY_S = 2


@pytest.fixture(scope="module")
def rig(rigs) -> Rig:
    return rigs(credentials=3, label="rl")


@pytest.fixture(scope="module")
def key(rig: Rig) -> str:
    return rig.key()


def limit_every_credential(rig: Rig, op: str, model: str) -> None:
    for token in rig.tokens:
        rig.sim.add_fault(account=token, op=op, kind="429", model=model, retry_delay=f"{RETRY_S}s", times=-1,
                          reason="RATE_LIMIT_EXCEEDED")


def backend_calls(rig: Rig, op: str, model: str) -> dict[str, int]:
    seen = {t: 0 for t in rig.tokens}
    for q in rig.sim.requests(op=op):
        if q["account"] in seen and q["model"] == model:
            seen[q["account"]] += 1
    return seen


def retry_after(headers) -> int:
    value = headers.get("retry-after")
    assert value is not None, "429 without Retry-After"
    assert value.isdigit(), f"Retry-After must be delay-seconds, got {value!r}"
    return int(value)


def assert_google_429(r) -> None:
    assert r.status_code == 429, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert err["code"] == 429 and err["status"] == "RESOURCE_EXHAUSTED" and err["message"]
    seconds = retry_after(r.headers)
    assert 1 <= seconds <= RETRY_S
    # google.rpc.RetryInfo, as Google's own 429s carry it, agreeing with the header.
    (info,) = [d for d in err.get("details", []) if d.get("@type", "").endswith("google.rpc.RetryInfo")]
    delay = float(info["retryDelay"].removesuffix("s"))
    assert 0 < delay <= RETRY_S and math.ceil(delay) == seconds


def assert_openai_429(r) -> None:
    assert r.status_code == 429, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "rate_limit_error" and err["message"]
    assert 1 <= retry_after(r.headers) <= RETRY_S


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_all_credentials_rate_limited(rig: Rig, key: str, sim, stream: bool):
    # One model per case: cool-downs are per (credential, model), so the cases stay independent.
    model = "gemini-2.5-flash-lite" if stream else "gemini-2.5-flash"
    op = "stream" if stream else "generate"
    limit_every_credential(rig, op, model)
    native = f"{rig.api}/v1beta/models/{model}:" + ("streamGenerateContent?alt=sse" if stream else "generateContent")
    with client() as c:
        # Gemini format first: this call meets the backend's 429 on each credential in turn.
        assert_google_429(c.post(native, headers={"x-goog-api-key": key}, json=gemini_body("limited")))
        assert backend_calls(rig, op, model) == {t: 1 for t in rig.tokens}, "each credential tried exactly once"

        # OpenAI format: every credential is cooling now, so the pool answers without a backend call.
        r = c.post(f"{rig.api}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                   json=chat_body("limited", stream=stream, model=model))
        assert_openai_429(r)
        assert backend_calls(rig, op, model) == {t: 1 for t in rig.tokens}, "a cooling credential was called"

        # After Retry-After the backend is asked again, and serves once it has recovered.
        wait = retry_after(r.headers)
        sim.clear_faults()
        time.sleep(wait + 0.1)
        r = c.post(native, headers={"x-goog-api-key": key}, json=gemini_body("recovered"))
        assert r.status_code == 200, r.text
        assert b"recovered" in r.content and b"finishReason" in r.content
