"""Conformance fixtures: the full stack (simulator → upstream → edge) from tests/stack_fixtures.py."""
from typing import Iterator

import pytest

from tests import harness
from tests.stack_fixtures import Stack, start_stack
from tests.stack_fixtures import stack  # noqa: F401  (a fixture: the full stack for every conformance test)


@pytest.fixture(scope="session")
def agent_stack(simulator: harness.Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack whose media fetcher may reach loopback, for the coding-agent APIs' media tests."""
    s = start_stack(simulator, tmp_path_factory.mktemp("agent-stack"), {"MEDIA_ALLOW_PRIVATE": "true"})
    try:
        yield s
    finally:
        s.stop()
