"""What a started, serving edge and upstream have imported (issue #15, idle RSS): packages a
configuration does not use stay out of the process until something needs them.

The processes are the real `python -m services.edge` / `python -m services.upstream`, started as
every stack is (tests/harness.py), with PYTHONPROFILEIMPORTTIME=1: the interpreter then writes
one `import time:` line to stderr (the process's log) for every module it loads, so the log is
the process's sys.modules as it grew. Each process first serves a streamed and a unary answer,
so what a request path needs has been loaded too.
"""
from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests import harness

pytestmark = pytest.mark.timeout(180)

MODEL = "gemini-2.5-flash"

# Refused by services/unused_extras.py: a library's attempt to import one is in the trace (one
# line, the failed attempt), a load would bring its submodules.
REFUSED = "services/unused_extras.py refuses it"
# package (or module) -> why an idle process of this configuration (SQLite license store, no
# REDIS_URL, Code Assist credentials only) must not have loaded it.
EDGE_LAZY = {
    "asyncpg": "LICENSE_DB is SQLite",
    "redis": "REDIS_URL is unset",
    "services.edge.apidoc.openai_models": "loaded by the first /openapi.json",
    "services.edge.apidoc.gemini_models": "loaded by the first /openapi.json",
    "services.edge.apidoc.anthropic_models": "loaded by the first /openapi.json",
    "services.edge.apidoc.build": "loaded by the first /openapi.json",
    "fastapi_offline": "loaded by the first docs asset",
    "httpx": "the media fetcher's client is built by the first media URL",
    "google.protobuf.json_format": "loaded by the admin console's first credential view",
    "websockets": "the edge serves no WebSocket",
    "ctypes": "loaded by the first stats line (SIGUSR1, services/edge/stats.py)",
    # FastAPI's check for pydantic v1 models (the edge has none); uvicorn's reloader (it never reloads).
    **{name: REFUSED for name in ("pydantic.v1", "watchfiles")},
    # uvicorn's command line: uvicorn.main is a stand-in (unused_extras.uvicorn_without_command_line).
    **{name: "the edge runs uvicorn's Server, not its command line" for name in ("click", "uvicorn.supervisors")},
    "schemathesis": "a test tool",
    "pytest": "a test tool",
    **{name: REFUSED for name in ("trio", "rich", "pygments")},
}
UPSTREAM_LAZY = {
    "redis": "REDIS_URL is unset",
    "asyncpg": "the upstream has no database",
    "google.auth": "no Vertex AI service account in the pool",
    "cryptography": "no Vertex AI service account in the pool",
    **{name: "token refreshes go through the backends' aiohttp Transport (token_endpoint.py)"
       for name in ("httpx", "httpcore", "h2", "anyio")},
    "schemathesis": "a test tool",
    "pytest": "a test tool",
    **{name: REFUSED for name in ("trio", "rich", "pygments", "click")},
}


def imported(log: str) -> set[str]:
    """Every module named by the log's `import time:` lines (header line excluded)."""
    names = set()
    for line in log.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":
                names.add(name)
    return names


def loaded(modules: set[str], package: str) -> list[str]:
    return sorted(m for m in modules if m == package or m.startswith(package + "."))


def offenders(modules: set[str], lazy: dict[str, str]) -> dict[str, str]:
    found = {p: loaded(modules, p) for p in lazy}
    found = {p: [m for m in names if m != p] if lazy[p] == REFUSED else names for p, names in found.items()}
    return {f"{p} ({len(names)} modules)": lazy[p] for p, names in found.items() if names}


@pytest.fixture(scope="module")
def procs(tmp_path_factory, simulator):
    base = tmp_path_factory.mktemp("idle-imports")
    harness.write_credential(base / "creds" / "one.json", "rt-idle-imports")
    trace = {"PYTHONPROFILEIMPORTTIME": "1", "LOG_LEVEL": "WARNING"}
    up = harness.start_upstream(base / "logs", simulator.url, base / "creds", trace)
    try:
        edge = harness.start_edge(base / "logs", up.addr, base / "data", trace)
    except BaseException:
        up.stop()
        raise
    try:
        key = harness.create_key(edge, "--name", "idle-imports")
        yield up, edge, key
    finally:
        edge.stop()
        up.stop()


def _serve_some(edge: harness.Proc, key: str) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "idle [len=6] [chunks=3]"}]}]}
    url = f"{edge.url}/gemini_cli/v1beta/models/{MODEL}"
    with httpx.Client(trust_env=False, timeout=60, headers={"x-goog-api-key": key}) as http:
        streamed = http.post(f"{url}:streamGenerateContent?alt=sse", json=body)
        assert streamed.status_code == 200 and streamed.text.count("data: ") == 3, streamed.text[:500]
        unary = http.post(f"{url}:generateContent", json=body)
        assert unary.status_code == 200, unary.text[:500]
        chat = http.post(f"{edge.url}/gemini_cli/v1/chat/completions",
                         json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
        assert chat.status_code == 200, chat.text[:500]


def test_serving_processes_leave_unused_packages_unloaded(procs):
    up, edge, key = procs
    _serve_some(edge, key)
    edge_modules, up_modules = imported(edge.log()), imported(up.log())
    # The trace is there: the modules every edge and upstream loads are in it.
    assert {"services.edge.app", "fastapi", "grpc"} <= edge_modules, sorted(edge_modules)[:50]
    assert {"services.upstream.server", "aiohttp", "grpc"} <= up_modules, sorted(up_modules)[:50]
    assert not offenders(edge_modules, EDGE_LAZY), offenders(edge_modules, EDGE_LAZY)
    assert not offenders(up_modules, UPSTREAM_LAZY), offenders(up_modules, UPSTREAM_LAZY)


def test_docs_load_what_they_need_on_first_use(procs):
    """The lazy parts still arrive when asked for (and the check above can see them)."""
    _, edge, _ = procs
    with httpx.Client(trust_env=False, timeout=60) as http:
        doc = http.get(f"{edge.url}/gemini_cli/openapi.json")
        assert doc.status_code == 200 and "/gemini_cli/v1/chat/completions" in doc.json()["paths"]
        schemas = doc.json()["components"]["schemas"]
        assert {"ChatCompletionRequest", "GenerateContentRequest", "MessagesRequest"} <= set(schemas)
        asset = http.get(f"{edge.url}/gemini_cli/docs/assets/swagger-ui.css")
        assert asset.status_code == 200 and len(asset.content) > 1000
    modules = imported(edge.log())
    for package in ("services.edge.apidoc.openai_models", "services.edge.apidoc.build", "fastapi_offline"):
        assert loaded(modules, package), f"{package} not loaded after the docs were served"


def test_services_run_without_docstrings(procs):
    """Both services re-execute themselves under python -OO (services/docstrings.py)."""
    up, edge, _ = procs
    for proc in (up, edge):
        argv = Path(f"/proc/{proc.popen.pid}/cmdline").read_bytes().split(b"\0")
        assert b"-OO" in argv, (proc.name, argv)
