"""Prometheus /metrics of the edge and the upstream after a mixed workload through the real
stack (Envoy → edge → upstream → simulator): the counters equal what the clients saw and what
the ledger holds."""
from __future__ import annotations

import collections
from pathlib import Path
from typing import Iterator

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import harness
from tests.stack_fixtures import Stack, start_stack

MODEL = "gemini-2.5-flash"
HELLO = {"contents": [{"role": "user", "parts": [{"text": "hello metrics"}]}]}


@pytest.fixture(scope="module")
def own_stack(simulator: harness.Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # A stack of its own: the session stack's counters include every other test's traffic.
    s = start_stack(simulator, tmp_path_factory.mktemp("metrics-stack"))
    try:
        yield s
    finally:
        s.stop()


def scrape(port: int) -> dict[str, list]:
    """{sample name: [(labels, value), ...]} from a /metrics page."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10, trust_env=False).text
    out: dict[str, list] = collections.defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name].append((sample.labels, sample.value))
    return out


def total(samples: dict[str, list], name: str, **match: str) -> float:
    return sum(v for labels, v in samples.get(name, []) if all(labels.get(k) == x for k, x in match.items()))


def last_usage_sse(text: str) -> dict:
    events = [orjson.loads(line[5:]) for line in text.splitlines() if line.startswith("data:")]
    return [e["usageMetadata"] for e in events if "usageMetadata" in e][-1]


def test_metrics_match_clients_and_ledger(own_stack: Stack, sim):
    s = own_stack
    quota = 1_000_000
    key_a, key_b = s.key("--quota", str(quota), name="alice"), s.key(name="bob")
    base = s.public_base
    seen: dict[str, collections.Counter] = {"alice": collections.Counter(), "bob": collections.Counter()}
    client_total = collections.Counter()
    with httpx.Client(timeout=60, trust_env=False) as http:
        for _ in range(2):  # alice: two non-streamed Gemini calls
            r = http.post(f"{base}/v1beta/models/{MODEL}:generateContent", headers={"x-goog-api-key": key_a},
                          json=HELLO)
            seen["alice"][r.status_code] += 1
            client_total["alice"] += r.json()["usageMetadata"]["totalTokenCount"]
        # alice: one streamed OpenAI chat, usage requested
        r = http.post(f"{base}/v1/chat/completions", headers={"Authorization": f"Bearer {key_a}"},
                      json={"model": MODEL, "stream": True, "stream_options": {"include_usage": True},
                            "messages": [{"role": "user", "content": "stream please"}]})
        seen["alice"][r.status_code] += 1
        chunks = [orjson.loads(line[5:]) for line in r.text.splitlines()
                  if line.startswith("data:") and line[5:].strip() != "[DONE]"]
        client_total["alice"] += [c["usage"] for c in chunks if c.get("usage")][-1]["total_tokens"]
        # alice: a model nobody serves: one label value ("other"), not one per name
        r = http.post(f"{base}/v1beta/models/no-such-model-xyz:generateContent", headers={"x-goog-api-key": key_a},
                      json=HELLO)
        seen["alice"][r.status_code] += 1
        # bob: a streamed Gemini call (SSE)
        r = http.post(f"{base}/v1beta/models/{MODEL}:streamGenerateContent?alt=sse",
                      headers={"x-goog-api-key": key_b}, json=HELLO)
        seen["bob"][r.status_code] += 1
        client_total["bob"] += last_usage_sse(r.text)["totalTokenCount"]
        # bob: a stream the backend cuts after its first chunk: the client sees the error event's code
        sim.add_fault(account=s.refresh_token, op="stream", kind="cut", model=MODEL, after_chunks=1, times=1)
        r = http.post(f"{base}/v1beta/models/{MODEL}:streamGenerateContent?alt=sse",
                      headers={"x-goog-api-key": key_b}, json={"contents": [{"role": "user", "parts": [
                          {"text": "[chunks=4] a b c d e f g h"}]}]})
        assert r.status_code == 200
        events = [orjson.loads(line[5:]) for line in r.text.splitlines() if line.startswith("data:")]
        assert "candidates" in events[0]
        seen["bob"][events[-1]["error"]["code"]] += 1
        # bob: a 429 from the backend
        sim.add_fault(account=s.refresh_token, op="generate", kind="429", model="gemini-2.5-flash-lite",
                      retry_delay="120s", times=1)  # long enough to be seen by the scrape on a loaded machine
        r = http.post(f"{base}/v1beta/models/gemini-2.5-flash-lite:generateContent",
                      headers={"x-goog-api-key": key_b}, json=HELLO)
        seen["bob"][r.status_code] += 1
    assert seen["alice"][200] == 3 and seen["bob"][200] == 1 and seen["bob"][429] == 1, seen
    assert sum(seen["bob"].values()) == 3
    assert sum(seen["alice"].values()) == 4

    ledger = {"alice": s.ledger(s.key_id(key_a), expect=4), "bob": s.ledger(s.key_id(key_b), expect=3)}
    edge = scrape(s.edge.extra["metrics_port"])
    for name, rows in ledger.items():
        assert len(rows) == sum(seen[name].values())
        # requests, by the status each client saw
        for status, n in seen[name].items():
            assert total(edge, "gateway_requests_total", key=name, outcome=str(status)) == n, (name, status)
            assert total(edge, "gen_ai_client_operation_duration_seconds_count", key=name,
                         outcome=str(status)) == n
        assert total(edge, "gateway_requests_total", key=name) == len(rows)
        # tokens, by type, equal the ledger's; the ledger's totals equal what the clients saw
        for token_type, column in (("input", "prompt_tokens"), ("output", "completion_tokens"),
                                   ("reasoning", "thought_tokens")):
            assert total(edge, "gen_ai_client_token_usage_sum", key=name, gen_ai_token_type=token_type) == \
                sum(r[column] for r in rows), (name, token_type)
        # (a cut stream is billed an estimate the client never saw: only answered calls compare)
        assert sum(r["total_tokens"] for r in rows if r["status"] == 200) == client_total[name] > 0
    # models: known ones by name, the unknown one collapsed
    assert total(edge, "gateway_requests_total", key="alice", gen_ai_request_model="other") == 1
    assert total(edge, "gateway_requests_total", key="alice", gen_ai_request_model=MODEL) == 3
    assert not any("no-such-model" in str(labels) for series in edge.values() for labels, _ in series)
    # the credential kind that served each call, as the ledger has it
    kinds = collections.Counter(r["credential_kind"] or "none" for rows in ledger.values() for r in rows)
    for kind, n in kinds.items():
        assert total(edge, "gateway_requests_total", credential_kind=kind) == n, kind
    assert total(edge, "gateway_requests_total", outcome="200", credential_kind="none") == 0
    # streams (the cut one too): one time to first token each, none open any more
    assert total(edge, "gen_ai_server_time_to_first_token_seconds_count") == 3
    assert total(edge, "gateway_open_streams") == 0
    # the gateway's own time: one observation per generation that reached the upstream (all
    # seven), by API and stream or not
    assert total(edge, "gateway_overhead_seconds_count") == 7
    assert total(edge, "gateway_overhead_seconds_count", api="gemini", stream="true") == 2
    assert total(edge, "gateway_overhead_seconds_count", api="openai", stream="true") == 1
    assert 0 < total(edge, "gateway_overhead_seconds_sum") < total(edge, "gen_ai_client_operation_duration_seconds_sum")
    # quota left per key: alice's quota less what the ledger billed her; bob has none
    assert total(edge, "gateway_key_quota_tokens", key="alice") == quota
    assert total(edge, "gateway_key_quota_remaining_tokens", key="alice") == \
        quota - sum(r["total_tokens"] for r in ledger["alice"])
    assert not [labels for labels, _ in edge.get("gateway_key_quota_remaining_tokens", []) if labels["key"] == "bob"]

    upstream = scrape(s.upstream.extra["metrics_port"])
    ok = total(upstream, "gateway_upstream_requests_total", gen_ai_operation_name="generate", outcome="ok")
    assert ok == 4
    assert total(upstream, "gateway_upstream_requests_total", gen_ai_operation_name="generate") == 7  # the unknown model reaches it too
    rate_limited = [labels for labels, v in upstream["gateway_upstream_requests_total"]
                    if labels["outcome"].startswith("RESOURCE_EXHAUSTED") and v]
    assert len(rate_limited) == 1, upstream["gateway_upstream_requests_total"]
    # one state per credential, and the cool-down the 429 started
    states = [(labels["credential_id"], labels["state"]) for labels, v in upstream["gateway_credential_state"] if v]
    assert len(states) == len({cid for cid, _ in states}) >= 1
    assert total(upstream, "gateway_credential_cooldown_seconds") > 0
    # the upstream's own time, per answered call (the cut stream had answered a chunk)
    assert total(upstream, "gateway_upstream_overhead_seconds_count") == 5
    assert 0 < total(upstream, "gateway_upstream_overhead_seconds_sum") < \
        total(upstream, "gen_ai_server_request_duration_seconds_sum")


def test_metrics_port_is_not_public(own_stack: Stack):
    """/metrics is on its own loopback port: neither Envoy nor the edge's API port serves it."""
    with httpx.Client(timeout=10, trust_env=False) as http:
        assert http.get(f"{own_stack.public_base}/metrics").status_code == 404
        assert http.get(f"{own_stack.edge.url}/metrics").status_code == 404
