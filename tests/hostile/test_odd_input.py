"""Odd input (issue #10 item 9), through Envoy as a client sends it:

* an absurd model id is a 400 on every route, not a gRPC metadata overflow (429);
* a gzip body is inflated (capped at MAX_BODY_BYTES of output), a gzip bomb is a 413, an
  encoding the edge cannot read a clear 415;
* the allow-list sees one normalised id on every route: trailing spaces and thinking suffixes
  mean the same everywhere, and aliases are applied before the allow-list, so `gemini-2.0-*`
  no longer admits the 2.5 models those ids are mapped to.
"""
from __future__ import annotations

import gzip
import zlib
from typing import Iterator
from urllib.parse import quote

import httpx
import orjson
import pytest

from tests.faults.rig import Rig

pytestmark = pytest.mark.timeout(120)

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def rig(rigs) -> Rig:
    return rigs(label="odd", envoy=True, edge_env={"MAX_BODY_BYTES": str(2 * MIB)})


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=60, trust_env=False) as c:
        yield c


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "x-goog-api-key": key}


def chat(model: str, text: str = "hi") -> dict:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


def native(model: str, text: str = "hi") -> tuple[str, dict]:
    return f"/v1beta/models/{quote(model, safe='')}:generateContent", {"contents": [{"role": "user", "parts": [{"text": text}]}]}


def call(rig: Rig, http: httpx.Client, key: str, route: str, model: str) -> httpx.Response:
    if route == "openai":
        return http.post(f"{rig.public}/v1/chat/completions", json=chat(model), headers=auth(key))
    path, body = native(model)
    return http.post(f"{rig.public}{path}", json=body, headers=auth(key))


# --- model ids ------------------------------------------------------------------------------

@pytest.mark.parametrize("route", ["openai", "gemini"])
@pytest.mark.parametrize("model", ["g" * 6000, "gemini-2.5-pro\nx-injected: 1", "gemini-2.5-pro;drop", "../../etc"],
                         ids=["6000-chars", "newline", "semicolon", "dots-slashes"])
def test_bad_model_ids_are_400(rig: Rig, http: httpx.Client, route: str, model: str):
    key = rig.key()
    r = call(rig, http, key, route, model)
    if route == "gemini" and ("/" in model or "\n" in model):
        # Not a model path at all once the URL is normalised.
        assert r.status_code in (400, 404), r.text[:300]
        return
    assert r.status_code == 400, (r.status_code, r.text[:300])
    err = r.json()["error"]
    assert "model" in err["message"]
    assert len(r.content) < 2000  # the id is not echoed back in full


# --- compressed bodies ----------------------------------------------------------------------

@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
@pytest.mark.parametrize("route", ["openai", "gemini"])
def test_compressed_bodies_are_inflated(rig: Rig, http: httpx.Client, route: str, encoding: str):
    key = rig.key()
    if route == "openai":
        url, body = f"{rig.public}/v1/chat/completions", chat("gemini-2.5-flash", "squeezed")
    else:
        path, body = native("gemini-2.5-flash", "squeezed")
        url = f"{rig.public}{path}"
    raw = orjson.dumps(body)
    packed = gzip.compress(raw) if encoding == "gzip" else zlib.compress(raw)
    r = http.post(url, content=packed, headers={**auth(key), "content-type": "application/json",
                                                "content-encoding": encoding})
    assert r.status_code == 200, r.text[:300]
    assert "squeezed" in r.text


@pytest.mark.parametrize("route", ["openai", "gemini"])
def test_a_gzip_bomb_is_cut_at_the_body_limit(rig: Rig, http: httpx.Client, route: str):
    """200 KB of gzip that inflates to 200 MiB: refused at 2 MiB of output."""
    key = rig.key()
    url = f"{rig.public}/v1/chat/completions" if route == "openai" else f"{rig.public}{native('gemini-2.5-flash')[0]}"
    bomb = gzip.compress(b'{"model": "gemini-2.5-flash", "messages": [' + b" " * (200 * MIB) + b"]}")
    r = http.post(url, content=bomb, headers={**auth(key), "content-type": "application/json",
                                              "content-encoding": "gzip"})
    assert r.status_code == 413, r.text[:300]
    assert "decompressed" in r.json()["error"]["message"]


def test_corrupt_gzip_and_unknown_encodings_say_so(rig: Rig, http: httpx.Client):
    key = rig.key()
    url = f"{rig.public}/v1/chat/completions"
    raw = orjson.dumps(chat("gemini-2.5-flash"))
    r = http.post(url, content=raw, headers={**auth(key), "content-type": "application/json", "content-encoding": "gzip"})
    assert r.status_code == 400 and "Content-Encoding" in r.json()["error"]["message"], r.text[:300]
    r = http.post(url, content=raw, headers={**auth(key), "content-type": "application/json", "content-encoding": "br"})
    assert r.status_code == 415 and "Content-Encoding" in r.json()["error"]["message"], r.text[:300]


# --- one normalised id for the allow-list -----------------------------------------------------

@pytest.mark.parametrize("route", ["openai", "gemini"])
@pytest.mark.parametrize("model", ["gemini-2.5-pro", "gemini-2.5-pro ", " gemini-2.5-pro", "gemini-2.5-pro-thinking",
                                   "gemini-2.5-pro-nothinking", "models/gemini-2.5-pro"])
def test_spellings_of_an_allowed_model_are_allowed_everywhere(rig: Rig, http: httpx.Client, route: str, model: str):
    key = rig.key("--models", "gemini-2.5-pro")
    r = call(rig, http, key, route, model)
    assert r.status_code == 200, (r.status_code, r.text[:300])


@pytest.mark.parametrize("route", ["openai", "gemini"])
@pytest.mark.parametrize("model", ["gemini-2.5-flash", "gemini-2.5-flash-thinking", "gemini-2.5-flash "])
def test_spellings_of_a_refused_model_are_refused_everywhere(rig: Rig, http: httpx.Client, route: str, model: str):
    key = rig.key("--models", "gemini-2.5-pro")
    r = call(rig, http, key, route, model)
    assert r.status_code == 403, (r.status_code, r.text[:300])


@pytest.mark.parametrize("route", ["openai", "gemini"])
def test_allow_patterns_judge_the_model_an_alias_leads_to(rig: Rig, http: httpx.Client, route: str):
    # gemini-2.0-flash is an alias of gemini-2.5-flash (the upstream's default MODEL_ALIASES).
    old_only = rig.key("--models", "gemini-2.0-*")
    r = call(rig, http, old_only, route, "gemini-2.0-flash")
    assert r.status_code == 403, (r.status_code, r.text[:300])
    new = rig.key("--models", "gemini-2.5-flash")
    r = call(rig, http, new, route, "gemini-2.0-flash")
    assert r.status_code == 200, (r.status_code, r.text[:300])


def test_a_suffix_on_the_native_route_sets_the_thinking_config(rig: Rig, http: httpx.Client):
    key = rig.key()
    path, body = native("gemini-2.5-flash-nothinking", "suffixed")
    r = http.post(f"{rig.public}{path}", json=body, headers=auth(key))
    assert r.status_code == 200, r.text[:300]
    sent = [q for q in rig.sim.requests(account=rig.tokens[0]) if isinstance(q.get("body"), dict)
            and "suffixed" in orjson.dumps(q["body"]).decode()]
    assert sent
    inner = sent[-1]["body"]["request"]
    assert sent[-1]["body"]["model"] == "gemini-2.5-flash"
    assert inner["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 0}
