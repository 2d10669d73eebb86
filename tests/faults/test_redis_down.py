"""An edge whose Redis (REDIS_URL) cannot be reached: requests of keys with limits fail closed
with a clear 503 + Retry-After in each API's own error format (never a 500, never a hang; no
address in the message), keys without limits are served, and a revoke still reaches the edge
through the store's revision poll."""
from __future__ import annotations

import httpx
import pytest

from tests.faults.rig import MODEL, Rig, client, gemini_body, wait_for
from tests.harness import LOOPBACK, free_port

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def rig(rigs) -> Rig:
    # A port nothing listens on: every Redis call is refused at once.
    return rigs(label="redisdown", edge_env={"REDIS_URL": f"redis://{LOOPBACK}:{free_port()}/0",
                                            "REDIS_TIMEOUT": "0.3"})


def _calls(rig: Rig, key: str) -> dict[str, tuple[str, dict, dict]]:
    return {
        "openai": (f"{rig.api}/v1/chat/completions", {"Authorization": f"Bearer {key}"},
                   {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}),
        "google": (f"{rig.api}/v1beta/models/{MODEL}:generateContent", {"x-goog-api-key": key}, gemini_body("hi")),
        "anthropic": (f"{rig.api}/v1/messages", {"x-api-key": key},
                      {"model": MODEL, "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}),
    }


def test_limited_key_gets_503_in_each_api_format(rig: Rig):
    key = rig.key("--rpm", "100", "--quota", "100000")
    with client(timeout=30) as c:
        for style, (url, headers, body) in _calls(rig, key).items():
            r = c.post(url, headers=headers, json=body)
            assert r.status_code == (529 if style == "anthropic" else 503), (style, r.status_code, r.text)
            assert int(r.headers["retry-after"]) >= 1
            err = r.json()
            if style == "openai":
                assert err["error"]["code"] == "limits_unavailable"
            elif style == "google":
                assert err["error"]["status"] == "UNAVAILABLE" and err["error"]["code"] == 503
            else:
                assert err["type"] == "error" and err["error"]["type"] == "overloaded_error"
            assert LOOPBACK not in r.text and "redis" not in r.text.lower()
    rows = rig.usage_rows(rig.key_id(key), expect=3)
    assert [row["status"] for row in rows] == [503, 503, 503]


def test_unlimited_key_is_served(rig: Rig):
    key = rig.key()
    with client(timeout=30) as c:
        for style, (url, headers, body) in _calls(rig, key).items():
            r = c.post(url, headers=headers, json=body)
            assert r.status_code == 200, (style, r.text)


def test_revoke_still_reaches_the_edge_by_polling(rig: Rig):
    key = rig.key()
    url, headers, body = _calls(rig, key)["google"]
    with client(timeout=30) as c:
        assert c.post(url, headers=headers, json=body).status_code == 200
        out = rig.cli("revoke", key)
        assert out.returncode == 0 and "Redis could not be told" in out.stderr
        wait_for(lambda: c.post(url, headers=headers, json=body).status_code == 401, 15, "the revoke to be seen")
