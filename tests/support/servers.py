"""Real PostgreSQL and Redis servers on loopback ports chosen at run time.

`make test` installs the Debian packages first (tests/system_deps.sh); a missing server binary
fails the test that needs it with the reason, never skips it. One server of each kind runs for the
whole session; each test gets its own empty database (PostgreSQL) or a flushed logical database
(Redis), so tests never see each other's rows.
"""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from tests.harness import LOOPBACK, free_port

START_TIMEOUT = 60.0


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"PostgreSQL's {name} is not installed (make test installs Debian's postgresql)")
    return path


def _as_postgres(argv: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root; CI runs as root.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


def _stop(popen: subprocess.Popen, root: Path) -> None:
    if popen.poll() is None:
        popen.terminate()
        try:
            popen.wait(timeout=20)
        except subprocess.TimeoutExpired:
            popen.kill()
    shutil.rmtree(root, ignore_errors=True)


@dataclass
class PostgresServer:
    port: int
    root: Path
    popen: subprocess.Popen

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@{LOOPBACK}:{self.port}/{database}"

    def create_database(self) -> str:
        """A fresh, empty database; returns its DSN."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        subprocess.run([_pg_bin("createdb"), "-h", LOOPBACK, "-p", str(self.port), "-U", "postgres", name],
                       check=True, capture_output=True, timeout=30)
        return self.dsn(name)

    def stop(self) -> None:
        _stop(self.popen, self.root)


def start_postgres() -> PostgresServer:
    # Not under pytest's tmp dir: that is 0700 root, which the postgres user cannot enter.
    root = Path(tempfile.mkdtemp(prefix="gw-pg-"))
    root.chmod(0o755)
    data = root / "data"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
        shutil.chown(root, "postgres", "postgres")
    init = subprocess.run(_as_postgres([_pg_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                                        "-E", "UTF8", "--no-sync"]), capture_output=True, text=True, timeout=120)
    if init.returncode != 0:
        pytest.fail(f"initdb failed:\n{init.stdout[-2000:]}{init.stderr[-2000:]}")
    port = free_port()
    log = open(root / "postgres.log", "wb")
    popen = subprocess.Popen(
        _as_postgres([_pg_bin("postgres"), "-D", str(data), "-p", str(port), "-k", str(root),
                      "-c", f"listen_addresses={LOOPBACK}", "-c", "fsync=off", "-c", "synchronous_commit=off",
                      "-c", "full_page_writes=off", "-c", "max_connections=300"]),
        stdout=log, stderr=subprocess.STDOUT)
    server = PostgresServer(port, root, popen)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            break
        ready = subprocess.run([_pg_bin("pg_isready"), "-h", LOOPBACK, "-p", str(port), "-U", "postgres"],
                               capture_output=True)
        if ready.returncode == 0:
            return server
        time.sleep(0.1)
    text = (root / "postgres.log").read_text(errors="replace")[-3000:]
    server.stop()
    pytest.fail(f"PostgreSQL did not start on {LOOPBACK}:{port}:\n{text}")


def _redis_command(port: int, *args: str, timeout: float = 5.0) -> bytes:
    """One RESP command over a raw socket: the fixtures must not depend on the client library under test."""
    payload = f"*{len(args)}\r\n".encode() + b"".join(
        f"${len(a.encode())}\r\n".encode() + a.encode() + b"\r\n" for a in args)
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
        sock.sendall(payload)
        return sock.recv(65536)


@dataclass
class RedisServer:
    port: int
    root: Path
    popen: subprocess.Popen

    def url(self, db: int = 0) -> str:
        return f"redis://{LOOPBACK}:{self.port}/{db}"

    def flush(self) -> None:
        reply = _redis_command(self.port, "FLUSHALL")
        assert reply.startswith(b"+OK"), reply

    def command(self, *args: str) -> bytes:
        return _redis_command(self.port, *args)

    def stop(self) -> None:
        _stop(self.popen, self.root)


def start_redis() -> RedisServer:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (make test installs Debian's redis-server)")
    root = Path(tempfile.mkdtemp(prefix="gw-redis-"))
    port = free_port()
    log = open(root / "redis.log", "wb")
    popen = subprocess.Popen([binary, "--port", str(port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no",
                              "--dir", str(root), "--protected-mode", "yes"], stdout=log, stderr=subprocess.STDOUT)
    server = RedisServer(port, root, popen)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and popen.poll() is None:
        try:
            if _redis_command(port, "PING", timeout=1.0).startswith(b"+PONG"):
                return server
        except OSError:
            pass
        time.sleep(0.05)
    text = (root / "redis.log").read_text(errors="replace")[-3000:]
    server.stop()
    pytest.fail(f"redis-server did not start on {LOOPBACK}:{port}:\n{text}")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = start_postgres()
    yield server
    server.stop()


@pytest.fixture
def pg_dsn(postgres_server: PostgresServer) -> str:
    """DSN of a new empty database on the session's PostgreSQL server."""
    return postgres_server.create_database()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = start_redis()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of the session's Redis server, emptied for this test."""
    redis_server.flush()
    return redis_server.url()
