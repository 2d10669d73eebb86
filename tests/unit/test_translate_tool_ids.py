"""Tool-call ids that carry the thought signature."""
from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.edge.translate import tool_ids

SAFE = re.compile(r"[A-Za-z0-9_-]+")


@given(core=st.from_regex(r"[A-Za-z0-9_-]{1,40}", fullmatch=True).filter(lambda c: tool_ids.MARKER not in c),
       signature=st.one_of(st.none(), st.text(max_size=300)))
@settings(max_examples=300, deadline=None, database=None)
def test_round_trip(core: str, signature: str | None) -> None:
    encoded = tool_ids.encode(core, signature)
    assert SAFE.fullmatch(encoded)
    assert tool_ids.decode(encoded) == (core, signature or None)


@pytest.mark.parametrize("foreign", ["call_abc123", "toolu_01A09q90qw90lq917835lq9", "call__ts", "x__ts_", "__ts_abc", "a__ts_!!!!"])
def test_foreign_ids_pass_unchanged(foreign: str) -> None:
    core, signature = tool_ids.decode(foreign)
    assert signature is None
    assert core == (foreign.split(tool_ids.MARKER)[0] if tool_ids.MARKER in foreign and not foreign.startswith(tool_ids.MARKER) else foreign)


def test_tampered_or_truncated_payload_is_no_signature() -> None:
    encoded = tool_ids.encode("call_1", "CiQBVKhc7u/sig==")
    assert tool_ids.decode(encoded) == ("call_1", "CiQBVKhc7u/sig==")
    for broken in (encoded[:-1], encoded[:-5], encoded[:-1] + ("A" if encoded[-1] != "A" else "B")):
        assert tool_ids.decode(broken) == ("call_1", None)


def test_new_call_id_is_deterministic_and_distinct() -> None:
    a = tool_ids.new_call_id("chatcmpl-1", 0, 0, "f")
    assert a == tool_ids.new_call_id("chatcmpl-1", 0, 0, "f")
    others = {tool_ids.new_call_id("chatcmpl-1", 0, 1, "f"), tool_ids.new_call_id("chatcmpl-1", 1, 0, "f"),
              tool_ids.new_call_id("chatcmpl-2", 0, 0, "f")}
    assert a not in others and len(others) == 3 and SAFE.fullmatch(a)


@pytest.mark.parametrize(("gemini_id", "kept"), [("call_1", True), ("abc-DEF_9", True), ("has space", False), ("x" * 65, False),
                                                  ("a__ts_b", False), (None, False), (7, False), ("", False)])
def test_core_id(gemini_id, kept: bool) -> None:
    assert tool_ids.core_id(gemini_id, "call_fallback") == (gemini_id if kept else "call_fallback")


def test_encode_refuses_a_core_with_the_marker() -> None:
    with pytest.raises(ValueError):
        tool_ids.encode("a__ts_b", "sig")
