"""bench/revoke.py's verdicts on how soon edges refuse a revoked key, and its README rows."""
from __future__ import annotations

import pytest

from bench.readme import rows
from bench.revoke import AUTH_REFRESH_S, POLL_SLACK_S, REDIS_BOUND_S, bound_s, detail_text, summarize


def test_the_bounds_are_the_readmes_claims():
    assert bound_s("redis") == REDIS_BOUND_S == 1.0
    assert bound_s("poll") == AUTH_REFRESH_S + POLL_SLACK_S


@pytest.mark.parametrize("delays, bound, holds, p50, max_", [
    ([0.004, 0.005, 0.003], 1.0, True, 4.0, 5.0),
    ([0.1, 0.2, 0.3, 1.0], 1.0, True, 250.0, 1000.0),  # the bound itself still holds
    ([0.1, 1.2, 0.3], 1.0, False, 300.0, 1200.0),  # one slow edge is enough
    ([0.1, None, 0.3], 1.0, False, 200.0, None),  # an edge that never refused
    ([None, None], 1.0, False, None, None),
    ([], 1.0, False, None, None),  # nothing measured proves nothing
])
def test_summary_holds_only_when_every_edge_refused_within_the_bound(delays, bound, holds, p50, max_):
    s = summarize(delays, bound)
    assert s["holds"] is holds
    assert s["p50_ms"] == (pytest.approx(p50) if p50 is not None else None)
    assert s["max_ms"] == (pytest.approx(max_) if max_ is not None else None)
    assert (s["refusals"], s["of"]) == (sum(d is not None for d in delays), len(delays))


def test_an_edge_still_serving_the_key_is_named_in_the_detail():
    text = detail_text(summarize([0.1, None, None], 1.0))
    assert text.startswith("2 of 3 edge-rounds still served the key")


def test_readme_rows_give_each_path_its_verdict():
    result = {"revoke": {"edges": 3, "store": "postgresql", "rounds": 5, "auth_refresh_seconds": 0.25, "paths": {
        "redis": summarize([0.004, 0.006], bound_s("redis")),
        "poll": summarize([0.1, 2.0], bound_s("poll"))}}}
    got = dict(rows(result))
    redis = next(v for k, v in got.items() if "Redis fan-out" in k)
    poll = next(v for k, v in got.items() if "revision poll only" in k)
    assert redis.startswith("HOLDS") and "max 6 ms" in redis and "bound 1 s" in redis
    assert poll.startswith("SHORT") and "max 2000 ms" in poll and f"bound {bound_s('poll'):g} s" in poll
