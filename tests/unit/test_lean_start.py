"""What the entry points do before the services import anything (issue #15, idle RSS): re-run
under python -OO (services/docstrings.py) and keep uvicorn's command line out of the edge
(services/unused_extras.py). Each runs in a fresh interpreter: both change the process."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(code: str, **env: str) -> tuple[int, str]:
    """(the started process's id, its output)"""
    full = {k: v for k, v in os.environ.items() if k != "PYTHONOPTIMIZE"}
    full.update(env, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "gen")]))
    with subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=full, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as proc:
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()[-2000:]
    return proc.pid, out.decode().strip()


DROP = ("import os, sys\nfrom services import docstrings\ndocstrings.drop()\n"
        "print(os.getpid(), sys.flags.optimize, repr(docstrings.drop.__doc__))")


def test_drop_reexecutes_the_same_command_under_OO():
    started, out = run(DROP)
    pid, optimize, doc = out.split(" ", 2)
    assert (int(pid), optimize, doc) == (started, "2", "None")


def test_an_operators_pythonoptimize_wins():
    _, optimize, doc = run(DROP, PYTHONOPTIMIZE="0")[1].split(" ", 2)
    assert optimize == "0" and doc != "None"


def test_uvicorn_serves_without_its_command_line():
    _, out = run("import sys\n"
              "from services import unused_extras\n"
              "unused_extras.uvicorn_without_command_line()\n"
              "import uvicorn, uvicorn.server\n"
              "assert uvicorn.Server is uvicorn.server.Server and uvicorn.Config\n"
              "try:\n"
              "    uvicorn.run('services.edge.app:create_app')\n"
              "except RuntimeError as exc:\n"
              "    print('refused:', exc)\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] in ('click', 'multiprocessing')"
              " or m.startswith('uvicorn.supervisors')))\n")
    refused, loaded = out.splitlines()
    assert refused.startswith("refused: uvicorn's command line is not loaded")
    assert loaded == "[]"
