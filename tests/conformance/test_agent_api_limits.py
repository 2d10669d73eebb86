"""The Responses and Anthropic routes run under the same license limits and ledger as the others.

Each case attacks the real stack through Envoy with a restricted key and checks the refusal in
the API's own error shape, then that every call (refused ones included) left its ledger row.
"""
from __future__ import annotations

import anthropic
import httpx
import openai
import pytest

from tests.stack_fixtures import Stack


def test_model_allow_list_applies_to_the_mapped_model(agent_stack: Stack):
    key = agent_stack.key("--models", "gemini-2.5-flash*")
    client = anthropic.Anthropic(base_url=agent_stack.public_base, api_key=key, max_retries=0, timeout=30)
    # haiku maps to gemini-2.5-flash (allowed); sonnet to gemini-2.5-pro (not allowed).
    ok = client.messages.create(model="claude-haiku-4-5", max_tokens=20, messages=[{"role": "user", "content": "hi"}])
    assert ok.content[0].text == "echo: hi"
    with pytest.raises(anthropic.PermissionDeniedError) as exc:
        client.messages.create(model="claude-sonnet-4-6", max_tokens=20, messages=[{"role": "user", "content": "hi"}])
    assert exc.value.body["error"]["type"] == "permission_error"
    with pytest.raises(anthropic.PermissionDeniedError):
        client.messages.count_tokens(model="claude-opus-4-7", messages=[{"role": "user", "content": "hi"}])

    oai = openai.OpenAI(base_url=f"{agent_stack.public_base}/v1", api_key=key, max_retries=0, timeout=30)
    assert oai.responses.create(model="gemini-2.5-flash", input="hi").output_text == "echo: hi"
    with pytest.raises(openai.PermissionDeniedError):
        oai.responses.create(model="gemini-2.5-pro", input="hi")

    rows = agent_stack.ledger(agent_stack.key_id(key), expect=5)
    seen = [(r["api"], r["model"], r["status"]) for r in rows]
    assert seen == [("anthropic", "gemini-2.5-flash", 200), ("anthropic", "gemini-2.5-pro", 403),
                    ("anthropic", "gemini-2.5-pro", 403), ("responses", "gemini-2.5-flash", 200),
                    ("responses", "gemini-2.5-pro", 403)]
    assert rows[0]["total_tokens"] > 0 and rows[3]["total_tokens"] > 0


@pytest.mark.parametrize("path, body", [
    ("/v1/messages", {"model": "claude-haiku-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}),
    ("/v1/responses", {"model": "gemini-2.5-flash", "input": "x"}),
])
def test_rpm_is_429_with_retry_after(agent_stack: Stack, path: str, body: dict):
    key = agent_stack.key("--rpm", "1")
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    first = httpx.post(agent_stack.public_base + path, headers=headers, json=body, timeout=30)
    assert first.status_code == 200, first.text
    second = httpx.post(agent_stack.public_base + path, headers=headers, json=body, timeout=30)
    assert second.status_code == 429 and int(second.headers["retry-after"]) >= 1
    err = second.json()
    if path == "/v1/messages":
        assert err["type"] == "error" and err["error"]["type"] == "rate_limit_error"
    else:
        assert err["error"]["type"] == "rate_limit_error"


def test_quota_spent_refuses_both_apis(agent_stack: Stack):
    key = agent_stack.key("--quota", "5")
    client = anthropic.Anthropic(base_url=agent_stack.public_base, api_key=key, max_retries=0, timeout=30)
    client.messages.create(model="claude-haiku-4-5", max_tokens=50, messages=[{"role": "user", "content": "[len=20]"}])
    agent_stack.ledger(agent_stack.key_id(key), expect=1)
    with pytest.raises(anthropic.PermissionDeniedError):
        client.messages.create(model="claude-haiku-4-5", max_tokens=50, messages=[{"role": "user", "content": "again"}])
    oai = openai.OpenAI(base_url=f"{agent_stack.public_base}/v1", api_key=key, max_retries=0, timeout=30)
    with pytest.raises(openai.PermissionDeniedError):
        oai.responses.create(model="gemini-2.5-flash", input="again")
