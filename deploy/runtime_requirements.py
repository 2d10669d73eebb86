"""The runtime dependencies of the service images, from pyproject.toml.

    python -m deploy.runtime_requirements [--exclude NAME ...] > runtime.txt
    pip install -c requirements.lock -r runtime.txt

pyproject.toml's [project].dependencies are the direct runtime dependencies (test tools live
in an optional group); requirements.lock, used as constraints, pins everything they pull in.
So the images install exactly the locked versions, without the test tools, and no list of
packages is kept twice.
"""
from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def requirement_name(requirement: str) -> str:
    """'uvicorn[standard]==0.54.0' -> 'uvicorn' (normalised as PyPI does)."""
    name = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not name:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", name.group(1)).lower()


def runtime_requirements(pyproject: Path = PYPROJECT, exclude: frozenset[str] = frozenset()) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    skip = {requirement_name(n) for n in exclude}
    return [r for r in project["dependencies"] if requirement_name(r) not in skip]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.runtime_requirements")
    parser.add_argument("--pyproject", type=Path, default=PYPROJECT)
    parser.add_argument("--exclude", nargs="*", default=[], help="distribution names to leave out")
    args = parser.parse_args(argv)
    for line in runtime_requirements(args.pyproject, frozenset(args.exclude)):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
