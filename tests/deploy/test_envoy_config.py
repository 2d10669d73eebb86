"""deploy/envoy.yaml and its renderer: one template, valid in every environment."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deploy.envoy_config import ConfigError, render, render_file, split_addr, values_from_env
from tests import harness
from tests.deploy.conftest import DEPLOY, DESCRIPTOR, ROOT, envoy_validate

TOKENS = str(harness.internal_auth().tokens_file)
LOCAL = dict(public_port=18080, internal_port=18090, admin_port=19901, edge_host="127.0.0.1", edge_port=18081,
             upstream_host="127.0.0.1", upstream_port=50551, descriptor_path=str(DESCRIPTOR),
             internal_tokens_file=TOKENS)


def listeners(cfg: dict) -> dict[str, dict]:
    return {lst["name"]: lst for lst in cfg["static_resources"]["listeners"]}


def hcm(listener: dict) -> dict:
    return listener["filter_chains"][0]["filters"][0]["typed_config"]


def http_filters(listener: dict) -> dict[str, dict]:
    return {f["name"]: f.get("typed_config", {}) for f in hcm(listener)["http_filters"]}


def test_placeholders_are_only_addresses_ports_paths_and_limits():
    text = (DEPLOY / "envoy.yaml").read_text()
    names = set(re.findall(r"\$\{(\w+)\}", text))
    assert names == {"ADMIN_PORT", "PUBLIC_PORT", "INTERNAL_PORT", "LISTEN_ADDRESS", "INTERNAL_LISTEN_ADDRESS",
                     "EDGE_ENDPOINTS", "UPSTREAM_ENDPOINTS", "DESCRIPTOR_PATH",
                     "INTERNAL_TOKENS_FILE", "MAX_HEAP_BYTES", "BODY_TIMEOUT", "MAX_BODY_BYTES",
                     "ACCESS_LOG_FILTER"}
    # No other "$" that string.Template would trip over.
    assert text.count("$") == len(re.findall(r"\$\{\w+\}", text))


def test_rendered_local_config_is_valid_envoy(tmp_path: Path):
    cfg = render_file(tmp_path / "envoy.yaml", **LOCAL)
    envoy_validate(cfg)


def test_rendered_config_keeps_streaming_and_safety_settings(tmp_path: Path):
    cfg = yaml.safe_load(render(**LOCAL, listen_address="0.0.0.0", body_timeout_seconds=45, max_body_bytes=1000))
    # Admin and the internal listener stay on loopback when the public listener serves every
    # interface.
    assert cfg["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 19901}
    lst = listeners(cfg)
    assert lst["public"]["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 18080}
    assert lst["internal"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 18090}

    public = hcm(lst["public"])
    route = public["route_config"]["virtual_hosts"][0]["routes"][0]
    assert route["match"] == {"path_separated_prefix": "/gemini_cli"}
    assert route["route"]["cluster"] == "edge"
    assert route["route"]["timeout"] == "0s"  # streams have no overall deadline
    assert public["generate_request_id"] is True and public["always_set_request_id_in_response"] is True
    # Nothing buffers requests or responses: only the health check and the router. Bodies
    # stream under small flow-control windows, with a deadline for the whole request.
    assert list(http_filters(lst["public"])) == ["envoy.filters.http.health_check", "envoy.filters.http.router"]
    for listener in lst.values():
        assert listener["per_connection_buffer_limit_bytes"] <= 64 * 1024
        h2 = hcm(listener)["http2_protocol_options"]
        assert h2["max_concurrent_streams"] <= 100 and h2["initial_stream_window_size"] <= 64 * 1024
        assert h2["initial_connection_window_size"] <= 1024 * 1024
        assert hcm(listener)["request_timeout"] == "45.000s"
        # Slow-loris headers are cut here (tests/hostile/test_http_abuse.py sees Envoy do it).
        assert hcm(listener)["request_headers_timeout"] == "10s"
    # Internal callers authenticate before the transcoder sees anything.
    internal_filters = list(http_filters(lst["internal"]))
    assert internal_filters[0] == "envoy.filters.http.basic_auth"
    assert http_filters(lst["internal"])["envoy.filters.http.basic_auth"]["users"] == {"filename": TOKENS}
    # Overload actions on heap size.
    overload = cfg["overload_manager"]
    assert {m["name"] for m in overload["resource_monitors"]} >= {"envoy.resource_monitors.fixed_heap"}
    assert {a["name"] for a in overload["actions"]} >= {"envoy.overload_actions.reset_high_memory_stream",
                                                         "envoy.overload_actions.stop_accepting_requests"}
    # The access log never prints a query string (`?key=` carries license keys).
    for listener in lst.values():
        for log in hcm(listener)["access_log"]:
            fmt = log["typed_config"]["log_format"]["text_format_source"]["inline_string"]
            assert "%PATH(NQ" in fmt and "%REQ(:PATH)%" not in fmt

    transcoder = http_filters(lst["internal"])["envoy.filters.http.grpc_json_transcoder"]
    assert transcoder["proto_descriptor"] == str(DESCRIPTOR)
    # REST bodies are converted whole, up to the gateway's body limit.
    assert transcoder["max_request_body_size"] == transcoder["max_response_body_size"] == 1000
    assert transcoder["services"] == ["gemini_cli.upstream.v1.Upstream"]
    clusters = {c["name"]: c for c in cfg["static_resources"]["clusters"]}
    assert clusters["edge"]["health_checks"][0]["http_health_check"]["path"] == "/healthz"
    assert "grpc_health_check" in clusters["upstream"]["health_checks"][0]


def test_envoy_body_limit_default_matches_the_edge_default():
    from deploy.envoy_config import DEFAULT_MAX_BODY_BYTES
    from services.edge.settings import EdgeSettings

    assert DEFAULT_MAX_BODY_BYTES == EdgeSettings.model_fields["max_body_bytes"].default


def test_internal_listener_address_is_its_own_setting():
    values = values_from_env({"ENVOY_LISTEN_ADDRESS": "0.0.0.0", "INTERNAL_TOKENS_FILE": TOKENS})
    assert values["listen_address"] == "0.0.0.0" and values["internal_listen_address"] == "127.0.0.1"
    values = values_from_env({"ENVOY_INTERNAL_LISTEN_ADDRESS": "10.0.0.5", "INTERNAL_TOKENS_FILE": TOKENS})
    assert values["internal_listen_address"] == "10.0.0.5"
    cfg = yaml.safe_load(render(**{**LOCAL, "internal_listen_address": "0.0.0.0"}))
    assert listeners(cfg)["internal"]["address"]["socket_address"]["address"] == "0.0.0.0"


@pytest.mark.parametrize("bad", [
    {"edge_host": "edge\n  evil: true"},
    {"upstream_host": "a b"},
    {"edge_endpoints": []},
    {"edge_endpoints": [("ok", 1), ("a\n  evil: true", 2)]},
    {"upstream_endpoints": [("ok", 0)]},
    {"listen_address": "0.0.0.0'"},
    {"public_port": 0},
    {"admin_port": "90x"},
    {"internal_port": 70000},
    {"admin_port": 18080},  # same as the public port
    {"internal_listen_address": "0.0.0.0 x"},
    {"internal_tokens_file": ""},
    {"max_heap_bytes": 0},
    {"max_body_bytes": 0},
    {"body_timeout_seconds": "soon"},
    {"access_log": "some"},
])
def test_render_refuses_values_that_would_change_the_document(bad: dict):
    with pytest.raises(ConfigError):
        render(**{**LOCAL, **bad})


def test_descriptor_path_stays_one_yaml_value():
    cfg = yaml.safe_load(render(**{**LOCAL, "descriptor_path": "/odd path/with: colon/#x.pb"}))
    transcoder = http_filters(listeners(cfg)["internal"])["envoy.filters.http.grpc_json_transcoder"]
    assert transcoder["proto_descriptor"] == "/odd path/with: colon/#x.pb"


def test_addresses_from_the_environment():
    assert split_addr("X", "edge:8081") == ("edge", 8081)
    assert split_addr("X", "[::1]:50051") == ("::1", 50051)
    with pytest.raises(ConfigError):
        split_addr("X", "edge")
    values = values_from_env({"EDGE_ADDR": "edge:9000", "UPSTREAM_ADDR": "up.ns.svc:50051", "PORT": "80",
                              "ENVOY_MAX_HEAP_BYTES": "2048"})
    assert values["edge_endpoints"] == [("edge", 9000)]
    assert values["upstream_endpoints"] == [("up.ns.svc", 50051)]
    assert values["public_port"] == "80" and values["max_heap_bytes"] == "2048"
    with pytest.raises(ConfigError):
        render(**{**LOCAL, **values_from_env({"ENVOY_MAX_HEAP_BYTES": "lots", "INTERNAL_TOKENS_FILE": TOKENS})})


def test_cli_renders_from_environment_and_reports_errors(tmp_path: Path):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "EDGE_ADDR": "edge:8081",
           "UPSTREAM_ADDR": "upstream:50051", "ENVOY_LISTEN_ADDRESS": "0.0.0.0", "ENVOY_DESCRIPTOR": str(DESCRIPTOR),
           "INTERNAL_TOKENS_FILE": TOKENS}
    out_file = tmp_path / "rendered" / "envoy.yaml"
    ok = subprocess.run([sys.executable, "-m", "deploy.envoy_config", "--out", str(out_file)], env=env,
                        capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    envoy_validate(out_file)

    bad = subprocess.run([sys.executable, "-m", "deploy.envoy_config", "--out", str(tmp_path / "x.yaml")],
                         env={**env, "UPSTREAM_ADDR": "no-port"}, capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2
    assert "UPSTREAM_ADDR must be host:port" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "x.yaml").exists()


def cluster_endpoints(cfg: dict, name: str) -> list[tuple[str, int]]:
    cluster = next(c for c in cfg["static_resources"]["clusters"] if c["name"] == name)
    return [(e["endpoint"]["address"]["socket_address"]["address"],
             e["endpoint"]["address"]["socket_address"]["port_value"])
            for group in cluster["load_assignment"]["endpoints"] for e in group["lb_endpoints"]]


def test_several_edges_and_upstreams_from_the_environment(tmp_path: Path):
    """ENVOY_EDGE_ADDRESSES / ENVOY_UPSTREAM_ADDRESSES list several of each; without them the
    single EDGE_ADDR / UPSTREAM_ADDR still work."""
    env = {"ENVOY_EDGE_ADDRESSES": "10.0.0.1:8081, 10.0.0.2:8081,edge-3:9000",
           "ENVOY_UPSTREAM_ADDRESSES": "up-a:50051,[::1]:50052", "EDGE_ADDR": "ignored:1",
           "ENVOY_DESCRIPTOR": str(DESCRIPTOR), "INTERNAL_TOKENS_FILE": TOKENS}
    cfg_file = render_file(tmp_path / "many.yaml", **values_from_env(env))
    cfg = yaml.safe_load(cfg_file.read_text())
    assert cluster_endpoints(cfg, "edge") == [("10.0.0.1", 8081), ("10.0.0.2", 8081), ("edge-3", 9000)]
    assert cluster_endpoints(cfg, "upstream") == [("up-a", 50051), ("::1", 50052)]
    envoy_validate(cfg_file)
    single = yaml.safe_load(render(**values_from_env({"EDGE_ADDR": "edge:8081", "UPSTREAM_ADDR": "upstream:50051",
                                                      "INTERNAL_TOKENS_FILE": TOKENS})))
    assert cluster_endpoints(single, "edge") == [("edge", 8081)]
    assert cluster_endpoints(single, "upstream") == [("upstream", 50051)]
    assert cluster_endpoints(yaml.safe_load(render(**LOCAL)), "edge") == [("127.0.0.1", 18081)]
    for bad in ({"ENVOY_EDGE_ADDRESSES": "a:1,no-port"}, {"ENVOY_UPSTREAM_ADDRESSES": "a:1,b:99999"},
                {"ENVOY_EDGE_ADDRESSES": " , "}):
        with pytest.raises(ConfigError):
            render(**values_from_env({**env, **bad}))


@pytest.mark.parametrize("mode", ["all", "errors", "off", "ERRORS"])
def test_every_access_log_mode_is_valid_envoy(tmp_path: Path, mode: str):
    cfg = render_file(tmp_path / "envoy.yaml", **LOCAL, access_log=mode)
    envoy_validate(cfg)
    for listener in listeners(yaml.safe_load(cfg.read_text())).values():
        (log,) = hcm(listener)["access_log"]
        assert log["filter"]  # every mode is a filter on the one logger; only its threshold moves


def test_access_log_and_concurrency_from_the_environment():
    from deploy.envoy_config import DEFAULT_CONCURRENCY, envoy_flags

    assert values_from_env({"INTERNAL_TOKENS_FILE": TOKENS})["access_log"] == "all"
    assert values_from_env({"ENVOY_ACCESS_LOG": "off", "INTERNAL_TOKENS_FILE": TOKENS})["access_log"] == "off"
    flags = envoy_flags({})
    assert flags[flags.index("--concurrency") + 1] == str(DEFAULT_CONCURRENCY) == "1"
    assert "--disable-hot-restart" in flags
    flags = envoy_flags({"ENVOY_CONCURRENCY": "4"})
    assert flags[flags.index("--concurrency") + 1] == "4"
    for bad in ("0", "two", "-1"):
        with pytest.raises(ConfigError):
            envoy_flags({"ENVOY_CONCURRENCY": bad})


def test_edge_connections_close_before_the_edge_closes_them():
    """Envoy drops an idle connection to the edge before the edge's keep-alive timeout does, so
    it never sends a request on a connection the edge is closing."""
    import ast

    cfg = yaml.safe_load(render(**LOCAL))
    edge = {c["name"]: c for c in cfg["static_resources"]["clusters"]}["edge"]
    options = edge["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    idle = float(options["common_http_protocol_options"]["idle_timeout"].removesuffix("s"))
    assert "http_protocol_options" in options["explicit_http_config"]  # uvicorn speaks HTTP/1.1 only
    tree = ast.parse((ROOT / "services" / "edge" / "__main__.py").read_text())
    keep_alive = [kw.value for node in ast.walk(tree) if isinstance(node, ast.Call)
                  for kw in node.keywords if kw.arg == "timeout_keep_alive"]
    assert keep_alive, "the edge's uvicorn keep-alive timeout is no longer set in services/edge/__main__.py"
    assert all(isinstance(v, ast.Constant) and idle < v.value for v in keep_alive), (idle, ast.dump(keep_alive[0]))
