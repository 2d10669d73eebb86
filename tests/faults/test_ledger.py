"""500 concurrent requests: exactly 500 usage rows, and their tokens are what the clients saw.

The requests mix every metered kind of call (Gemini unary, Gemini JSON-array and SSE streams,
OpenAI unary and streamed with include_usage), each with a prompt of a different length. The
usage each client received is summed on the client side and must equal the ledger: per row
count, per token column, in the key's running total, and in the admin CLI's report; with the
ledger on SQLite and on PostgreSQL.
"""
from __future__ import annotations

import asyncio

import httpx
import orjson
import pytest

from tests.faults.rig import MODEL, Rig, sse_data
from tests.support.stores import ENGINES, fetch_sync

pytestmark = pytest.mark.timeout(120)

N = 500


@pytest.fixture(scope="module", params=ENGINES)
def rig(rigs, request: pytest.FixtureRequest) -> Rig:
    """The stack with its ledger on SQLite, then on PostgreSQL."""
    env = {}
    if request.param == "postgres":
        env["LICENSE_DB"] = request.getfixturevalue("postgres_server").create_database()
    return rigs(credentials=2, label=f"ledger-{request.param}", edge_env=env)


def prompt(i: int) -> str:
    return " ".join(f"w{i}x{j}" for j in range(1 + i % 7))


def gemini_usage(u: dict) -> tuple[int, int, int, int]:
    return (u.get("promptTokenCount", 0), u.get("candidatesTokenCount", 0), u.get("thoughtsTokenCount", 0),
            u.get("totalTokenCount", 0))


def openai_usage(u: dict) -> tuple[int, int, int, int]:
    thoughts = (u.get("completion_tokens_details") or {}).get("reasoning_tokens", 0) or 0
    # OpenAI's completion_tokens include reasoning; the ledger keeps them apart, as Gemini does.
    return u["prompt_tokens"], u["completion_tokens"] - thoughts, thoughts, u["total_tokens"]


async def one(c: httpx.AsyncClient, rig: Rig, key: str, i: int) -> tuple[int, tuple[int, int, int, int]]:
    text = prompt(i)
    kind = i % 5
    g = {"x-goog-api-key": key}
    native = f"{rig.api}/v1beta/models/{MODEL}"
    body = {"contents": [{"role": "user", "parts": [{"text": text}]}]}
    if kind == 0:
        r = await c.post(f"{native}:generateContent", headers=g, json=body)
        return r.status_code, gemini_usage(r.json()["usageMetadata"])
    if kind == 1:
        r = await c.post(f"{native}:streamGenerateContent", headers=g, json=body)
        return r.status_code, gemini_usage(orjson.loads(r.content)[-1]["usageMetadata"])
    if kind == 2:
        r = await c.post(f"{native}:streamGenerateContent?alt=sse", headers=g, json=body)
        return r.status_code, gemini_usage(orjson.loads(sse_data(r.content)[-1])["usageMetadata"])
    # OpenAI; every other one asks for thoughts (thought tokens are metered too).
    chat = {"model": f"{MODEL}-thinking" if i % 2 else MODEL, "messages": [{"role": "user", "content": text}]}
    o = {"Authorization": f"Bearer {key}"}
    if kind == 3:
        r = await c.post(f"{rig.api}/v1/chat/completions", headers=o, json=chat)
        return r.status_code, openai_usage(r.json()["usage"])
    r = await c.post(f"{rig.api}/v1/chat/completions", headers=o,
                     json={**chat, "stream": True, "stream_options": {"include_usage": True}})
    events = sse_data(r.content)
    assert events[-1] == b"[DONE]"
    return r.status_code, openai_usage(orjson.loads(events[-2])["usage"])


def test_500_concurrent_requests_500_rows(rig: Rig, sim):
    key = rig.key()
    kid = rig.key_id(key)

    async def burst():
        limits = httpx.Limits(max_connections=N, max_keepalive_connections=N)
        async with httpx.AsyncClient(timeout=120, trust_env=False, limits=limits) as c:
            return await asyncio.gather(*(one(c, rig, key, i) for i in range(N)))

    results = asyncio.run(burst())
    assert [s for s, _ in results] == [200] * N
    seen = [u for _, u in results]
    assert all(u[0] > 0 and u[1] > 0 for u in seen)

    rows = rig.usage_rows(kid, expect=N, timeout=15)
    assert len(rows) == N
    # Nothing more arrives later (no duplicate rows from a retried flush).
    assert len(rig.usage_rows(kid)) == N
    assert all(r["status"] == 200 for r in rows)
    assert len({r["request_id"] for r in rows}) == N
    by_kind = {(api, op): sum(1 for r in rows if (r["api"], r["op"]) == (api, op))
               for api, op in {(r["api"], r["op"]) for r in rows}}
    assert by_kind == {("gemini", "generate"): 100, ("gemini", "stream"): 200,
                       ("openai", "generate"): 100, ("openai", "stream"): 100}

    # Token sums: the ledger holds what the clients were told, column by column.
    client_sums = [sum(u[k] for u in seen) for k in range(4)]
    ledger_sums = [sum(r[col] for r in rows) for col in ("prompt_tokens", "completion_tokens", "thought_tokens",
                                                        "total_tokens")]
    assert ledger_sums == client_sums
    assert client_sums[2] > 0  # thought tokens were part of the mix
    # ... and row by row: the multiset of per-request usages is the same.
    assert sorted(seen) == sorted((r["prompt_tokens"], r["completion_tokens"], r["thought_tokens"],
                                   r["total_tokens"]) for r in rows)

    ((used,),) = fetch_sync(rig.db_path, "SELECT tokens_used FROM keys WHERE id = ?", kid)
    assert used == client_sums[3]

    # The admin CLI reports the same totals.
    out = rig.cli("usage", str(kid))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    header = lines[0].split()
    (line,) = [ln for ln in lines[2:] if MODEL in ln.split()]
    cells = dict(zip(header, line.split()))
    assert int(cells["REQUESTS"]) == N and int(cells["ERRORS"]) == 0
    assert [int(cells[c]) for c in ("PROMPT", "COMPLETION", "THOUGHTS", "TOTAL")] == client_sums
