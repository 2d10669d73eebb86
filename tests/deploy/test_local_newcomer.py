"""The checks a newcomer meets at `make run` / `make demo` (deploy/local_checks.py,
services/edge/data_dir.py): ports left in TIME_WAIT, the shared data directory."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest

from deploy.local_checks import SetupError, check_ports_free
from services.edge.data_dir import resolve_data_dir
from services.edge.keys import build_parser, cli_settings


def _time_wait_port() -> int:
    """A port whose last connection the server side closed first: it sits in TIME_WAIT."""
    with socket.socket() as server:
        # As uvicorn, gRPC and Envoy do; their connections inherit it.
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        conn, _ = server.accept()
        conn.close()  # active close on the server's side → TIME_WAIT bound to `port`
        client.recv(1)
        client.close()
    return port


def test_port_in_time_wait_counts_as_free():
    port = _time_wait_port()
    check_ports_free({"PORT": port})


def test_port_with_a_listener_is_refused():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        with pytest.raises(SetupError, match="already in use"):
            check_ports_free({"PORT": sock.getsockname()[1]})


@pytest.mark.parametrize("env,demo,override,expected", [
    ({}, False, None, "data"),
    ({}, True, None, "data/demo"),
    ({"DATA_DIR": "/srv/gw"}, False, None, "/srv/gw"),
    ({"DATA_DIR": "/srv/gw"}, True, None, "/srv/gw/demo"),
    ({"DATA_DIR": "/srv/gw"}, True, "/other", "/other/demo"),
])
def test_one_rule_for_the_data_directory(env, demo, override, expected):
    assert resolve_data_dir(env, demo=demo, override=override) == Path(expected).resolve()


def test_cli_demo_flag_uses_the_demo_database_whatever_license_db_says(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("LICENSE_DB", str(tmp_path / "elsewhere.db"))
    args = build_parser().parse_args(["--demo", "list"])
    assert cli_settings(args).license_db_location == str(tmp_path.resolve() / "demo" / "licenses.db")
    args = build_parser().parse_args(["--data-dir", str(tmp_path / "x"), "list"])
    assert cli_settings(args).data_dir == (tmp_path / "x").resolve()
