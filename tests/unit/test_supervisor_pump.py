"""The supervisor shows each child's lines prefixed, however the bytes are split into reads."""
from __future__ import annotations

import asyncio
import io

import pytest

from deploy.supervisor import Supervisor


@pytest.mark.parametrize("pieces, expected", [
    ([b"one\ntwo\n"], ["one", "two"]),
    ([b"on", b"e\ntw", b"o\r\n"], ["one", "two"]),
    ([b"a\n\nb"], ["a", "", "b"]),  # an unfinished last line is shown at the end
    ([b"caf\xc3", b"\xa9\n"], ["café"]),  # a character split between reads
    ([b"x" * 70_000 + b"\n"], None),  # an overlong line is shown in pieces, nothing lost
])
def test_pump_prefixes_every_line(pieces: list[bytes], expected: list[str] | None) -> None:
    async def run() -> str:
        out = io.StringIO()
        sup = Supervisor(out=out)
        reader = asyncio.StreamReader()
        pump = asyncio.create_task(sup._pump("edge", 0, reader))
        for piece in pieces:  # one read each
            reader.feed_data(piece)
            for _ in range(3):
                await asyncio.sleep(0)
        reader.feed_eof()
        await pump
        return out.getvalue()

    got = asyncio.run(run())
    lines = got.split("\n")
    assert lines.pop() == ""
    assert all(line.startswith("edge     | ") for line in lines)
    shown = [line[len("edge     | "):] for line in lines]
    if expected is None:
        assert "".join(shown) == "x" * 70_000
    else:
        assert shown == expected
