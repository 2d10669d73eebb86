"""Keep optional extras of our libraries out of the services when something else installed them.

httpx imports its command line's packages (click, pygments, rich) whenever they are installed,
and httpcore imports trio to support trio callers; the service images do not install them
(deploy/runtime_requirements.py), but the development environment does (test tools pull them
in), where they added ~6 MiB to every upstream (issue #15). The services run on asyncio and
never call httpx's command line, so they refuse those imports, as the libraries expect when
the packages are missing (`None` in sys.modules makes an import raise ImportError).

Called by the entry points (services/*/__main__.py) before anything else is imported.
"""
from __future__ import annotations

import sys
import types

# httpx's command line and httpcore's trio backend.
UNUSED = ("trio", "rich", "pygments")

# The edge's own: FastAPI looks for pydantic v1 models (it imports pydantic.v1, ~1.4 MiB, to
# ask, and treats ImportError as "none"), and uvicorn picks watchfiles (~0.7 MiB with its
# native module) as the reloader when installed, else its stat reloader; the edge has no v1
# models and never reloads.
EDGE_UNUSED = ("pydantic.v1", "watchfiles")


def refuse(*extra: str) -> None:
    """Make `import` of UNUSED (and `extra`) fail from now on in this process, unless loaded."""
    for name in (*UNUSED, *extra):
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


def uvicorn_without_command_line() -> None:
    """uvicorn's package imports its command line (uvicorn.main: click, multiprocessing, the
    reload and worker supervisors; ~1.3 MiB resident, issue #15) only to re-export `Server`,
    `main` and `run`. The edge builds a uvicorn Config and Server itself and never runs
    uvicorn's command line, so `uvicorn.main` is a stand-in: its `Server` is uvicorn.server's,
    `main` and `run` refuse. Called before uvicorn is imported."""
    if "uvicorn.main" in sys.modules:
        return
    stand_in = types.ModuleType("uvicorn.main", "uvicorn's command line: not loaded in this process")

    def __getattr__(name: str) -> object:
        if name == "Server":
            from uvicorn.server import Server

            return Server
        raise AttributeError(name)

    def refused(*args: object, **kwargs: object) -> None:
        raise RuntimeError("uvicorn's command line is not loaded in this process (services/unused_extras.py)")

    stand_in.__getattr__ = __getattr__  # type: ignore[method-assign]
    stand_in.main = stand_in.run = refused  # type: ignore[attr-defined]
    sys.modules["uvicorn.main"] = stand_in
