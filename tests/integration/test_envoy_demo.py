"""`make demo` as a newcomer uses it: start it, paste the curl commands it prints, Ctrl-C."""
from __future__ import annotations

import os
import queue
import shlex
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest

from tests import harness

READY = "Ctrl-C stops everything."


class Output:
    """The demo's combined output, read on a thread so the test never blocks on a pipe."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if line is None:
                return False
            self.lines.append(line)
            if predicate(line):
                return True
        return False

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def printed_curls(text: str) -> list[list[str]]:
    """Each curl command of the banner, joined across its `\\` continuation lines and split."""
    commands, current = [], None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("curl "):
            current = ""
        if current is None:
            continue
        current += stripped.removesuffix("\\") + " "
        if not stripped.endswith("\\"):
            commands.append(shlex.split(current))
            current = None
    return commands


def run_curl(argv: list[str], client: httpx.Client) -> httpx.Response:
    """Do what the pasted curl would do: POST -d DATA with each -H header to the URL."""
    assert argv[0] == "curl"
    headers, data, url = {}, None, None
    args = iter(argv[1:])
    for arg in args:
        if arg == "-H":
            name, _, value = next(args).partition(":")
            headers[name.strip()] = value.strip()
        elif arg == "-d":
            data = next(args)
        elif arg.startswith("-"):
            continue  # -sS, -N: output options
        else:
            url = arg
    assert url and data is not None, argv
    return client.post(url, headers=headers, content=data.encode())


@pytest.mark.slow
def test_make_demo_answers_the_printed_curl_and_stops_cleanly(tmp_path: Path):
    ports = {name: harness.free_port() for name in
             ("PORT", "EDGE_PORT", "UPSTREAM_PORT", "ENVOY_INTERNAL_PORT", "ENVOY_ADMIN_PORT", "SIMULATOR_PORT")}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEMINI_", "GOOGLE_", "CODE_ASSIST"))}
    env.update({k: str(v) for k, v in ports.items()}, DATA_DIR=str(tmp_path / "data"), PYTHONUNBUFFERED="1",
               NO_COLOR="1", NO_PROXY="127.0.0.1,localhost", HOME=str(tmp_path))
    proc = subprocess.Popen([harness.PY, "-m", "deploy.local", "demo"], cwd=harness.ROOT, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = Output(proc)
    try:
        assert out.wait_for(lambda line: line.strip() == READY, timeout=60), out.text
        banner_end = len(out.lines)
        assert f"http://127.0.0.1:{ports['PORT']}/gemini_cli" in out.text
        curls = printed_curls(out.text)
        assert len(curls) == 2, out.text

        with httpx.Client(timeout=30, trust_env=False) as client:
            chat = run_curl(curls[0], client)
            assert chat.status_code == 200, chat.text
            answer = chat.json()["choices"][0]["message"]["content"]
            assert "Hello from the demo" in answer  # the simulator echoes the prompt

            stream = run_curl(curls[1], client)
            assert stream.status_code == 200, stream.text
            events = [orjson.loads(line[5:]) for line in stream.text.splitlines() if line.startswith("data:")]
            text = "".join(p.get("text", "") for e in events for c in e["candidates"] for p in c["content"]["parts"])
            assert "Hello from the demo" in text

            # A key in the query string reaches the edge but never Envoy's access log.
            key = curls[0][curls[0].index("-H") + 1].split()[-1]
            marker = f"/gemini_cli/v1beta/models?key={key}"
            assert client.get(f"http://127.0.0.1:{ports['PORT']}{marker}").status_code == 200
        assert out.wait_for(lambda line: "GET /gemini_cli/v1beta/models " in line, timeout=10), out.text
        assert key not in "\n".join(out.lines[banner_end:])
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    out.wait_for(lambda line: False, timeout=1)  # drain what is left
    assert code == 0, out.text
    assert "all stopped" in out.text
    assert "Traceback" not in out.text
    # Every child is gone: nothing listens on the stack's ports any more.
    for port in ports.values():
        assert_not_listening(port)


def assert_not_listening(port: int) -> None:
    import socket

    with socket.socket() as sock:
        # As the servers do: connections left in TIME_WAIT do not count, a listener does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((harness.LOOPBACK, port))
