"""Concurrent token refreshes never leave a credential file torn, unreadable or world-readable.

1. In process, the upstream's own `OAuthCredential` against the simulator's token endpoint:
   200 refreshes at once across 5 files, 40 credential objects per file (as 40 replicas sharing
   one file would), while a reader thread keeps parsing every file and checking its mode.
2. End to end: 200 concurrent Generate calls through a real upstream whose 4 credentials hold
   tokens that always need refreshing.
Afterwards every file is valid JSON, mode 0600, with its refresh token, a fresh access token, the
fields the gateway does not manage, and no temp file left behind.
"""
from __future__ import annotations

import asyncio
import stat
import threading
import time
from pathlib import Path

import grpc
import httpx
import orjson
import pytest
from google.api import httpbody_pb2

from gemini_cli.upstream.v1 import upstream_pb2
from services.upstream.oauth_credential import OAuthCredential
from tests import harness
from tests.faults.rig import MODEL, Rig, gemini_body, new_token

pytestmark = pytest.mark.timeout(90)

EXTRA = {"custom_note": "kept by the gateway", "project_hint": {"nested": [1, 2, 3]}}


def write_files(directory: Path, sim, n: int, label: str) -> dict[Path, str]:
    files = {}
    for i in range(n):
        token = new_token(f"{label}{i}")
        # Tokens live 60 s: always inside the 5-minute eager-refresh window, so every call refreshes.
        sim.add_account(token, token_ttl=60)
        path = harness.write_credential(directory / f"cred{i}.json", token)
        path.write_bytes(orjson.dumps({**orjson.loads(path.read_bytes()), **EXTRA}, option=orjson.OPT_INDENT_2))
        path.chmod(0o600)
        files[path] = token
    return files


class Watcher(threading.Thread):
    """Parses every file continuously; records anything but a complete 0600 JSON document."""

    def __init__(self, files: list[Path]) -> None:
        super().__init__(daemon=True)
        self.files = files
        self.stop = threading.Event()
        self.reads = 0
        self.problems: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            for path in self.files:
                try:
                    data = orjson.loads(path.read_bytes())
                    mode = stat.S_IMODE(path.stat().st_mode)
                except FileNotFoundError:
                    self.problems.append(f"{path.name}: missing for a moment")
                    continue
                except orjson.JSONDecodeError as exc:
                    self.problems.append(f"{path.name}: torn read: {exc}")
                    continue
                self.reads += 1
                if mode != 0o600:
                    self.problems.append(f"{path.name}: mode {mode:o}")
                if not isinstance(data, dict) or not data.get("refresh_token"):
                    self.problems.append(f"{path.name}: no refresh_token in {data!r:.200}")


def assert_files_sound(files: dict[Path, str], started_ms: int) -> None:
    for path, token in files.items():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        data = orjson.loads(path.read_bytes())
        assert data["refresh_token"] == token
        assert data["access_token"].startswith("ya29.sim-"), data["access_token"]
        assert data["expiry_date"] > started_ms
        assert {k: data.get(k) for k in EXTRA} == EXTRA
    leftovers = [p.name for p in next(iter(files)).parent.iterdir() if p not in files]
    assert not leftovers, f"temp files left behind: {leftovers}"


async def test_200_concurrent_refreshes_in_process(tmp_path: Path, sim, simulator: harness.Proc):
    files = write_files(tmp_path, sim, 5, "cf")
    watcher = Watcher(list(files))
    started_ms = int(time.time() * 1000)
    async with httpx.AsyncClient(trust_env=False, limits=httpx.Limits(max_connections=200)) as http:
        creds = [OAuthCredential(path, orjson.loads(path.read_bytes()), http=http,
                                 token_url=f"{simulator.url}/token", client_id="cid", client_secret="secret")
                 for path in files for _ in range(40)]
        watcher.start()
        try:
            await asyncio.gather(*(c.refresh() for c in creds))
        finally:
            watcher.stop.set()
            watcher.join(5)
    assert sum(c.refreshes for c in creds) == 200, "each object refreshed once from the endpoint"
    assert len(sim.requests(op="refresh")) == 200
    assert watcher.reads > 0 and not watcher.problems, watcher.problems[:5]
    assert_files_sound(files, started_ms)


def test_200_concurrent_calls_through_the_upstream(rigs, sim):
    tokens = [new_token(f"ce{i}") for i in range(4)]
    for token in tokens:
        sim.add_account(token, token_ttl=60)  # every call needs a refresh (single flight per credential)
    started_ms = int(time.time() * 1000)
    rig: Rig = rigs(label="credfiles", edge=False, tokens=tokens, creds_extra=EXTRA)
    assert rig.upstream is not None
    files = {rig.creds / f"cred{i}.json": token for i, token in enumerate(tokens)}
    watcher = Watcher(list(files))
    watcher.start()

    async def burst() -> list[grpc.StatusCode]:
        async with grpc.aio.insecure_channel(rig.upstream.addr) as ch:
            stub = harness.AuthedStub(ch)

            async def one(i: int) -> grpc.StatusCode:
                req = upstream_pb2.GenerateRequest(
                    model=MODEL, stream=i % 2 == 0,
                    body=httpbody_pb2.HttpBody(content_type="application/json",
                                               data=orjson.dumps(gemini_body(f"call {i}"))))
                try:
                    async for _ in stub.Generate(req, timeout=60):
                        pass
                except grpc.aio.AioRpcError as exc:
                    return exc.code()
                return grpc.StatusCode.OK

            return await asyncio.gather(*(one(i) for i in range(200)))

    try:
        codes = asyncio.run(burst())
    finally:
        watcher.stop.set()
        watcher.join(5)
    assert codes == [grpc.StatusCode.OK] * 200
    refreshes = [q for q in sim.requests(op="refresh") if q["account"] in tokens]
    assert len(refreshes) > len(tokens), "the tokens were refreshed during the burst, not only at start"
    assert watcher.reads > 0 and not watcher.problems, watcher.problems[:5]
    assert_files_sound(files, started_ms)
