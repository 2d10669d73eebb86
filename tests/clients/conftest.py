"""The real coding-agent CLIs, installed from the npm registry, and a stack for them to talk to.

The CLIs (exact versions in package.json beside this file) are installed once into
.venv/npm-clients/<hash of package.json>/ and reused while package.json is unchanged. An install
that fails fails the tests, with npm's output: this tier is never skipped.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from tests import harness
from tests.stack_fixtures import Stack, start_stack

HERE = Path(__file__).resolve().parent
PACKAGE_JSON = HERE / "package.json"
CACHE_ROOT = harness.ROOT / ".venv" / "npm-clients"
BINARIES = ("claude", "codex", "gemini")
INSTALL_TIMEOUT = 900
# Every Claude name goes to a Gemini 3 model, whose (simulated) backend checks thought signatures.
CLIENT_MODEL = "gemini-3-pro-preview"


def _install_dir() -> Path:
    digest = hashlib.sha256(PACKAGE_JSON.read_bytes()).hexdigest()[:12]
    return CACHE_ROOT / digest


def _bins(prefix: Path) -> dict[str, Path]:
    return {name: prefix / "node_modules" / ".bin" / name for name in BINARIES}


def _npm_install(target: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is not installed: the client tier needs Node.js and npm (apt-get install nodejs npm)")
    staging = target.with_name(f"{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    staging.mkdir(parents=True)
    shutil.copy(PACKAGE_JSON, staging / "package.json")
    argv = [npm, "install", "--no-audit", "--no-fund", "--no-update-notifier", "--omit=dev", "--loglevel=error"]
    output = ""
    try:
        for _attempt in range(2):  # one retry: registries drop connections now and then
            proc = subprocess.run(argv, cwd=staging, capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
            output = proc.stdout[-3000:] + proc.stderr[-3000:]
            if proc.returncode == 0 and all(p.exists() for p in _bins(staging).values()):
                break
        else:
            pytest.fail(f"npm install of the client CLIs failed:\n{output}")
        (staging / ".complete").write_text("ok\n")
        try:
            staging.rename(target)
        except OSError:
            if not (target / ".complete").exists():  # not a concurrent install that won the race
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@pytest.fixture(scope="session")
def clients() -> dict[str, Path]:
    """{"claude" | "codex" | "gemini": path of the CLI}, installed when missing."""
    target = _install_dir()
    if not (target / ".complete").exists():
        shutil.rmtree(target, ignore_errors=True)
        _npm_install(target)
    bins = _bins(target)
    for name, path in bins.items():
        version = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=120)
        assert version.returncode == 0, f"{name} --version failed: {version.stderr[-2000:]}"
    return bins


@pytest.fixture(scope="session")
def clients_stack(simulator: harness.Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(simulator, tmp_path_factory.mktemp("clients-stack"),
                    {"ANTHROPIC_MODEL_MAP": f'{{"claude": "{CLIENT_MODEL}"}}'})
    try:
        yield s
    finally:
        s.stop()


def client_env(home: Path, bin_dir: Path, **extra: str) -> dict[str, str]:
    """A small, explicit environment: nothing of the caller's (API keys, proxies) leaks in."""
    env = {"HOME": str(home), "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
           "LANG": "C.UTF-8", "TERM": "dumb", "NO_COLOR": "1", "TMPDIR": str(home)}
    env.update(extra)
    return env
