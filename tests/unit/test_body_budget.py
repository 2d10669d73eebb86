"""services/edge/body_budget.py: large bodies hold budget as they arrive, small ones never."""
from __future__ import annotations

import pytest

from services.edge.body_budget import BodyBudget
from services.edge.errors import ApiError


def scope(length: int | None = None) -> dict:
    headers = [(b"content-length", str(length).encode())] if length is not None else []
    return {"type": "http", "method": "POST", "headers": headers}


def feeder(*chunks: bytes):
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    return receive


async def drain(account, n: int) -> None:
    for _ in range(n):
        await account.receive()


async def test_small_bodies_never_count():
    budget = BodyBudget(limit=10, large=100)
    account = budget.account(scope(), feeder(b"x" * 60, b"x" * 40))
    await drain(account, 2)
    assert budget.held == 0


async def test_a_chunked_body_holds_what_arrived_once_large():
    budget = BodyBudget(limit=1000, large=100)
    account = budget.account(scope(), feeder(b"x" * 80, b"x" * 80, b"x" * 80))
    await drain(account, 1)
    assert budget.held == 0
    await drain(account, 1)
    assert budget.held == 160
    await drain(account, 2)  # the last chunk, then the disconnect listener's message
    assert budget.held == 240
    account.release()
    assert budget.held == 0


async def test_a_declared_length_is_held_up_front_and_refused_past_the_budget():
    budget = BodyBudget(limit=300, large=100)
    first = budget.account(scope(200), feeder(b"x" * 200))
    await drain(first, 1)
    assert budget.held == 200
    second = budget.account(scope(200), feeder(b"x" * 200))
    with pytest.raises(ApiError) as exc:
        await second.receive()
    assert exc.value.status == 503 and exc.value.retry_after == 1.0
    second.release()
    first.release()
    assert budget.held == 0
    third = budget.account(scope(200), feeder(b"x" * 200))
    await drain(third, 1)
    assert budget.held == 200
