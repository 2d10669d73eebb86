"""The real Codex CLI, Claude Code and Gemini CLI against the gateway (through Envoy, on the simulator).

Each client gets one prompt, answered by the simulator with a call of a tool the prompt names;
the client runs the tool itself, sends its result back, and prints the model's final answer,
which quotes that result. So one run covers: the client's own configuration for a custom
endpoint, its streaming parser, its tool loop, and the thought signature of the call coming
back intact (the model is a Gemini 3 one, whose backend refuses a wrong signature; the test
also checks the simulator got back exactly the signature it issued, not the bypass value).

The tools run real commands: the simulator fills a command argument with "sim-<name>", so a
`sim-command` / `sim-cmd` script on the client's PATH prints a marker; the Gemini CLI's
read_file reads a file named "sim-file_path" in its working directory.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.clients.conftest import CLIENT_MODEL, client_env
from tests.simulator.signatures import signature_for
from tests.stack_fixtures import Stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]  # the first test may install the CLIs
RUN_TIMEOUT = 300
MCP_SERVER = Path(__file__).resolve().parent / "mcp_server.py"


@pytest.fixture
def workspace(tmp_path: Path) -> dict[str, Path]:
    home, work, bin_dir = tmp_path / "home", tmp_path / "work", tmp_path / "bin"
    for d in (home, work, bin_dir):
        d.mkdir()
    for name, marker in (("sim-command", "MARKER-CLAUDE-7731"), ("sim-cmd", "MARKER-CODEX-4417")):
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\necho {marker}\n")
        script.chmod(0o755)
    return {"home": home, "work": work, "bin": bin_dir}


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"{argv[0]} exited {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
    return proc


def _signed_history(sim, tool: str) -> list[dict]:
    """Backend requests that replayed a call of `tool`; each must carry the signature issued for it."""
    replays = []
    for rec in sim.requests():
        # (the Gemini CLI resolves gemini-3-pro-preview to its newest 3.x Pro itself)
        if rec["op"] not in ("generate", "stream") or not rec["model"].startswith("gemini-3"):
            continue
        for turn in rec["body"]["request"]["contents"]:
            calls = [p for p in turn["parts"] if "functionCall" in p] if turn["role"] == "model" else []
            if calls and calls[0]["functionCall"]["name"] == tool:
                fc = calls[0]["functionCall"]
                assert calls[0].get("thoughtSignature") == signature_for(fc["name"], fc.get("args", {})), turn
                replays.append(turn)
    return replays


def test_codex_exec_with_a_responses_provider(clients, clients_stack: Stack, sim, workspace):
    key = clients_stack.key(name="codex-cli")
    codex_home = workspace["home"] / ".codex"
    codex_home.mkdir()
    (codex_home / "config.toml").write_text(f'''model = "{CLIENT_MODEL}"
model_provider = "gateway"

[model_providers.gateway]
name = "gemini-cli gateway"
base_url = "{clients_stack.public_base}/v1"
env_key = "GATEWAY_API_KEY"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0
''')
    # Codex runs commands in a login shell, which rebuilds PATH from the profile files.
    (workspace["home"] / ".bash_profile").write_text(f'export PATH="{workspace["bin"]}:$PATH"\n')
    env = client_env(workspace["home"], workspace["bin"], CODEX_HOME=str(codex_home), GATEWAY_API_KEY=key)
    proc = _run([str(clients["codex"]), "exec", "--skip-git-repo-check", "run exec_command"], env, workspace["work"])
    assert "MARKER-CODEX-4417" in proc.stdout
    assert "tool results: exec_command=" in proc.stdout
    assert _signed_history(sim, "exec_command")


def test_claude_print_mode_with_anthropic_base_url(clients, clients_stack: Stack, sim, workspace):
    key = clients_stack.key(name="claude-code")
    env = client_env(workspace["home"], workspace["bin"], ANTHROPIC_BASE_URL=clients_stack.public_base,
                     ANTHROPIC_API_KEY=key, CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1", DISABLE_AUTOUPDATER="1")
    # No --model: Claude Code sends its own Claude model names, which the gateway maps.
    proc = _run([str(clients["claude"]), "-p", "run Bash please", "--tools", "Bash", "--allowedTools", "Bash"],
                env, workspace["work"])
    assert proc.stdout.strip() == 'tool results: Bash={"output":"MARKER-CLAUDE-7731"}'
    assert _signed_history(sim, "Bash")
    sent = [r["model"] for r in sim.requests() if r["op"] in ("generate", "stream")]
    assert sent and set(sent) == {CLIENT_MODEL}


def test_claude_tool_search_loads_a_deferred_mcp_tool(clients, clients_stack: Stack, sim, workspace):
    """Claude Code declares MCP tools with defer_loading behind ToolSearch; the search result
    references the tool (a tool_reference block), which from then on is declared to Gemini."""
    key = clients_stack.key(name="claude-code-mcp")
    config = workspace["home"] / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"sim": {"type": "stdio", "command": sys.executable,
                                                         "args": [str(MCP_SERVER)]}}}))
    env = client_env(workspace["home"], workspace["bin"], ANTHROPIC_BASE_URL=clients_stack.public_base,
                     ANTHROPIC_API_KEY=key, CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1", DISABLE_AUTOUPDATER="1")
    proc = _run([str(clients["claude"]), "-p", "use ToolSearch", "--mcp-config", str(config), "--strict-mcp-config"],
                env, workspace["work"])
    # (a gateway refusing the tool_reference makes Claude Code retry, then drop tool search:
    # "[Tool references removed - tool search not enabled]")
    assert proc.stdout.startswith('tool results: ToolSearch={"output":"<functions><function>'), proc.stdout
    assert "mcp__sim__sim-query" in proc.stdout
    calls = [r for r in sim.requests() if r["op"] in ("generate", "stream")]
    declared = [[d["name"] for t in r["body"]["request"].get("tools", []) for d in t.get("functionDeclarations", [])]
                for r in calls]
    assert len(calls) == 2, declared
    assert "ToolSearch" in declared[0] and "mcp__sim__sim-query" not in declared[0]
    assert "mcp__sim__sim-query" in declared[1] and "DeferredToolPlaceholder" not in declared[1]


def test_gemini_cli_with_gemini_base_url(clients, clients_stack: Stack, sim, workspace):
    key = clients_stack.key(name="gemini-cli")
    settings = workspace["home"] / ".gemini" / "settings.json"
    settings.parent.mkdir()
    settings.write_text('{"security": {"auth": {"selectedType": "gemini-api-key"}},'
                        ' "privacy": {"usageStatisticsEnabled": false},'
                        ' "general": {"disableAutoUpdate": true, "disableUpdateNag": true}}')
    (workspace["work"] / "sim-file_path").write_text("MARKER-GEMINI-5150\n")
    env = client_env(workspace["home"], workspace["bin"], GOOGLE_GEMINI_BASE_URL=clients_stack.public_base,
                     GEMINI_API_KEY=key, GEMINI_CLI_TRUST_WORKSPACE="true")
    proc = _run([str(clients["gemini"]), "-p", "use read_file", "-m", CLIENT_MODEL], env, workspace["work"])
    assert 'tool results: read_file={"output":"MARKER-GEMINI-5150\\n"}' in proc.stdout
    assert _signed_history(sim, "read_file")
