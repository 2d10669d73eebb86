"""License keys never show up in any log or in any response, whatever happens to the request.

A stack with Envoy in front and every service logging at DEBUG gets requests carrying a good
key, an unknown key that looks real, a revoked, a disabled and an expired key — in each of the
four places a key may travel (Bearer, bare Authorization, x-goog-api-key, ?key=) — and those
requests succeed, stream, fail validation, hit unknown routes and models, and meet backend
errors. Afterwards no response (body or headers) and no process log holds any key, nor any 12
characters of one (the 11-character visible prefix `gcli-xxxxxx` is allowed: it is how an
operator recognises a key).

The key store's lookup is checked separately (tests/hostile/test_key_lookup.py).
"""
from __future__ import annotations

import secrets
import time

import httpx
import pytest

from services.edge.store import KEY_SCHEME, PREFIX_LEN
from tests.faults.rig import MODEL, Rig, chat_body, gemini_body

pytestmark = pytest.mark.timeout(90)

WINDOW = PREFIX_LEN + 1


def fragments(key: str) -> set[str]:
    """Every WINDOW-long piece of a key: finding any of them means more than its prefix leaked."""
    return {key[i:i + WINDOW] for i in range(len(key) - WINDOW + 1)}


def ways(key: str) -> list[tuple[dict[str, str], dict[str, str]]]:
    return [({"Authorization": f"Bearer {key}"}, {}), ({"Authorization": key}, {}), ({"x-goog-api-key": key}, {}),
            ({}, {"key": key})]


@pytest.fixture(scope="module")
def rig(rigs) -> Rig:
    return rigs(label="secrecy", envoy=True, upstream_env={"LOG_LEVEL": "DEBUG"},
                edge_env={"LOG_LEVEL": "DEBUG", "MAX_BODY_BYTES": str(64 * 1024)})


def test_keys_stay_out_of_logs_and_answers(rig: Rig, sim):
    good = rig.key()
    revoked, disabled = rig.key(), rig.key()
    expired = rig.key("--expires", "1s")
    unknown = KEY_SCHEME + secrets.token_urlsafe(30)
    assert rig.edge is not None and rig.upstream is not None and rig.envoy is not None
    for args in (("revoke", revoked), ("disable", disabled)):
        out = rig.cli(*args)
        assert out.returncode == 0, out.stderr
        # The admin CLI itself does not echo the key back either.
        assert not any(f in out.stdout + out.stderr for f in fragments(args[1]))
    # Each refused key must meet the refusal paths below, not be served: wait until the edge
    # refuses it (it has seen the revocation or the disabling; `expired`'s instant has passed).
    refused_keys = {"revoked": revoked, "disabled": disabled, "expired": expired}
    with httpx.Client(timeout=30, trust_env=False) as c:
        for what, key in refused_keys.items():
            deadline, auth = time.monotonic() + 60, {"Authorization": f"Bearer {key}"}
            while (status := c.get(f"{rig.api}/v1/models", headers=auth).status_code) == 200:
                assert time.monotonic() < deadline, f"hung: the edge still served the {what} key after 60 s"
                time.sleep(0.05)
            assert status in (401, 403), (what, status)

    keys = [good, revoked, disabled, expired, unknown]
    served: dict[str, set[int]] = {key: set() for key in keys}
    answers: list[str] = []
    statuses: set[int] = set()

    def record(r: httpx.Response, key: str) -> None:
        statuses.add(r.status_code)
        served[key].add(r.status_code)
        answers.append(r.text)
        answers.append("\n".join(f"{k}: {v}" for k, v in r.headers.items()))

    # One backend failure mid-way, so error paths of the upstream and edge are logged too.
    sim.add_fault(account=rig.tokens[0], op="generate", kind="429", retry_delay="1s", times=1)
    sim.add_fault(account=rig.tokens[0], op="stream", kind="cut", after_chunks=1, times=1)
    with httpx.Client(timeout=30, trust_env=False) as c:
        for base in (rig.api, rig.public):
            for key in keys:
                for headers, params in ways(key):
                    native = f"{base}/v1beta/models/{MODEL}"
                    calls = [
                        ("POST", f"{native}:generateContent", gemini_body("hello")),
                        ("POST", f"{native}:streamGenerateContent", gemini_body("[chunks=3] a b c")),
                        ("POST", f"{native}:streamGenerateContent?alt=sse", gemini_body("[chunks=3] a b c")),
                        ("POST", f"{native}:countTokens", gemini_body("count me")),
                        ("POST", f"{base}/v1/chat/completions", chat_body("hello")),
                        ("POST", f"{base}/v1/chat/completions", chat_body("[chunks=3] a b c", stream=True)),
                        ("POST", f"{base}/v1/chat/completions", {"model": MODEL, "messages": "not a list"}),
                        ("POST", f"{base}/v1beta/models/no-such-model:generateContent", gemini_body("x")),
                        ("GET", f"{base}/v1/models", None),
                        ("GET", f"{base}/v1beta/models/{MODEL}", None),
                        ("GET", f"{base}/v1/nothing-here", None),
                    ]
                    for method, url, body in calls:
                        record(c.request(method, url, headers=headers, params=params, json=body), key)
                    # Malformed and oversized bodies (the edge's limit is 64 KiB here).
                    record(c.post(f"{native}:generateContent", headers={**headers, "content-type": "application/json"},
                                  params=params, content=b'{"contents": [}'), key)
                    record(c.post(f"{native}:generateContent", headers={**headers, "content-type": "text/plain"},
                                  params=params, content=b"{}"), key)
                    record(c.post(f"{native}:generateContent", headers={**headers, "content-type": "application/json"},
                                  params=params, content=b'{"x":"' + b"y" * 100_000 + b'"}'), key)
    assert {200, 400, 401, 404, 413, 415} <= statuses, statuses
    # The refused keys went down the refusal paths: none of them was served.
    for what, key in (*refused_keys.items(), ("unknown", unknown)):
        assert 200 not in served[key], f"the {what} key was served: {sorted(served[key])}"

    for proc in (rig.envoy, rig.edge, rig.upstream):
        assert proc.stop() is not None  # stopped, so every log line is flushed to its file
    logs = {name: proc.log() for name, proc in (("edge", rig.edge), ("upstream", rig.upstream),
                                                ("envoy", rig.envoy))}
    # The logs are not empty: the check below is not vacuous.
    assert "POST /gemini_cli/v1/chat/completions" in logs["envoy"], logs["envoy"][-500:]
    assert "generate id=" in logs["upstream"]
    assert logs["edge"].count("\n") > 3

    for key in keys:
        pieces = fragments(key)
        for name, text in logs.items():
            leaked = [p for p in pieces if p in text]
            assert not leaked, f"{name} log holds key material {leaked[:3]} (key {key[:PREFIX_LEN]}…)"
        for text in answers:
            leaked = [p for p in pieces if p in text]
            assert not leaked, f"a response holds key material {leaked[:3]}: {text[:300]}"
