"""The loopback PostgreSQL and Redis servers the scale-out tests stand on really serve."""
from __future__ import annotations

import subprocess

from tests.support.servers import PostgresServer, RedisServer, _pg_bin


def test_postgres_gives_each_test_an_empty_database(postgres_server: PostgresServer, pg_dsn: str) -> None:
    other = postgres_server.create_database()
    assert other != pg_dsn
    out = subprocess.run([_pg_bin("psql"), pg_dsn, "-tAc", "create table t(x int); insert into t values (41+1); select x from t"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "42"
    seen = subprocess.run([_pg_bin("psql"), other, "-tAc", "select count(*) from pg_tables where tablename='t'"],
                          capture_output=True, text=True, timeout=30)
    assert seen.stdout.strip() == "0"


def test_redis_is_flushed_for_each_test(redis_server: RedisServer, redis_url: str) -> None:
    assert redis_url.startswith("redis://127.0.0.1:")
    assert redis_server.command("SET", "k", "v").startswith(b"+OK")
    assert redis_server.command("GET", "k") == b"$1\r\nv\r\n"
    redis_server.flush()
    assert redis_server.command("GET", "k") == b"$-1\r\n"
