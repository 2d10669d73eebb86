"""Fixtures for integration tests: real upstream processes against the session simulator."""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Callable, Iterator, Mapping

import pytest

from tests import harness


@pytest.fixture
def upstream_factory(simulator: harness.Proc, tmp_path: Path) -> Iterator[Callable[..., harness.Proc]]:
    """Start `python -m services.upstream` on a free port; stopped (SIGTERM) after the test."""
    procs: list[harness.Proc] = []

    def start(credentials: Path, env: Mapping[str, str] | None = None) -> harness.Proc:
        name = f"upstream-{len(procs)}"
        proc = harness.start_upstream(tmp_path / "logs", simulator.url, credentials, env, name=name)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.stop(timeout=10)


@pytest.fixture
def creds_dir(tmp_path: Path) -> Path:
    path = tmp_path / "creds"
    path.mkdir()
    return path


def new_refresh_token(label: str = "it") -> str:
    """A refresh token no other test uses: the simulator creates a fresh account for it."""
    return f"1//{label}-{uuid.uuid4().hex}"
