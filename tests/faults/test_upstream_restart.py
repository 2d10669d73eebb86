"""The upstream service restarts under a running edge: 503s in the window, then service again,
without touching the edge (its one gRPC channel reconnects by itself)."""
from __future__ import annotations

import pytest

from tests.faults.rig import MODEL, Rig, chat_body, client, gemini_body, start_upstream_on, wait_for

pytestmark = pytest.mark.timeout(60)


def assert_503_google(r) -> None:
    assert r.status_code == 503, r.text
    err = r.json()["error"]
    assert err["code"] == 503 and err["status"] == "UNAVAILABLE" and err["message"]


def assert_503_openai(r) -> None:
    assert r.status_code == 503, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert err["type"] != "invalid_request_error"


def test_edge_rides_out_an_upstream_restart(rigs, sim):
    rig: Rig = rigs(label="restart")
    key = rig.key()
    assert rig.upstream is not None and rig.edge is not None
    edge_pid = rig.edge.popen.pid
    port = rig.upstream.port
    native = f"{rig.api}/v1beta/models/{MODEL}:generateContent"
    stream = f"{rig.api}/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
    chat = f"{rig.api}/v1/chat/completions"
    g = {"x-goog-api-key": key}
    o = {"Authorization": f"Bearer {key}"}

    # The client's timeout is a hang guard. A call that waited for the upstream to come back would
    # end at its deadline (UPSTREAM_TIMEOUT, 600 s; 30 s for countTokens) as a 504
    # DEADLINE_EXCEEDED, so a 503 UNAVAILABLE is the proof that it failed at once.
    with client(timeout=20) as c:
        assert c.post(native, headers=g, json=gemini_body("before")).status_code == 200

        assert rig.upstream.stop() == 0
        # The window: every kind of call is a 503 in its own API's format.
        assert_503_google(c.post(native, headers=g, json=gemini_body("during")))
        assert_503_google(c.post(stream, headers=g, json=gemini_body("during")))
        assert_503_google(c.post(f"{rig.api}/v1beta/models/{MODEL}:countTokens", headers=g,
                                 json=gemini_body("during")))
        assert_503_openai(c.post(chat, headers=o, json=chat_body("during")))
        assert_503_openai(c.post(chat, headers=o, json=chat_body("during", stream=True)))
        assert c.get(f"{rig.edge.url}/readyz").status_code == 503

        # A new upstream process on the same address; the edge process is the same one.
        rig.upstream = start_upstream_on(rig.logs, rig.simulator.url, rig.creds, port, name="upstream-2")

        def served():
            r = c.post(native, headers=g, json=gemini_body("after"))
            return r if r.status_code == 200 else None

        r = wait_for(served, 10, "the edge to reach the restarted upstream", interval=0.2)
        assert b"echo: after" in r.content
        r = c.post(chat, headers=o, json=chat_body("after", stream=True))
        assert r.status_code == 200 and r.content.rstrip().endswith(b"data: [DONE]")
        assert c.get(f"{rig.edge.url}/readyz").status_code == 200
    assert rig.edge.alive() and rig.edge.popen.pid == edge_pid


def test_readiness_follows_the_upstream_even_with_a_cached_model_list(rigs, sim):
    """/readyz is what a load balancer or Kubernetes uses to stop sending traffic here: with
    the upstream gone it must say so, even though the model list is still cached."""
    rig: Rig = rigs(label="ready")
    key = rig.key()
    assert rig.upstream is not None and rig.edge is not None
    with client(timeout=10) as c:
        assert c.get(f"{rig.api}/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        assert c.get(f"{rig.edge.url}/readyz").status_code == 200
        assert rig.upstream.stop() == 0
        r = c.get(f"{rig.edge.url}/readyz")
        assert r.status_code == 503, f"ready while the upstream is down: {r.text}"
