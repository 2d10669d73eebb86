"""Conformance fixtures: the full stack (simulator → upstream → edge) from tests/stack_fixtures.py."""
from tests.stack_fixtures import stack  # noqa: F401  (a fixture: the full stack for every conformance test)
