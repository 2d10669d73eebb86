"""A new user's path: README → `make demo` → create a key as the README says → call it; then
Ctrl-C and start again at once: same ports (TIME_WAIT tolerated), same demo key, no extra key."""
from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from tests import harness
from tests.integration.test_envoy_demo import READY, Output, printed_curls

README = Path(harness.ROOT) / "README.md"


def readme_demo_key_command() -> list[str]:
    """The README's command that creates a key for the demo, exactly as written there."""
    lines = [ln.strip() for ln in README.read_text().splitlines()
             if "services.edge.keys" in ln and "--demo" in ln and " create " in ln]
    assert lines, "README shows no command creating a key for the demo"
    argv = shlex.split(lines[0])
    assert argv[0] == ".venv/bin/python"
    return [harness.PY, *argv[1:]]


def readme_usage_curls(port: int) -> list[str]:
    """The README's curl commands of its Usage section that the demo serves (no image URL to
    fetch, no embeddings: the demo pool is one Code Assist seat), as shell text aimed at
    `port` instead of 8080. A command runs from its `curl` line to the next blank, comment or
    `curl` line, or the end of its code block."""
    text = README.read_text().split("\n## Usage", 1)[1].split("\n## ", 1)[0]
    commands: list[str] = []
    current: list[str] | None = None
    for line in text.splitlines():
        ends = not line.strip() or line.startswith(("#", "curl ", "```"))
        if current is not None and ends:
            commands.append("\n".join(current))
            current = None
        if line.startswith("curl "):
            current = [line]
        elif current is not None:
            current.append(line)
    assert commands, "README's Usage shows no curl command"
    return [c.replace("127.0.0.1:8080", f"127.0.0.1:{port}") for c in commands
            if "https://" not in c and "embed" not in c]


def start_demo(env: dict[str, str]) -> tuple[subprocess.Popen, Output]:
    proc = subprocess.Popen([harness.PY, "-m", "deploy.local", "demo"], cwd=harness.ROOT, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = Output(proc)
    assert out.wait_for(lambda line: line.strip() == READY, timeout=90), out.text
    return proc, out


def stop(proc: subprocess.Popen, out: Output) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(timeout=40)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    out.wait_for(lambda line: False, timeout=1)
    assert code == 0, out.text


def demo_key(out: Output) -> str:
    m = re.search(r"Demo license key: (\S+)", out.text)
    assert m, out.text
    return m.group(1)


@pytest.mark.slow
def test_readme_key_works_on_the_demo_and_the_demo_keeps_its_key(tmp_path: Path):
    ports = {name: harness.free_port() for name in
             ("PORT", "EDGE_PORT", "UPSTREAM_PORT", "ENVOY_INTERNAL_PORT", "ENVOY_ADMIN_PORT", "SIMULATOR_PORT")}
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GEMINI_", "GOOGLE_", "CODE_ASSIST", "LICENSE_", "DATA_DIR"))}
    env.update({k: str(v) for k, v in ports.items()}, PYTHONUNBUFFERED="1", NO_COLOR="1",
               NO_PROXY="127.0.0.1,localhost", HOME=str(tmp_path))
    # A newcomer's checkout: DATA_DIR unset, so ./data relative to where they run things.
    workdir = tmp_path / "checkout"
    workdir.mkdir()
    env["DATA_DIR"] = str(workdir / "data")
    base = f"http://127.0.0.1:{ports['PORT']}/gemini_cli"

    proc, out = start_demo(env)
    try:
        first_key = demo_key(out)
        # The admin console's token, generated on this first start and shown once.
        admin = re.search(r"admin token \(shown this once, keep it\): (gwadmin-\S+)", out.text)
        assert admin, out.text
        admin_token = admin.group(1)
        created = subprocess.run(readme_demo_key_command(), cwd=harness.ROOT, env=env,
                                 capture_output=True, text=True, timeout=60)
        assert created.returncode == 0, created.stderr
        key = created.stdout.splitlines()[0].strip()
        assert f"database: {workdir / 'data' / 'demo' / 'licenses.db'}" in created.stderr
        with httpx.Client(timeout=30, trust_env=False) as client:
            r = client.post(f"{base}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                            json={"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi me"}]})
            assert r.status_code == 200, r.text
            assert "hi me" in r.json()["choices"][0]["message"]["content"]
            # The README's own curl commands, pasted into a shell with KEY set, answer.
            curls = readme_usage_curls(ports["PORT"])
            assert len(curls) >= 2
            for command in curls:
                done = subprocess.run(["bash", "-c", command + " -sS -o /dev/stdout -w '\\n%{http_code}'"],
                                      env={**env, "KEY": key}, capture_output=True, text=True, timeout=60)
                assert done.returncode == 0, (command, done.stderr)
                assert done.stdout.rstrip().endswith("200"), (command, done.stdout[-500:])
            # The base URL points at the APIs instead of a bare 404.
            index = client.get(f"{base}/")
            assert index.status_code == 200
            assert f"POST /gemini_cli/v1/chat/completions" in index.json()["apis"]["openai"]
            # ... and at the docs, which need no key.
            assert client.get(f"http://127.0.0.1:{ports['PORT']}{index.json()['docs']}").status_code == 200
            # The banner's command for more demo keys targets the same database.
            more = [ln.strip() for ln in out.lines if "services.edge.keys" in ln and " create " in ln]
            assert more, out.text
            made = subprocess.run(shlex.split(more[0]), cwd=harness.ROOT, env=env, capture_output=True,
                                  text=True, timeout=60)
            assert made.returncode == 0, made.stderr
            r = client.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {made.stdout.split()[0]}"})
            assert r.status_code == 200, r.text
    finally:
        stop(proc, out)

    # Straight back up on the same ports: the demo reuses its key.
    proc, out = start_demo(env)
    try:
        assert demo_key(out) == first_key
        assert admin_token not in out.text and "admin-token rotate" in out.text
        with httpx.Client(timeout=30, trust_env=False) as client:
            r = client.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {first_key}"})
            assert r.status_code == 200, r.text
            r = client.get(f"{base}/admin/api/keys", headers={"Authorization": f"Bearer {admin_token}"})
            assert r.status_code == 200 and "demo" in [k["name"] for k in r.json()["keys"]], r.text
    finally:
        stop(proc, out)
    listed = subprocess.run([harness.PY, "-m", "services.edge.keys", "--demo", "list"], cwd=harness.ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    names = [line.split()[1] for line in listed.stdout.splitlines()[1:] if line.strip()]
    assert names.count("demo") == 1, listed.stdout
