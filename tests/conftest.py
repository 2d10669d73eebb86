"""Shared fixtures: real processes on loopback, started through tests/harness.py."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests import harness
from tests.support import ast_lock

ast_lock.install()


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stack")


@pytest.fixture(scope="session")
def simulator(session_dir: Path) -> Iterator[harness.Proc]:
    """One Code Assist simulator for the whole run; `sim` resets it for each test."""
    proc = harness.start_simulator(session_dir / "logs")
    yield proc
    proc.stop()


@pytest.fixture
def sim(simulator: harness.Proc):
    from tests.simulator.control import SimControl

    ctl = SimControl(simulator.url)
    ctl.clear_faults()
    ctl.clear_requests()
    ctl.config(chunk_delay=0.0, latency=0.0)
    yield ctl
    ctl.clear_faults()
    ctl.release()  # a test that failed while the simulator held an answer back leaves none held


# Real PostgreSQL and Redis servers for the tests that need them (tests/support/servers.py).
from tests.support.servers import pg_dsn, postgres_server, redis_server, redis_url  # noqa: E402,F401
# `license_db`: the license-store tests run on SQLite and on PostgreSQL (tests/support/stores.py).
from tests.support.stores import license_db  # noqa: E402,F401
