"""Media through the Responses and Anthropic Messages APIs cost the stack what they cost on chat
(test_media_budget.py): a 20 MiB image by URL or inline grows the whole stack (Envoy + edge +
upstream, each process's peak growth summed) by at most 4x the payload, and the media budgets
refuse in each API's own error format.

(Before: these APIs parsed inline base64 into Python strings and serialized it again, and
fetched media were joined into text: ~7x inline on a fresh stack. Now both take chat's path:
the base64 stays in the client's body or in the fetched buffer as a token, spliced back into
the pieces sent on; see services/edge/spliced.py.)

Each API gets a stack of its own, so that its first image is measured without memory freed by
another API's requests to reuse. The media server is on loopback: MEDIA_ALLOW_PRIVATE=true.
"""
from __future__ import annotations

import base64

import httpx
import orjson
import pytest

from tests.faults.rig import MODEL, Rig
from tests.hostile.test_media_budget import (BLOB, IMAGE, INFLIGHT, MIB, TOTAL, MediaServer, PeakGrowth,
                                             _within_four_times, media, stack_pids)

__all__ = ["media"]  # the media server fixture, shared with test_media_budget.py

pytestmark = pytest.mark.timeout(240)

API_PATHS = {"responses": "/v1/responses", "anthropic": "/v1/messages"}


@pytest.fixture(scope="module", params=sorted(API_PATHS))
def api(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def stack(rigs, api: str) -> tuple[Rig, str]:
    rig = rigs(label=f"media-{api}", envoy=True,
               edge_env={"MEDIA_ALLOW_PRIVATE": "true", "MEDIA_MAX_TOTAL_BYTES": str(TOTAL),
                         "MEDIA_MAX_INFLIGHT_BYTES": str(INFLIGHT), "MEDIA_FETCH_TIMEOUT": "60",
                         "MAX_BODY_BYTES": str(32 * MIB)})
    return rig, rig.key()


def _image(api: str, *, url: str | None = None, data: str | None = None) -> dict:
    """An image content part of `api`, by URL or as base64."""
    if api == "responses":
        return {"type": "input_image", "image_url": url or f"data:image/png;base64,{data}"}
    source = {"type": "url", "url": url} if url else {"type": "base64", "media_type": "image/png", "data": data}
    return {"type": "image", "source": source}


def _body(api: str, parts: list[dict]) -> bytes:
    if api == "responses":
        return orjson.dumps({"model": MODEL, "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "describe this"}, *parts]}]})
    return orjson.dumps({"model": MODEL, "max_tokens": 64, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "describe this"}, *parts]}]})


def _post(rig: Rig, key: str, api: str, body: bytes) -> httpx.Response:
    auth = {"Authorization": f"Bearer {key}"} if api == "responses" else {"x-api-key": key}
    with httpx.Client(timeout=120, trust_env=False) as c:
        return c.post(f"{rig.public}{API_PATHS[api]}", content=body,
                      headers={**auth, "Content-Type": "application/json"})


def _answer_text(api: str, r: httpx.Response) -> str:
    out = r.json()
    if api == "responses":
        return "".join(c.get("text", "") for item in out["output"] for c in item.get("content", []))
    return "".join(block.get("text", "") for block in out["content"])


def test_accepted_image_by_url_whole_stack_within_four_times(stack, api: str, media: MediaServer):
    rig, key = stack
    # The stack's first image: no earlier request whose freed memory this one could reuse.
    with PeakGrowth(stack_pids(rig)) as peak:
        r = _post(rig, key, api, _body(api, [_image(api, url=f"{media.base}/img/{api}-first.png")]))
    assert r.status_code == 200, r.text[:300]
    assert f"image/png {IMAGE} bytes" in _answer_text(api, r)
    _within_four_times(peak, f"fetched from a URL through {api}")


def test_accepted_inline_image_whole_stack_within_four_times(stack, api: str):
    rig, key = stack
    body = _body(api, [_image(api, data=base64.b64encode(BLOB).decode())])
    with PeakGrowth(stack_pids(rig)) as peak:
        r = _post(rig, key, api, body)
    assert r.status_code == 200, r.text[:300]
    assert f"image/png {IMAGE} bytes" in _answer_text(api, r)
    _within_four_times(peak, f"sent inline through {api}")


def test_media_over_the_request_total_refused_in_the_api_format(stack, api: str, media: MediaServer):
    rig, key = stack
    calls = len(rig.sim.requests(op="generate", account=rig.tokens[0]))
    urls = [f"{media.base}/img/{api}-total-{i}.png" for i in range(2)]  # 40 MiB > MEDIA_MAX_TOTAL_BYTES
    r = _post(rig, key, api, _body(api, [_image(api, url=u) for u in urls]))
    assert r.status_code == 413, (r.status_code, r.text[:300])
    err = r.json()
    if api == "anthropic":
        assert err["type"] == "error" and err["error"]["type"] == "request_too_large", err
        assert "MEDIA_MAX_TOTAL_BYTES" in err["error"]["message"]
    else:
        assert err["error"]["code"] == "media_too_large", err
        assert "MEDIA_MAX_TOTAL_BYTES" in err["error"]["message"]
    assert len(rig.sim.requests(op="generate", account=rig.tokens[0])) == calls, "a refused request reached the backend"


def test_bad_inline_base64_is_a_400_in_the_api_format(stack, api: str):
    rig, key = stack
    # Long enough to stay in the body as a token; cut to a length no base64 can have.
    data = base64.b64encode(BLOB[:3 * 40000]).decode() + "QUJDR"
    r = _post(rig, key, api, _body(api, [_image(api, data=data)]))
    assert r.status_code == 400, (r.status_code, r.text[:300])
    err = r.json()
    message = err["error"]["message"]
    assert "base64" in message, err
    if api == "anthropic":
        assert err["type"] == "error" and err["error"]["type"] == "invalid_request_error", err
