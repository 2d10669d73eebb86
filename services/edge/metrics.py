"""The edge's Prometheus metrics, named after the OpenTelemetry gen_ai semantic conventions.

Everything is recorded once per request, in `EdgeMetrics.observe` (called by `Meter.finish`,
where every request ends with its ledger row), so the counters match the ledger and nothing is
done per streamed event. Labels stay bounded: key names (as many as the operator made), the
API, the operation, models the upstream's catalogue lists (anything else is "other"), the
credential kind that served the call and the HTTP status.
"""
from __future__ import annotations

import time
import logging
from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from services.metric_children import LabelChildren

log = logging.getLogger(__name__)

OTHER = "other"
_LABELS = ("key", "api", "gen_ai_operation_name", "gen_ai_request_model", "credential_kind", "outcome")
_DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
# gen_ai.client.token.usage's advised buckets.
_TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
_TPOT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5)
# The gateway's own time is milliseconds, unless it fetches media.
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256,
                     0.512, 1.024, 4.096)


class KeyQuotaCollector(Collector):
    """Quota left per key (keys with a quota that this process has seen), read at scrape time
    from the limiter's counters: no database query, nothing done per request."""

    def __init__(self, quotas: Callable[[], Iterable[tuple[str, int, int]]]) -> None:
        self._quotas = quotas  # () -> (key name, quota, tokens used) for each key with a quota

    def collect(self) -> Iterable[GaugeMetricFamily]:
        # The scrape runs on the metrics thread while the loop changes the maps: retry the rare
        # "changed size during iteration" instead of failing the scrape.
        for _ in range(3):
            try:
                rows = list(self._quotas())
                break
            except RuntimeError:
                continue
        else:
            log.warning("key quotas unavailable for this scrape")
            return
        remaining = GaugeMetricFamily("gateway_key_quota_remaining_tokens",
                                      "Tokens left of each key's total quota (ledger total plus this edge's "
                                      "tokens not yet written).", labels=("key",))
        limit = GaugeMetricFamily("gateway_key_quota_tokens", "Each key's total token quota.", labels=("key",))
        for name, quota, used in rows:
            remaining.add_metric((name,), float(max(0, quota - used)))
            limit.add_metric((name,), float(quota))
        yield remaining
        yield limit


class EdgeMetrics:
    def __init__(self, known_model: Callable[[str], bool] = lambda m: False,
                 key_name: Callable[[int], str | None] = lambda key_id: None) -> None:
        disable_created_metrics()  # no *_created series: half the samples, nothing a dashboard uses
        self.registry = CollectorRegistry(auto_describe=False)
        self._known_model = known_model
        self._key_name = key_name
        self._child = LabelChildren()
        r = self.registry
        self.requests = Counter("gateway_requests", "Requests that reached a route, by how they ended.",
                                _LABELS, registry=r)
        self.duration = Histogram("gen_ai_client_operation_duration_seconds",
                                  "Whole request time at the edge, first byte in to last byte out.",
                                  _LABELS, buckets=_DURATION_BUCKETS, registry=r)
        self.tokens = Histogram("gen_ai_client_token_usage", "Tokens per request, by type (as billed to the ledger).",
                                ("key", "api", "gen_ai_operation_name", "gen_ai_request_model", "credential_kind",
                                 "gen_ai_token_type"), buckets=_TOKEN_BUCKETS, registry=r)
        self.ttft = Histogram("gen_ai_server_time_to_first_token_seconds",
                              "Streams: time from the request to the upstream's first chunk.",
                              ("key", "api", "gen_ai_request_model", "credential_kind"),
                              buckets=_DURATION_BUCKETS, registry=r)
        self.tpot = Histogram("gen_ai_server_time_per_output_token_seconds",
                              "Streams: time after the first chunk per output token.",
                              ("key", "api", "gen_ai_request_model", "credential_kind"),
                              buckets=_TPOT_BUCKETS, registry=r)
        self.open_streams = Gauge("gateway_open_streams", "Streamed Generate calls to the upstream now open.",
                                  registry=r)
        self.overhead = Histogram("gateway_overhead_seconds",
                                  "Time a generation spent in the edge, not waiting for the upstream: request "
                                  "start to the upstream call, plus the work on each chunk (streams) or on the "
                                  "answer (unary).", ("api", "gen_ai_request_model", "stream"),
                                  buckets=_OVERHEAD_BUCKETS, registry=r)

    def watch_quotas(self, quotas: Callable[[], Iterable[tuple[str, int, int]]]) -> None:
        self.registry.register(KeyQuotaCollector(quotas))

    def model_label(self, model: str) -> str:
        return model if model and self._known_model(model) else OTHER

    def observe(self, *, key_id: int, api: str, op: str, model: str, credential_kind: str, status: int,
                started: float, first_at: float | None, prompt: int, completion: int, thoughts: int,
                overhead: float | None = None) -> None:
        key = self._key_name(key_id) or str(key_id)
        model = self.model_label(model)
        kind = credential_kind or "none"
        now = time.perf_counter()
        outcome = str(status)
        self._child(self.requests, key, api, op, model, kind, outcome).inc()
        self._child(self.duration, key, api, op, model, kind, outcome).observe(now - started)
        if prompt or completion or thoughts:
            for token_type, n in (("input", prompt), ("output", completion), ("reasoning", thoughts)):
                self._child(self.tokens, key, api, op, model, kind, token_type).observe(n)
        if overhead is not None:
            self._child(self.overhead, api, model, "true" if op == "stream" else "false").observe(overhead)
        if first_at is not None:
            self._child(self.ttft, key, api, model, kind).observe(first_at - started)
            if completion > 0:
                self._child(self.tpot, key, api, model, kind).observe((now - first_at) / completion)
