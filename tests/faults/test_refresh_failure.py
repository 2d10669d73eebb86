"""The token endpoint fails for one credential: it is set aside for a while, the others serve.

The refresh of credential 0 answers HTTP 500 from the very start (its warm-up refresh fails).
Requests must all be served by credential 1, credential 0's token endpoint must not be hammered
once per request, and the pool must report it COOLING. When every credential's refresh fails the
client gets a 503 with Retry-After; when the endpoint recovers, so does the credential.
"""
from __future__ import annotations

import time

import pytest

from tests.faults.rig import MODEL, Rig, chat_body, client, gemini_body, new_token, wait_for

pytestmark = pytest.mark.timeout(120)

# Long enough for the edge's start, a key and ten requests to fit in one set-aside window (two
# are allowed): with 3 s, a busy machine could let two windows lapse and see a third refresh.
SET_ASIDE_S = 10


def calls(rig: Rig, op: str, token: str) -> int:
    return len(rig.sim.requests(op=op, account=token))


def test_failing_refresh_sets_the_credential_aside(rigs, sim):
    tokens = [new_token("rf0"), new_token("rf1")]
    sim.add_fault(account=tokens[0], op="refresh", kind="500", times=-1)
    rig: Rig = rigs(tokens=tokens, label="refresh",
                    upstream_env={"TRANSIENT_COOLDOWN_SECONDS": str(SET_ASIDE_S)})
    key = rig.key()
    g = {"x-goog-api-key": key}
    native = f"{rig.api}/v1beta/models/{MODEL}:generateContent"
    # The warm-up already met the failing endpoint.
    wait_for(lambda: calls(rig, "refresh", tokens[0]) >= 1, 30, "the warm-up refresh of credential 0")

    with client() as c:
        for i in range(10):
            r = c.post(native, headers=g, json=gemini_body(f"served {i}"))
            assert r.status_code == 200, r.text
        assert calls(rig, "generate", tokens[0]) == 0
        assert calls(rig, "generate", tokens[1]) == 10
        # Set aside, not retried per request: the warm-up's refresh and at most one more.
        assert calls(rig, "refresh", tokens[0]) <= 2

        states = {c_["id"]: c_ for c_ in rig.upstream_models()["credentials"]}
        assert states["cred0"]["state"] == "COOLING"
        assert "token endpoint" in states["cred0"]["detail"] and "500" in states["cred0"]["detail"]
        assert states["cred1"]["state"] == "READY"

        # Now credential 1's refresh fails too (its access token is invalidated, so the backend
        # answers 401 and the pool must refresh): nothing can serve, for a while.
        sim.add_fault(account=tokens[1], op="refresh", kind="500", times=-1)
        sim.expire(tokens[1])
        r = c.post(native, headers=g, json=gemini_body("nobody"))
        assert r.status_code == 503, r.text
        assert r.json()["error"]["status"] == "UNAVAILABLE"
        assert 1 <= int(r.headers["retry-after"]) <= SET_ASIDE_S
        r = c.post(f"{rig.api}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                   json=chat_body("nobody"))
        assert r.status_code == 503 and r.json()["error"]["message"], r.text
        assert 1 <= int(r.headers["retry-after"]) <= SET_ASIDE_S

        # The endpoint recovers: after the set-aside time both credentials serve again.
        sim.clear_faults()
        time.sleep(int(r.headers["retry-after"]) + 0.2)
        before = {t: calls(rig, "generate", t) for t in tokens}

        def both_served():
            assert c.post(native, headers=g, json=gemini_body("back")).status_code == 200
            return all(calls(rig, "generate", t) > before[t] for t in tokens)

        wait_for(both_served, SET_ASIDE_S + 5, "both credentials to serve again", interval=0.1)


def test_hanging_token_endpoint_does_not_hold_calls(rigs, sim):
    """The token endpoint accepts credential 0's refresh and never answers. A call that picked
    credential 0 waits at most REFRESH_TIMEOUT, then is served by credential 1; the calls after
    it go to credential 1 straight away. Proved by the pool's counters, not by timing the calls:
    credential 0 is tried at most once (a call that tried it and every call after it were served
    by credential 1), and a call that waited past REFRESH_TIMEOUT would hang until the client's
    timeout instead of being served."""
    tokens = [new_token("rh0"), new_token("rh1")]
    sim.add_fault(account=tokens[0], op="refresh", kind="hang", times=-1)
    refresh_s = 3
    rig: Rig = rigs(tokens=tokens, label="refresh-hang",
                    upstream_env={"REFRESH_TIMEOUT": str(refresh_s), "TRANSIENT_COOLDOWN_SECONDS": "30"})
    key = rig.key()
    native = f"{rig.api}/v1beta/models/{MODEL}:generateContent"
    # The client's timeout is a hang guard, far over REFRESH_TIMEOUT.
    with client(timeout=10 * refresh_s) as c:
        for i in range(6):
            r = c.post(native, headers={"x-goog-api-key": key}, json=gemini_body(f"hang {i}"))
            assert r.status_code == 200, r.text
    states = {c_["id"]: c_ for c_ in rig.upstream_models()["credentials"]}
    tried = {cid: (int(states[cid].get("requests", 0)), int(states[cid].get("failures", 0)))
             for cid in ("cred0", "cred1")}
    # (attempts, failures): credential 0 tried by one call at most, and that one failed over.
    assert tried["cred0"][0] <= 1 and tried["cred0"][0] == tried["cred0"][1], \
        f"calls kept trying the credential whose refresh hangs: {tried}"
    assert tried["cred1"] == (6, 0), f"credential 1 did not serve every call: {tried}"
    assert calls(rig, "generate", tokens[0]) == 0 and calls(rig, "generate", tokens[1]) == 6
    # Set aside by the warm-up's timed-out refresh or by a call's bounded wait, whichever came first.
    assert states["cred0"]["state"] == "COOLING" and "token" in states["cred0"]["detail"]
