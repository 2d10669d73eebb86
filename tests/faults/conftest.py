"""Fixtures of the fault suite: a factory of throw-away stacks (see rig.py), all stopped at the
end of the module that started them."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests import harness
from tests.faults.rig import Rig, start_rig


@pytest.fixture(scope="module")
def rigs(simulator: harness.Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Rig]]:
    """`rigs(**start_rig_kwargs)` starts a stack against the session simulator (or, with
    simulator=<Proc>, another one)."""
    started: list[Rig] = []

    def start(simulator_proc: harness.Proc | None = None, **kw) -> Rig:
        base: Path = tmp_path_factory.mktemp(kw.get("label", "rig"))
        rig = start_rig(simulator_proc or simulator, base, **kw)
        started.append(rig)
        return rig

    yield start
    for rig in started:
        rig.close()
