"""Fixtures of the hostile-input suite: the same throw-away stacks as the fault suite."""
from tests.faults.conftest import rigs  # noqa: F401  (re-exported fixture)
