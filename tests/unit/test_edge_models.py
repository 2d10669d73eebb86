"""One normalised model id for every route (issue #10 item 9)."""
from __future__ import annotations

import asyncio

import pytest

from services.edge.errors import ApiError
from services.edge.models import MAX_MODEL_ID, allow_list_id, parse_model
from services.edge.store import KeyRecord
from services.edge.upstream_errors import UpstreamError

ALIASES = {"gemini-2.0-flash": "gemini-2.5-flash"}


@pytest.mark.parametrize("raw, base, suffix", [
    ("gemini-2.5-pro", "gemini-2.5-pro", None),
    ("  gemini-2.5-pro \t", "gemini-2.5-pro", None),
    ("models/gemini-2.5-pro", "gemini-2.5-pro", None),
    ("gemini-2.5-pro-thinking", "gemini-2.5-pro", "thinking"),
    ("models/gemini-2.5-flash-nothinking", "gemini-2.5-flash", "nothinking"),
    ("gemini-2.0-flash-maxthinking", "gemini-2.0-flash", "maxthinking"),
    ("g" * MAX_MODEL_ID, "g" * MAX_MODEL_ID, None),
])
def test_normalised(raw: str, base: str, suffix: str | None) -> None:
    ref = parse_model(raw)
    assert (ref.base, ref.suffix) == (base, suffix)


class _Upstream:
    def __init__(self, aliases: dict | None) -> None:
        self._aliases = aliases

    async def aliases(self) -> dict:
        if self._aliases is None:
            raise UpstreamError(503, "UNAVAILABLE", "down")
        return self._aliases


def _key(*models: str) -> KeyRecord:
    return KeyRecord(id=1, name="k", prefix="p", key_hash="h", enabled=True, created_at=0, expires_at=None,
                     revoked_at=None, models=models, rpm=None, tpm=None, quota=None)


@pytest.mark.parametrize("models, raw, aliases, expect", [
    ((), "gemini-2.0-flash", None, "gemini-2.0-flash"),  # no allow-list: nothing fetched
    (("gemini-2.0-*",), "gemini-2.0-flash", ALIASES, "gemini-2.5-flash"),
    (("gemini-2.5-flash",), "gemini-2.0-flash-thinking", ALIASES, "gemini-2.5-flash"),
    (("gemini-2.5-pro",), "gemini-2.5-flash", None, "gemini-2.5-flash"),  # refused either way
])
def test_allow_list_id(models, raw, aliases, expect) -> None:
    assert asyncio.run(allow_list_id(_key(*models), parse_model(raw), _Upstream(aliases))) == expect


def test_allow_list_id_does_not_guess_without_aliases() -> None:
    with pytest.raises(UpstreamError):
        asyncio.run(allow_list_id(_key("gemini-2.0-*"), parse_model("gemini-2.0-flash"), _Upstream(None)))


@pytest.mark.parametrize("raw", [None, 3, "", "   ", "g" * (MAX_MODEL_ID + 1), "g" * 6000, "a b", "a\nb", "a/b",
                                 "-leading-dash", "models/", "gemini;rm", "gémini"])
def test_refused(raw) -> None:
    with pytest.raises(ApiError) as err:
        parse_model(raw)
    assert err.value.status == 400
    assert len(err.value.message) < 200
