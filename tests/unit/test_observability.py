"""Log formatters (LOG_FORMAT) and metric label rules, without processes."""
from __future__ import annotations

import logging
import time

import orjson
import pytest
from prometheus_client import generate_latest

from services.edge.metrics import EdgeMetrics
from services.logging_setup import JsonFormatter, TextFormatter
from services.upstream.metrics import UpstreamMetrics
from services.upstream.pool_entry import CredentialReport


def _record(fields=None) -> logging.LogRecord:
    rec = logging.LogRecord("edge.request", logging.INFO, __file__, 1, "%s done", ("rid1",), None)
    if fields is not None:
        rec.fields = fields
    return rec


@pytest.mark.parametrize("fields,expected", [
    (None, {"message": "rid1 done"}),
    ({"key": "alice", "status": 200, "ttfb_ms": None}, {"message": "rid1 done", "key": "alice", "status": 200}),
])
def test_json_lines(fields, expected):
    obj = orjson.loads(JsonFormatter().format(_record(fields)))
    assert {k: obj[k] for k in expected} == expected
    assert obj["level"] == "INFO" and obj["logger"] == "edge.request" and "ttfb_ms" not in obj


def test_text_line_quotes_values_with_spaces():
    line = TextFormatter().format(_record({"key": "team a", "status": 429, "skip": None}))
    assert line.endswith('rid1 done key="team a" status=429')


def test_edge_metrics_collapse_unknown_models_and_name_keys():
    m = EdgeMetrics(known_model=lambda model: model == "gemini-2.5-flash", key_name={7: "alice"}.get)
    start = time.perf_counter()
    for model in ("gemini-2.5-flash", "made-up-1", "made-up-2"):
        m.observe(key_id=7, api="openai", op="generate", model=model, credential_kind="ai-studio-key", status=200,
                  started=start, first_at=None, prompt=3, completion=5, thoughts=0)
    text = generate_latest(m.registry).decode()
    assert "made-up" not in text
    assert 'gateway_requests_total{api="openai",credential_kind="ai-studio-key",gen_ai_operation_name="generate",' \
           'gen_ai_request_model="other",key="alice",outcome="200"} 2.0' in text
    assert "_created" not in text


def test_upstream_pool_gauges():
    now = time.time()
    reports = [CredentialReport("a", "ai-studio-key", "COOLING", "", "", {"gemini-2.5-pro": now + 30}, 1, 1,
                                quota={"gemini-2.5-pro": (0.25, "")}),
               CredentialReport("b", "vertex-ai", "READY", "", "", {}, 0, 0)]
    m = UpstreamMetrics(lambda: reports, lambda model: False)
    m.observe("generate", "x-unknown", "a", "ai-studio-key", "RESOURCE_EXHAUSTED/RATE_LIMITED", 0.1)
    text = generate_latest(m.registry).decode()
    assert 'gateway_credential_state{credential_id="a",credential_kind="ai-studio-key",state="COOLING"} 1.0' in text
    assert 'gateway_credential_state{credential_id="b",credential_kind="vertex-ai",state="COOLING"} 0.0' in text
    assert 'gateway_credential_quota_remaining_ratio{credential_id="a",credential_kind="ai-studio-key",' \
           'model="gemini-2.5-pro"} 0.25' in text
    cooldown = [line for line in text.splitlines()
                if line.startswith('gateway_credential_cooldown_seconds{credential_id="a"')]
    assert 20 < float(cooldown[0].split()[-1]) <= 30
    assert 'gen_ai_request_model="other"' in text and "x-unknown" not in text
