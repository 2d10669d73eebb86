"""Conformance fixtures: the full stack (simulator → upstream → edge → Envoy) from
tests/stack_fixtures.py, once per pool kind (Code Assist, AI Studio, Vertex AI, mixed): the
suites must pass whichever backend serves them."""
from __future__ import annotations

import pytest

from tests.stack_fixtures import Stack, pool_stack  # noqa: F401  (a fixture)


@pytest.fixture(scope="session")
def stack(pool_stack: Stack) -> Stack:  # noqa: F811
    return pool_stack
