"""The curl commands of the API document our users start from, run verbatim against the stack.

tests/fixtures/seed_curls.txt is a copy of the eight curl blocks of ../shared/seed/api-doc.txt
(checked against the original, which the suite needs beside the repository, as CI has it); only
the placeholders are filled in.
"""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Iterator

import orjson
import pytest

from tests import fixtures, harness

CURLS = (Path(__file__).parents[1] / "fixtures" / "seed_curls.txt").read_text().split("\n\n#----\n\n")
SEED_DOC = harness.ROOT.parent / "shared" / "seed" / "api-doc.txt"

# What the user pastes where the document says "url或者base64", per example.
MEDIA_FOR = {1: fixtures.data_url("image/png", fixtures.png()), 2: fixtures.b64(fixtures.mp3()),
             3: fixtures.b64(fixtures.mp4())}


def test_copy_matches_the_seed_document():
    # Never a skip: without the original, a drifted copy would pass unnoticed.
    assert SEED_DOC.exists(), (f"{SEED_DOC} is missing: the test suite needs ../shared beside the "
                               "repository (as CI has it) to check the copy of the seed document's curls")
    doc = SEED_DOC.read_text()
    for curl in CURLS:
        assert curl.strip() in doc


@pytest.fixture(scope="module")
def seed_stack(simulator: harness.Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    base = tmp_path_factory.mktemp("seed")
    harness.write_credential(base / "creds" / "oauth_creds.json", "rt-seed")
    up = harness.start_upstream(base / "logs", simulator.url, base / "creds")
    edge = harness.start_edge(base / "logs", up.addr, base / "data")
    envoy = harness.start_envoy(base / "logs", edge.port, up.port)
    key = harness.create_key(edge, "--name", "seed")
    try:
        yield {"hostport": f"{harness.LOOPBACK}:{envoy.port}", "key": key}
    finally:
        for p in (envoy, edge, up):
            p.stop()


def _run(curl: str, stack: dict, media: str | None) -> str:
    cmd = curl.strip().replace("<你的IP>:<你的端口>", stack["hostport"]).replace("<你的许可证>", stack["key"])
    if media is not None:
        cmd = cmd.replace("url或者base64", media)
    out = subprocess.run(["bash", "-c", cmd + " --silent --show-error --fail-with-body --max-time 60"],
                         capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, f"{out.returncode}: {out.stdout[-2000:]} {out.stderr[-2000:]}"
    return out.stdout


def _sse_content(body: str) -> tuple[str, list[dict]]:
    events = [line[len("data: "):] for line in body.splitlines() if line.startswith("data: ")]
    assert events and events[-1] == "[DONE]", body[-500:]
    chunks = [json.loads(e) for e in events[:-1]]
    assert not any("error" in c for c in chunks), chunks
    content = "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c.get("choices"))
    return content, chunks


@pytest.mark.parametrize("n", range(6))
def test_chat_examples(seed_stack, n):
    content, chunks = _sse_content(_run(CURLS[n], seed_stack, MEDIA_FOR.get(n)))
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c.get("choices") and c["choices"][0].get("finish_reason")]
    if n == 0:
        assert content == "echo: 你是什么模型"
    elif n in MEDIA_FOR:
        mime = {1: "image/png", 2: "audio/mp3", 3: "video/mp4"}[n]
        assert re.search(rf"inline: {mime} \d+ bytes", content), content
    elif n == 4:
        calls = [t for c in chunks if c.get("choices") for t in c["choices"][0]["delta"].get("tool_calls") or []]
        assert calls[0]["function"]["name"] == "get_current_weather"
        assert json.loads(calls[0]["function"]["arguments"])["location"]
        assert finish[-1] == "tool_calls"
    elif n == 5:
        assert "```python" in content and "The result is" in content
    if n != 4:
        assert finish[-1] == "stop"


def test_native_generate_content(seed_stack):
    body = orjson.loads(_run(CURLS[6], seed_stack, None))
    assert body["candidates"][0]["content"]["parts"][0]["text"] == "echo: 你是什么模型?"
    assert body["usageMetadata"]["totalTokenCount"] > 0


def test_native_stream_is_a_json_array(seed_stack):
    chunks = orjson.loads(_run(CURLS[7], seed_stack, None))
    assert isinstance(chunks, list) and len(chunks) >= 2
    text = "".join(p.get("text", "") for c in chunks for p in c["candidates"][0]["content"]["parts"])
    assert text == "echo: 你是什么模型?"
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
