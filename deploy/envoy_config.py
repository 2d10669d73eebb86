"""Render deploy/envoy.yaml, the one Envoy configuration of every environment.

The template differs between `make run`, docker compose and Kubernetes only in addresses,
ports, file paths and a few limits, so those are its only placeholders.

    render_file(path, public_port=..., ...)       local processes and tests
    python -m deploy.envoy_config --out FILE      containers: values from the environment

Environment of the command line (defaults are those of `make run`):
    PORT                  public listener port                         8080
    ENVOY_INTERNAL_PORT   internal gRPC/REST listener port             8090
    ENVOY_ADMIN_PORT      admin port (always bound to 127.0.0.1)       9901
    ENVOY_LISTEN_ADDRESS  address the public listener binds            127.0.0.1
    ENVOY_INTERNAL_LISTEN_ADDRESS  address the internal listener binds 127.0.0.1
    INTERNAL_TOKENS_FILE  internal callers, `name:{SHA}hash` lines     (required)
    EDGE_ADDR             where the edge listens, host:port            127.0.0.1:8081
    UPSTREAM_ADDR         where the upstream listens, host:port        127.0.0.1:50051
    ENVOY_EDGE_ADDRESSES  several edges, `host:port,host:port`         (EDGE_ADDR)
                          (each name is resolved with STRICT_DNS: a headless Service's name
                          stands for all its pods)
    ENVOY_UPSTREAM_ADDRESSES  several upstreams, the same way          (UPSTREAM_ADDR)
    ENVOY_DESCRIPTOR      descriptor set from `make proto`             <repo>/gen/upstream.pb
    ENVOY_TEMPLATE        template to render                           deploy/envoy.yaml
    ENVOY_MAX_HEAP_BYTES  heap size the overload actions are scaled to 805306368 (768 MiB)
    ENVOY_BODY_TIMEOUT_SECONDS  deadline for receiving a whole request 60
    MAX_BODY_BYTES        largest REST body (and unary answer) the     33554432 (32 MiB)
                          internal listener transcodes; public bodies stream to the edge,
                          which applies the same limit itself
    ENVOY_ACCESS_LOG      which requests get an access-log line:        all
                          all, errors (status >= 400 or an Envoy response flag), off
    ENVOY_CONCURRENCY     Envoy's worker threads (a command-line flag,  1
                          see envoy_flags(), not part of the file)

Only the standard library is used: the Envoy image has no other Python package.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from string import Template
from typing import Mapping, Sequence

TEMPLATE = Path(__file__).with_name("envoy.yaml")
DEFAULT_DESCRIPTOR = Path(__file__).resolve().parents[1] / "gen" / "upstream.pb"

# Overload actions act on fractions of this heap size; leave room below the container's
# memory limit (1 GiB in deploy/k8s) for what the heap does not count.
DEFAULT_MAX_HEAP_BYTES = 768 * 1024 * 1024
# Time a client gets to send a whole request, body included (unless answered earlier).
DEFAULT_BODY_TIMEOUT_SECONDS = 60
# The edge's default MAX_BODY_BYTES, also the internal listener's transcoding limit.
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024

# Worker threads. Envoy's own default is one per hardware thread, of the whole node in a
# container. One worker proxies thousands of requests a second here, more than an edge
# serves; a second one on a 2-core box with a single-threaded edge and upstream measured
# ~10% more CPU per request and more memory for its own connection pools.
DEFAULT_CONCURRENCY = 1

# ENVOY_ACCESS_LOG -> the access loggers' `filter` (a YAML flow mapping, as JSON). A
# status-code filter on `>= 0` passes every request, `>= 1000` none.
ACCESS_LOG_FILTERS = {
    "all": {"status_code_filter": {"comparison": {
        "op": "GE", "value": {"default_value": 0, "runtime_key": "access_log.min_status"}}}},
    # Failures only: error statuses, and whatever Envoy flagged (resets, timeouts, an edge it
    # could not reach), which covers a stream cut after its 200.
    "errors": {"or_filter": {"filters": [
        {"status_code_filter": {"comparison": {
            "op": "GE", "value": {"default_value": 400, "runtime_key": "access_log.min_status"}}}},
        {"response_flag_filter": {}}]}},
    "off": {"status_code_filter": {"comparison": {
        "op": "GE", "value": {"default_value": 1000, "runtime_key": "access_log.min_status"}}}},
}
DEFAULT_ACCESS_LOG = "all"

# Hostnames, IPv4 and bare IPv6 literals. Anything else (spaces, quotes, YAML syntax) could
# change the structure of the rendered document, so it is refused instead of escaped.
_HOST = re.compile(r"^[A-Za-z0-9_.:-]+$")


class ConfigError(ValueError):
    """A value that cannot go into the Envoy configuration."""


def _port(name: str, value: int | str) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a port number, got {value!r}") from None
    if not 0 < port < 65536:
        raise ConfigError(f"{name} must be between 1 and 65535, got {port}")
    return port


def _host(name: str, value: str) -> str:
    host = value.strip().removeprefix("[").removesuffix("]")
    if not _HOST.match(host):
        raise ConfigError(f"{name} must be a hostname or IP address, got {value!r}")
    return host


def split_addr(name: str, addr: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port)."""
    host, sep, port = addr.strip().rpartition(":")
    if not sep or not host:
        raise ConfigError(f"{name} must be host:port, got {addr!r}")
    return _host(name, host), _port(name, port)


def _positive(name: str, value: int | float | str, kind=int) -> int | float:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if number <= 0:
        raise ConfigError(f"{name} must be positive, got {value!r}")
    return number


def _access_log_filter(mode: str) -> dict:
    try:
        return ACCESS_LOG_FILTERS[str(mode).strip().lower()]
    except KeyError:
        raise ConfigError(f"ENVOY_ACCESS_LOG must be one of {', '.join(ACCESS_LOG_FILTERS)}, got {mode!r}") from None


def envoy_flags(env: Mapping[str, str]) -> list[str]:
    """Envoy's command-line flags besides `-c FILE` and `--log-level`, for every launcher:
    no hot restart (it needs shared memory, and nothing here restarts Envoy in place), the
    access log flushed every second, and ENVOY_CONCURRENCY worker threads."""
    concurrency = _positive("ENVOY_CONCURRENCY", env.get("ENVOY_CONCURRENCY") or DEFAULT_CONCURRENCY)
    return ["--disable-hot-restart", "--file-flush-interval-msec", "1000", "--concurrency", str(concurrency)]


Endpoint = tuple[str, int]


def split_addrs(name: str, addrs: str) -> list[Endpoint]:
    """'host:port,host:port' -> [(host, port), ...] (at least one)."""
    out = [split_addr(name, a) for a in addrs.split(",") if a.strip()]
    if not out:
        raise ConfigError(f"{name} must list at least one host:port")
    return out


def _endpoints(name: str, endpoints: Sequence[Endpoint] | None, host: str | None, port: int | None) -> str:
    """Envoy lb_endpoints as a YAML flow sequence (JSON), from a list or a single host and port."""
    if endpoints is None:
        if host is None or port is None:
            raise ConfigError(f"{name}: give an address or a list of them")
        endpoints = [(host, port)]
    if not endpoints:
        raise ConfigError(f"{name}: the list of addresses is empty")
    return json.dumps([{"endpoint": {"address": {"socket_address": {
        "address": _host(name, h), "port_value": _port(name, p)}}}} for h, p in endpoints])


def render(*, public_port: int, internal_port: int, admin_port: int, descriptor_path: str,
           internal_tokens_file: str, edge_host: str | None = None, edge_port: int | None = None,
           upstream_host: str | None = None, upstream_port: int | None = None,
           edge_endpoints: Sequence[Endpoint] | None = None,
           upstream_endpoints: Sequence[Endpoint] | None = None, listen_address: str = "127.0.0.1",
           internal_listen_address: str = "127.0.0.1", max_heap_bytes: int = DEFAULT_MAX_HEAP_BYTES,
           body_timeout_seconds: float = DEFAULT_BODY_TIMEOUT_SECONDS,
           max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, access_log: str = DEFAULT_ACCESS_LOG,
           template: Path = TEMPLATE) -> str:
    """The Envoy configuration for these addresses, as YAML text. Edges and upstreams are each
    either one `*_host`/`*_port` pair or a list of (host, port) in `*_endpoints`, which wins."""
    if not str(internal_tokens_file).strip():
        raise ConfigError("INTERNAL_TOKENS_FILE must name the file of internal callers")
    values = {
        "PUBLIC_PORT": _port("public port", public_port),
        "INTERNAL_PORT": _port("internal port", internal_port),
        "ADMIN_PORT": _port("admin port", admin_port),
        "LISTEN_ADDRESS": _host("listen address", listen_address),
        "INTERNAL_LISTEN_ADDRESS": _host("internal listen address", internal_listen_address),
        "EDGE_ENDPOINTS": _endpoints("edge address", edge_endpoints, edge_host, edge_port),
        "UPSTREAM_ENDPOINTS": _endpoints("upstream address", upstream_endpoints, upstream_host, upstream_port),
        # A JSON string is a valid YAML double-quoted scalar: any path stays one value.
        "DESCRIPTOR_PATH": json.dumps(str(descriptor_path)),
        "INTERNAL_TOKENS_FILE": json.dumps(str(internal_tokens_file)),
        "MAX_HEAP_BYTES": _positive("ENVOY_MAX_HEAP_BYTES", max_heap_bytes),
        "MAX_BODY_BYTES": _positive("MAX_BODY_BYTES", max_body_bytes),
        # A protobuf Duration: seconds with at most nanosecond digits.
        "BODY_TIMEOUT": f"{_positive('ENVOY_BODY_TIMEOUT_SECONDS', body_timeout_seconds, float):.3f}s",
        "ACCESS_LOG_FILTER": json.dumps(_access_log_filter(access_log)),
    }
    ports = [values[k] for k in ("PUBLIC_PORT", "INTERNAL_PORT", "ADMIN_PORT")]
    if len(set(ports)) != len(ports):
        raise ConfigError(f"public, internal and admin ports must differ, got {ports}")
    # substitute() (not safe_substitute) so a placeholder without a value is an error here,
    # not a confusing parse error inside Envoy.
    try:
        return Template(Path(template).read_text()).substitute(values)
    except KeyError as exc:
        raise ConfigError(f"{template}: placeholder ${{{exc.args[0]}}} has no value") from None
    except ValueError as exc:  # a stray "$" in the template
        raise ConfigError(f"{template}: {exc}") from None


def render_file(path: str | os.PathLike[str], **values) -> Path:
    """Render to `path`, atomically: Envoy never reads a half-written file."""
    path = Path(path)
    text = render(**values)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def values_from_env(env: Mapping[str, str]) -> dict:
    """render() arguments from environment variables (see the module docstring)."""
    edges = (split_addrs("ENVOY_EDGE_ADDRESSES", env["ENVOY_EDGE_ADDRESSES"])
             if env.get("ENVOY_EDGE_ADDRESSES", "").strip()
             else [split_addr("EDGE_ADDR", env.get("EDGE_ADDR", "127.0.0.1:8081"))])
    upstreams = (split_addrs("ENVOY_UPSTREAM_ADDRESSES", env["ENVOY_UPSTREAM_ADDRESSES"])
                 if env.get("ENVOY_UPSTREAM_ADDRESSES", "").strip()
                 else [split_addr("UPSTREAM_ADDR", env.get("UPSTREAM_ADDR", "127.0.0.1:50051"))])
    return {
        "public_port": env.get("PORT", "8080"),
        "internal_port": env.get("ENVOY_INTERNAL_PORT", "8090"),
        "admin_port": env.get("ENVOY_ADMIN_PORT", "9901"),
        "listen_address": env.get("ENVOY_LISTEN_ADDRESS", "127.0.0.1"),
        # Never follows ENVOY_LISTEN_ADDRESS: serving the public API to other hosts must not
        # open the internal one too.
        "internal_listen_address": env.get("ENVOY_INTERNAL_LISTEN_ADDRESS", "127.0.0.1"),
        "internal_tokens_file": env.get("INTERNAL_TOKENS_FILE", ""),
        "max_heap_bytes": env.get("ENVOY_MAX_HEAP_BYTES", DEFAULT_MAX_HEAP_BYTES),
        "body_timeout_seconds": env.get("ENVOY_BODY_TIMEOUT_SECONDS", DEFAULT_BODY_TIMEOUT_SECONDS),
        "max_body_bytes": env.get("MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES),
        "access_log": env.get("ENVOY_ACCESS_LOG") or DEFAULT_ACCESS_LOG,
        "edge_endpoints": edges,
        "upstream_endpoints": upstreams,
        "descriptor_path": env.get("ENVOY_DESCRIPTOR", str(DEFAULT_DESCRIPTOR)),
        "template": Path(env.get("ENVOY_TEMPLATE", str(TEMPLATE))),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.envoy_config",
        description="Render deploy/envoy.yaml from environment variables (see the module doc).")
    parser.add_argument("--out", required=True, help="file to write the rendered configuration to")
    parser.add_argument("--flags", action="store_true",
                        help="also print Envoy's command-line flags (envoy_flags()) on stdout, one line")
    args = parser.parse_args(argv)
    try:
        flags = envoy_flags(os.environ)
        out = render_file(args.out, **values_from_env(os.environ))
    except (ConfigError, OSError) as exc:
        print(f"envoy_config: {exc}", file=sys.stderr)
        return 2
    print(f"envoy_config: wrote {out}", file=sys.stderr)
    if args.flags:
        print(" ".join(flags))
    return 0


if __name__ == "__main__":
    sys.exit(main())
