"""Conformance fixtures: the full stack (simulator → upstream → edge → Envoy) from
tests/stack_fixtures.py. `stack` runs once per pool kind (Code Assist, AI Studio, Vertex AI,
mixed): the suites must pass whichever backend serves them."""
from typing import Iterator

import pytest

from tests import harness
from tests.stack_fixtures import Stack, pool_stack, start_stack  # noqa: F401  (pool_stack: a fixture)


@pytest.fixture(scope="session")
def stack(pool_stack: Stack) -> Stack:  # noqa: F811
    return pool_stack


@pytest.fixture(scope="session")
def agent_stack(simulator: harness.Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack whose media fetcher may reach loopback, for the coding-agent APIs' media tests."""
    s = start_stack(simulator, tmp_path_factory.mktemp("agent-stack"), {"MEDIA_ALLOW_PRIVATE": "true"})
    try:
        yield s
    finally:
        s.stop()
