"""The edge's per-request log line (LOG_FORMAT=json and text) over the real stack, and the
upstream honouring LOG_FORMAT too. No key ever appears in a log."""
from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import orjson
import pytest

from tests import harness

MODEL = "gemini-2.5-flash"
HELLO = {"contents": [{"role": "user", "parts": [{"text": "log me"}]}]}


def request_lines(proc: harness.Proc, expect: int, parse) -> list:
    deadline = time.monotonic() + harness.SETTLE_TIMEOUT
    while True:
        lines = [parse(line) for line in proc.log().splitlines() if "edge.request" in line]
        if len(lines) >= expect or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_one_line_per_request(simulator: harness.Proc, tmp_path: Path, fmt: str):
    token = f"rt-log-{uuid.uuid4().hex[:8]}"
    creds = tmp_path / "creds"
    harness.write_credential(creds / "a.json", token)
    logs = tmp_path / "logs"
    up = harness.start_upstream(logs, simulator.url, creds, {"LOG_FORMAT": fmt})
    try:
        edge = harness.start_edge(logs, up.addr, tmp_path / "data", {"LOG_FORMAT": fmt, "LEDGER_FLUSH_SECONDS": "0.05"})
        try:
            key = harness.create_key(edge, "--name", "logger")
            base = f"{edge.url}/gemini_cli"
            with httpx.Client(timeout=60, trust_env=False) as http:
                r = http.post(f"{base}/v1beta/models/{MODEL}:generateContent", headers={"x-goog-api-key": key},
                              json=HELLO)
                assert r.status_code == 200
                usage = r.json()["usageMetadata"]
                r = http.post(f"{base}/v1beta/models/{MODEL}:streamGenerateContent?alt=sse",
                              params={"key": key}, json=HELLO)
                assert r.status_code == 200
                r = http.post(f"{base}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                              json={"model": "no-such-model-xyz", "messages": [{"role": "user", "content": "x"}]})
                assert r.status_code == 404
            if fmt == "json":
                lines = request_lines(edge, 3, orjson.loads)
            else:
                lines = request_lines(edge, 3, parse_text)
            assert len(lines) == 3, edge.log()[-3000:]
            unary, stream, missing = lines
            for line in lines:
                assert line["key"] == "logger" and line["request_id"]
            assert unary["api"] == "gemini" and int(unary["status"]) == 200 and unary["model"] == MODEL
            assert int(unary["total_tokens"]) == usage["totalTokenCount"]
            assert int(unary["prompt_tokens"]) == usage["promptTokenCount"]
            assert unary["credential"].startswith("gemini-cli-oauth/")
            assert "ttfb_ms" not in unary and float(unary["ms"]) >= 0
            # the gateway's own share of the time, and Google's trace id
            assert 0 < float(unary["overhead_ms"]) <= float(unary["ms"])
            assert 0 < float(stream["overhead_ms"]) <= float(stream["ms"])
            assert unary["trace_id"] and stream["trace_id"]
            assert int(stream["status"]) == 200 and 0 <= float(stream["ttfb_ms"]) <= float(stream["ms"])
            assert missing["api"] == "openai" and int(missing["status"]) == 404
            # no secret of any kind in either service's log
            for proc in (edge, up):
                text = proc.log()
                assert key not in text and token not in text
            if fmt == "json":
                # every line of both services is JSON
                for proc in (edge, up):
                    for line in proc.log().splitlines():
                        if line.strip():
                            orjson.loads(line)
        finally:
            edge.stop()
    finally:
        up.stop()


def parse_text(line: str) -> dict:
    """key=value pairs of a text line (values JSON-quoted when they hold spaces)."""
    import shlex

    fields = {}
    for part in shlex.split(line.split(": ", 1)[1]):
        k, sep, v = part.partition("=")
        if sep:
            fields[k] = v
    return fields
