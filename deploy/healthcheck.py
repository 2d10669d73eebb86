"""Container health probes, for Docker HEALTHCHECK (the images have no curl).

    python -m deploy.healthcheck http URL        200 → exit 0
    python -m deploy.healthcheck grpc HOST:PORT  grpc.health.v1 SERVING → exit 0
"""
from __future__ import annotations

import sys
import urllib.request


def http_ok(url: str, timeout: float = 3.0) -> bool:
    # No proxy: the probe always targets the container itself.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as resp:
            return resp.status == 200
    except OSError:
        return False


def grpc_serving(addr: str, timeout: float = 3.0) -> bool:
    # Imported here: the Envoy image has no grpcio and only uses the http probe.
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(addr) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("http", "grpc"):
        print("usage: python -m deploy.healthcheck http URL | grpc HOST:PORT", file=sys.stderr)
        return 2
    kind, target = argv
    ok = http_ok(target) if kind == "http" else grpc_serving(target)
    if not ok:
        print(f"unhealthy: {kind} {target}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
