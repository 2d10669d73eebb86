"""The banner a local start prints once the stack is ready: its addresses, keys and curls to try."""
from __future__ import annotations

import os
import shlex
from pathlib import Path

from deploy.local_checks import LOOPBACK, PY, ROOT_PATH, Ports

DEMO_MODEL = "gemini-2.5-flash"


def curl_examples(base: str, key: str) -> str:
    q = shlex.quote
    chat = ('{"model": "%s", "messages": [{"role": "user", "content": "Hello from the demo"}]}' % DEMO_MODEL)
    native = '{"contents": [{"role": "user", "parts": [{"text": "Hello from the demo"}]}]}'
    return "\n".join([
        "  OpenAI-compatible:",
        f"    curl -sS {base}/v1/chat/completions \\",
        f"      -H {q('Authorization: Bearer ' + key)} -H 'Content-Type: application/json' \\",
        f"      -d {q(chat)}",
        "",
        "  Gemini-native, streamed:",
        f"    curl -sS -N {q(base + '/v1beta/models/' + DEMO_MODEL + ':streamGenerateContent?alt=sse')} \\",
        f"      -H {q('x-goog-api-key: ' + key)} -H 'Content-Type: application/json' \\",
        f"      -d {q(native)}",
    ])


def banner(mode: str, ports: Ports, listen: str, data_dir: Path, key: str | None,
           internal_listen: str = LOOPBACK, tokens_file: Path | None = None,
           admin_token: str | None = None) -> str:
    host = LOOPBACK if listen in ("0.0.0.0", "::") else listen
    internal_host = LOOPBACK if internal_listen in ("0.0.0.0", "::") else internal_listen
    base = f"http://{host}:{ports.public}{ROOT_PATH}"
    metrics_host = os.environ.get("METRICS_LISTEN") or LOOPBACK
    metrics_host = LOOPBACK if metrics_host in ("0.0.0.0", "::") else metrics_host
    metrics_ports = (os.environ.get("EDGE_METRICS_PORT") or "9464", os.environ.get("UPSTREAM_METRICS_PORT") or "9465")
    rule = "=" * 78
    lines = [
        rule,
        f"gemini-cli gateway ({mode}) is ready: {base}",
        f"  OpenAI API    {base}/v1        (chat/completions, models)",
        f"  Gemini API    {base}/v1beta    (models/{{model}}:generateContent, ...)",
        f"  internal gRPC / REST (Envoy -> upstream): {internal_host}:{ports.internal}",
        f"  metrics: http://{metrics_host}:{metrics_ports[0]}/metrics (edge), "
        f"http://{metrics_host}:{metrics_ports[1]}/metrics (upstream)",
    ]
    if tokens_file is not None:
        lines += [
            "    internal callers authenticate (curl -u NAME:TOKEN); add one with",
            f"    {shlex.quote(PY)} -m deploy.internal_tokens add NAME --file {shlex.quote(str(tokens_file))}",
            "    (prints its token), then restart.",
        ]
    # The demo's data directory is $DATA_DIR/demo: the CLI's --demo finds it from the base.
    base_dir, demo_flag = (data_dir.parent, " --demo") if key is not None else (data_dir, "")
    keys_cli = f"{shlex.quote(PY)} -m services.edge.keys --data-dir {shlex.quote(str(base_dir))}{demo_flag}"
    lines.append(f"  Admin console {base}/admin")
    if admin_token:
        lines.append(f"    admin token (shown this once, keep it): {admin_token}")
    else:
        lines.append(f"    admin token: ADMIN_TOKEN, or the one printed at first start; a new one: "
                     f"{keys_cli} admin-token rotate")
    if key is None:
        lines += [
            "",
            "Create a license key for your clients (printed once):",
            f"  {keys_cli} create --name me",
        ]
    else:
        lines += [
            "",
            f"Demo license key: {key}",
            "Try it (answers come from the Code Assist simulator, no Google account involved):",
            "",
            curl_examples(base, key),
            "",
            "More keys for the demo (its own database, never the one of `make run`):",
            f"  {keys_cli} create --name me",
        ]
    lines += ["", "Ctrl-C stops everything.", rule]
    return "\n".join(lines)
