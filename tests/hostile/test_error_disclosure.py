"""What errors reveal (issue #10, item 8): a client learns no internal path, address or
credential name from an error; it gets a clear, generic message and the request id, and the
details go to the edge's log under that id.

Probed through Envoy, the way a key holder would: a backend 5xx whose message names internal
paths, a pool whose only credential (a file named after an e-mail address) is dead, and a media
URL whose host name resolves to an internal address.
"""
from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from tests import harness
from tests.faults.rig import MODEL, gemini_body, new_token
from tests.simulator.control import SimControl

pytestmark = pytest.mark.timeout(120)

SECRET_PATH = "/var/lib/gemini-gateway/creds/ops-team"
CRED_NAME = "alice.admin@example.com"


class Stack:
    def __init__(self, base: Path, simulator: harness.Proc, token: str) -> None:
        self.token = token
        self.sim = SimControl(simulator.url)
        harness.write_credential(base / "creds" / f"{CRED_NAME}.json", token)
        logs = base / "logs"
        self.upstream = harness.start_upstream(logs, simulator.url, base / "creds")
        self.edge = self.envoy = None
        try:
            self.edge = harness.start_edge(logs, self.upstream.addr, base / "data",
                                           {"AUTH_REFRESH_SECONDS": "0.1", "LEDGER_FLUSH_SECONDS": "0.05"})
            self.envoy = harness.start_envoy(logs, self.edge.port, self.upstream.port)
        except BaseException:
            self.close()
            raise
        self.key = harness.create_key(self.edge, "--name", f"k-{uuid.uuid4().hex[:8]}")

    @property
    def public(self) -> str:
        return f"{self.envoy.url}/gemini_cli"

    def close(self) -> None:
        for proc in (self.envoy, self.edge, self.upstream):
            if proc is not None:
                proc.stop(timeout=10)
        self.sim.close()


@pytest.fixture(scope="module")
def stack(simulator: harness.Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("disclosure"), simulator, new_token("disclosure"))
    try:
        yield s
    finally:
        s.close()


def assert_reveals_nothing(text: str) -> None:
    for secret in (SECRET_PATH, "/var/lib", CRED_NAME, "example.com", "127.0.0.1", "::1", ".json"):
        assert secret not in text, f"{secret!r} reached the client: {text[:400]}"


def request_id_in(message: str) -> str:
    m = re.search(r"request id ([0-9A-Za-z_-]+)", message)
    assert m, f"no request id in {message!r}"
    return m.group(1)


def assert_logged(stack: Stack, rid: str, what: str) -> None:
    lines = [line for line in stack.edge.log().splitlines() if rid in line]
    assert any(what in line for line in lines), f"detail of request {rid} not in the edge log: {lines}"


@pytest.mark.parametrize("api", ["openai", "gemini", "gemini-stream"])
def test_backend_5xx_message_is_not_passed_on(stack: Stack, api: str):
    op = "stream" if api == "gemini-stream" else "generate"
    fid = stack.sim.add_fault(account=stack.token, op=op, kind="500", times=-1,
                              message=f"backend crashed reading {SECRET_PATH}/{CRED_NAME}.json")
    try:
        with httpx.Client(timeout=60, trust_env=False) as c:
            if api == "openai":
                r = c.post(f"{stack.public}/v1/chat/completions", headers={"Authorization": f"Bearer {stack.key}"},
                           json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
            else:
                method = "streamGenerateContent?alt=sse" if op == "stream" else "generateContent"
                r = c.post(f"{stack.public}/v1beta/models/{MODEL}:{method}", headers={"x-goog-api-key": stack.key},
                           json=gemini_body("hi"))
    finally:
        stack.sim.remove_fault(fid)
    assert r.status_code >= 500, (r.status_code, r.text[:300])
    assert_reveals_nothing(r.text)
    message = r.json()["error"]["message"]
    assert "backend" in message
    assert_logged(stack, request_id_in(message), SECRET_PATH)


def test_dead_credential_is_not_named(stack: Stack):
    fid = stack.sim.add_fault(account=stack.token, op="generate", kind="403", reason="SUBSCRIPTION_REQUIRED",
                              times=-1, message=f"account {CRED_NAME} has no subscription")
    try:
        with httpx.Client(timeout=60, trust_env=False) as c:
            answers = [c.post(f"{stack.public}/v1/chat/completions", headers={"Authorization": f"Bearer {stack.key}"},
                              json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
                       for _ in range(2)]  # the second meets a pool that has set the credential aside
    finally:
        stack.sim.remove_fault(fid)
    for r in answers:
        assert r.status_code >= 400, r.text
        assert_reveals_nothing(r.text)
        request_id_in(r.json()["error"]["message"])
    assert_logged(stack, request_id_in(answers[-1].json()["error"]["message"]), CRED_NAME)


def test_ssrf_refusal_does_not_name_the_address(stack: Stack):
    part = {"type": "image_url", "image_url": {"url": "http://localhost:9/internal.png"}}
    with httpx.Client(timeout=30, trust_env=False) as c:
        r = c.post(f"{stack.public}/v1/chat/completions", headers={"Authorization": f"Bearer {stack.key}"},
                   json={"model": MODEL, "messages": [{"role": "user", "content": [part]}]})
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert "localhost" in message and "non-public" in message
    assert_reveals_nothing(message)
    assert "127.0.0.1" in stack.edge.log() or "::1" in stack.edge.log()


VERTEX_PROJECT = "proj-internal-billing-7"


@pytest.fixture(scope="module")
def vertex_stack(simulator: harness.Proc, tmp_path_factory: pytest.TempPathFactory):
    """A pool of one Vertex service account, so its 404 is the answer the client gets."""
    from tests.cloud_keys import write_service_account
    from tests.stack_fixtures import EDGE_ENV, Stack as FullStack

    base = tmp_path_factory.mktemp("disclosure-vertex")
    email = f"sa-{uuid.uuid4().hex[:8]}@{VERTEX_PROJECT}.iam.gserviceaccount.com"
    public = write_service_account(base / "vertex" / "sa.json", email, VERTEX_PROJECT, f"{simulator.url}/token")
    with SimControl(simulator.url) as ctl:
        ctl.add_service_account(email, public, project=VERTEX_PROJECT)
    logs = base / "logs"
    procs = [harness.start_upstream(logs, simulator.url, None,
                                    {"VERTEX_CREDENTIALS": str(base / "vertex"), "VERTEX_LOCATION": "us-central1"})]
    try:
        procs.append(harness.start_edge(logs, procs[0].addr, base / "data", EDGE_ENV))
        procs.append(harness.start_envoy(logs, procs[1].port, procs[0].port))
        yield FullStack(simulator, procs[0], procs[1], procs[2], "", "vertex")
    finally:
        for proc in reversed(procs):
            proc.stop(timeout=10)


@pytest.mark.parametrize("api", ["openai", "gemini"])
def test_vertex_not_found_does_not_name_the_project(vertex_stack, api: str):
    """Vertex's 404 names the member's project and location in the model's resource path; the
    client learns the model was not found, not which Google project serves the gateway."""
    key = vertex_stack.key()
    # A model per API: once a member has answered 404 for a model, the pool stops asking it.
    model = {"openai": "gemini-9.8-nonexistent", "gemini": "gemini-9.9-nonexistent"}[api]
    base = vertex_stack.public_base
    with httpx.Client(timeout=60) as client:
        if api == "openai":
            r = client.post(f"{base}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                            json={"model": model, "messages": [{"role": "user", "content": "hi"}]})
        else:
            r = client.post(f"{base}/v1beta/models/{model}:generateContent", headers={"x-goog-api-key": key},
                            json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
    assert r.status_code == 404, r.text
    sent = [e["path"] for e in SimControl(vertex_stack.simulator.url).requests() if model in e.get("path", "")]
    assert sent and f"/projects/{VERTEX_PROJECT}/" in sent[-1], sent  # the backend did name it
    assert VERTEX_PROJECT not in r.text, r.text
    assert "locations/" not in r.text, r.text
    assert model in r.text  # still says what was not found
    rid = request_id_in(r.text)
    assert any(rid in line and VERTEX_PROJECT in line for line in vertex_stack.edge.log().splitlines())
