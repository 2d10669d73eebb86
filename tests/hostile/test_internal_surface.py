"""The internal surface is closed (issue #10, item 3).

Envoy's internal listener binds its own address (loopback unless asked, whatever the public
listener does); every internal call, through Envoy or straight to the upstream, needs an internal
caller's credentials, and the caller's identity comes from them, not from the message; a client
cannot choose the request id the edge records.
"""
from __future__ import annotations

import base64
import socket
import subprocess
import time
import uuid

import grpc
import httpx
import orjson
import pytest
from google.api import httpbody_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deploy.envoy_config import values_from_env
from gemini_cli.upstream.v1 import upstream_pb2, upstream_pb2_grpc
from services.upstream.internal_auth import basic_credentials
from tests import harness
from tests.faults.rig import MODEL, Rig, chat_body, gemini_body, wait_for
from tests.hostile.test_envoy_buffering import DECLARED, slow_keyless_post

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def rig(rigs) -> Rig:
    return rigs(label="internal", envoy=True)


def internal_url(rig: Rig) -> str:
    assert rig.envoy is not None
    return f"http://{harness.LOOPBACK}:{rig.envoy.extra['internal_port']}"


def generate_request(text: str, caller: str = "", rid: str = "") -> upstream_pb2.GenerateRequest:
    return upstream_pb2.GenerateRequest(
        model=MODEL, stream=False, caller=caller, request_id=rid,
        body=httpbody_pb2.HttpBody(content_type="application/json", data=orjson.dumps(gemini_body(text))))


def connects(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def listener_addresses(admin_port: int) -> dict[str, str]:
    listeners = httpx.get(f"http://{harness.LOOPBACK}:{admin_port}/listeners?format=json", timeout=5).json()
    return {lst["name"]: lst["local_address"]["socket_address"]["address"] for lst in listeners["listener_statuses"]}


WRONG = {
    "none": None,
    "bearer": "Bearer whatever",
    "unknown-caller": basic_credentials("mallory", "x" * 43),
    "wrong-token": basic_credentials("edge", "x" * 43),
    "no-colon": "Basic " + base64.b64encode(b"edge").decode(),
    "not-base64": "Basic !!!",
}


# --- where the internal listener listens --------------------------------------------------------

def test_internal_listener_stays_on_loopback_when_the_public_one_serves_other_hosts(rig: Rig):
    """ENVOY_LISTEN_ADDRESS=0.0.0.0 (the README's way to serve other hosts) opens the public
    listener only; the internal one moves only with ENVOY_INTERNAL_LISTEN_ADDRESS. Checked on
    other loopback addresses (127.0.0.2), which a 0.0.0.0 listener also answers."""
    assert rig.edge is not None and rig.upstream is not None
    config = values_from_env({"ENVOY_LISTEN_ADDRESS": "0.0.0.0"})
    proxy = harness.start_envoy(rig.logs, rig.edge.port, rig.upstream.port, name="envoy-public-any",
                                listen_address=config["listen_address"],
                                internal_listen_address=config["internal_listen_address"])
    try:
        internal, public = proxy.extra["internal_port"], proxy.port
        assert listener_addresses(proxy.extra["admin_port"]) == {"public": "0.0.0.0", "internal": "127.0.0.1"}
        assert connects("127.0.0.2", public)
        assert not connects("127.0.0.2", internal)
        assert connects(harness.LOOPBACK, internal)
    finally:
        proxy.stop()

    asked = values_from_env({"ENVOY_INTERNAL_LISTEN_ADDRESS": "127.0.0.2"})
    proxy = harness.start_envoy(rig.logs, rig.edge.port, rig.upstream.port, name="envoy-internal-asked",
                                listen_address=asked["listen_address"],
                                internal_listen_address=asked["internal_listen_address"])
    try:
        assert listener_addresses(proxy.extra["admin_port"]) == {"public": "127.0.0.1", "internal": "127.0.0.2"}
        assert connects("127.0.0.2", proxy.extra["internal_port"])
        assert not connects(harness.LOOPBACK, proxy.extra["internal_port"])
    finally:
        proxy.stop()


# --- internal callers authenticate ---------------------------------------------------------------

@pytest.mark.parametrize("auth", list(WRONG), ids=list(WRONG))
def test_internal_rest_call_without_valid_credentials_is_refused_by_envoy(rig: Rig, auth: str):
    before = len(rig.sim.requests(account=rig.tokens[0]))
    headers = {"content-type": "application/json"}
    if WRONG[auth] is not None:
        headers["authorization"] = WRONG[auth]
    with httpx.Client(timeout=30, trust_env=False) as client:
        r = client.post(f"{internal_url(rig)}/v1/models/{MODEL}:generate",
                        content=orjson.dumps(gemini_body("no credentials")), headers=headers)
        assert r.status_code == 401, r.text[:300]
        assert client.get(f"{internal_url(rig)}/v1/models", headers=headers).status_code == 401
    assert len(rig.sim.requests(account=rig.tokens[0])) == before


def test_internal_rest_call_with_credentials_is_served(rig: Rig):
    with httpx.Client(timeout=30, trust_env=False, auth=("ops", harness.internal_auth().tokens["ops"])) as client:
        r = client.post(f"{internal_url(rig)}/v1/models/{MODEL}:generate",
                        content=orjson.dumps(gemini_body("ops asks")), headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text[:300]


def test_internal_listener_refuses_an_unauthenticated_body_on_its_headers(rig: Rig):
    """Nothing reaches the transcoder (which would buffer a REST body) without credentials."""
    assert rig.envoy is not None
    got, sent = slow_keyless_post(rig.envoy.extra["internal_port"], f"/v1/models/{MODEL}:generate")
    assert got.startswith(b"HTTP/1.1 401"), (got[:200], sent)
    assert sent < DECLARED


@pytest.mark.parametrize("auth", list(WRONG), ids=list(WRONG))
def test_direct_upstream_call_without_valid_credentials_is_refused(rig: Rig, auth: str):
    assert rig.upstream is not None
    metadata = () if WRONG[auth] is None else (("authorization", WRONG[auth]),)
    with grpc.insecure_channel(rig.upstream.addr) as ch:
        stub = upstream_pb2_grpc.UpstreamStub(ch)
        for call in (lambda: list(stub.Generate(generate_request("direct"), timeout=10, metadata=metadata)),
                     lambda: stub.GenerateUnary(generate_request("direct"), timeout=10, metadata=metadata),
                     lambda: stub.ListModels(upstream_pb2.ListModelsRequest(), timeout=10, metadata=metadata),
                     lambda: stub.CountTokens(upstream_pb2.CountTokensRequest(
                         model=MODEL, body=httpbody_pb2.HttpBody(data=orjson.dumps(gemini_body("x")))),
                         timeout=10, metadata=metadata)):
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
        # Health stays open: probes carry no credentials.
        health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("auth", ["none", "wrong-token"])
def test_every_upstream_method_refuses_without_valid_credentials(rig: Rig, auth: str):
    """Each method checks credentials itself (internal_auth.guarded, no interceptor): every
    method the service declares, streaming ones and the credential admin included, refuses."""
    assert rig.upstream is not None
    metadata = () if WRONG[auth] is None else (("authorization", WRONG[auth]),)
    service = upstream_pb2.DESCRIPTOR.services_by_name["Upstream"]
    before = len(rig.sim.requests(account=rig.tokens[0]))
    with grpc.insecure_channel(rig.upstream.addr) as ch:
        for method in service.methods:
            path = f"/{service.full_name}/{method.name}"
            request = generate_request("direct").SerializeToString() if method.name.startswith("Generate") else b""
            if method.client_streaming:
                call = ch.stream_stream(path) if method.server_streaming else ch.stream_unary(path)
                sent = iter([request])
            else:
                call = ch.unary_stream(path) if method.server_streaming else ch.unary_unary(path)
                sent = request
            with pytest.raises(grpc.RpcError) as err:
                answer = call(sent, timeout=10, metadata=metadata)
                if method.server_streaming:
                    list(answer)
            assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED, (method.name, err.value.details())
    assert len(rig.sim.requests(account=rig.tokens[0])) == before


def upstream_log_line(rig: Rig, rid: str) -> str:
    assert rig.upstream is not None

    def line() -> str | None:
        return next((ln for ln in rig.upstream.log().splitlines() if f"id={rid} " in ln and "caller=" in ln), None)
    return wait_for(line, 10, f"the upstream's log line of {rid}")


def test_caller_is_the_authenticated_identity_not_the_message(rig: Rig):
    """An internal caller cannot pass itself off as the edge (or anyone) through the message's
    `caller`: the upstream logs the authenticated name, the message's label only under it."""
    assert rig.upstream is not None
    rid = f"spoof-{uuid.uuid4().hex[:8]}"
    with grpc.insecure_channel(rig.upstream.addr) as ch:
        list(harness.AuthedStub(ch, "ops").Generate(generate_request("who am i", caller="edge", rid=rid), timeout=30))
    assert "caller=ops/edge " in upstream_log_line(rig, rid)

    # Through Envoy's internal listener (REST: caller from the query string) the same holds.
    rid = f"spoof-{uuid.uuid4().hex[:8]}"
    with httpx.Client(timeout=30, trust_env=False, auth=("ops", harness.internal_auth().tokens["ops"])) as client:
        r = client.post(f"{internal_url(rig)}/v1/models/{MODEL}:generate", params={"caller": "edge", "requestId": rid},
                        content=orjson.dumps(gemini_body("who am i")), headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text[:300]
    assert "caller=ops/edge " in upstream_log_line(rig, rid)


def test_edge_calls_carry_the_edges_identity(rig: Rig):
    """The public path: the edge authenticates as `edge` and labels the call with the key."""
    key = rig.key()  # named k-<hex> by the rig
    with httpx.Client(timeout=30, trust_env=False) as client:
        r = client.post(f"{rig.public}/v1/chat/completions", json=chat_body("hi"),
                        headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text[:300]
    line = upstream_log_line(rig, r.headers["x-request-id"])
    assert " caller=edge/k-" in line, line


def test_upstream_will_not_listen_beyond_loopback_without_internal_tokens(rig: Rig):
    """Without INTERNAL_TOKENS_FILE the upstream serves loopback only (a developer's own run);
    asked to listen on every interface it refuses to start."""
    port = harness.free_port()
    proc = harness.spawn("upstream-open", [harness.PY, "-m", "services.upstream"], port, rig.logs,
                         {"UPSTREAM_LISTEN": f"0.0.0.0:{port}", "INTERNAL_TOKENS_FILE": "",
                          "GEMINI_CREDENTIALS": str(rig.creds), "CODE_ASSIST_ENDPOINT": rig.simulator.url,
                          "OAUTH_TOKEN_URL": f"{rig.simulator.url}/token", "STARTUP_WARMUP": "false"})
    try:
        code = proc.popen.wait(30)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        proc.kill()
    assert code == 2, proc.log()[-2000:]
    assert "INTERNAL_TOKENS_FILE" in proc.log()


# --- request ids ---------------------------------------------------------------------------------

def test_a_forged_request_id_is_not_taken(rig: Rig):
    """Straight to the edge (as a pod could before the NetworkPolicies) or through Envoy, a
    client's x-request-id never becomes the id of its ledger row; a guessed proxy token does not
    help."""
    assert rig.edge is not None
    key = rig.key()
    kid = rig.key_id(key)
    forged = [f"forged-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    attempts = [(rig.api, {"x-request-id": forged[0]}),
                (rig.api, {"x-request-id": forged[1], "x-gateway-proxy-token": "guess"}),
                (rig.public, {"x-request-id": forged[2], "x-gateway-proxy-token": "guess"})]
    with httpx.Client(timeout=30, trust_env=False) as client:
        for base, extra in attempts:
            r = client.post(f"{base}/v1/chat/completions", json=chat_body("which id"),
                            headers={"Authorization": f"Bearer {key}", **extra})
            assert r.status_code == 200, r.text[:300]
            assert r.headers["x-request-id"] != extra["x-request-id"]
    rows = rig.usage_rows(kid, expect=len(attempts))
    assert len(rows) == len(attempts)
    assert not {row["request_id"] for row in rows} & set(forged)
    # The upstream logs each call's id when the call ends, which may be after the ledger row:
    # once the log names every row's own id, the lines a forged id could have reached are there.
    ids = {row["request_id"] for row in rows}
    deadline = time.monotonic() + 60
    while missing := {i for i in ids if f"id={i}" not in (log := rig.upstream.log())}:
        assert time.monotonic() < deadline, f"hung: the upstream never logged the calls {sorted(missing)}"
        time.sleep(0.05)
    assert not any(f in log for f in forged)
