"""The upstream's Prometheus metrics: calls per credential and outcome (recorded once per call,
where the servicer logs its line), and the pool's state read at scrape time (no hot-path cost).

Labels stay bounded: credentials are the operator's pool members, models outside the catalogue
are "other", outcomes are "ok", "cancelled" or a gRPC code/reason pair.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from services.metric_children import LabelChildren

log = logging.getLogger(__name__)

OTHER = "other"
STATES = ("READY", "COOLING", "DEAD", "DISABLED")
_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256,
                     0.512, 1.024, 4.096)


class PoolCollector(Collector):
    """Credential state, cool-down and quota gauges from the pool's report, per scrape."""

    def __init__(self, report: Callable[[], list], sharing: Callable[[], Any] | None = None) -> None:
        self._report = report
        self._sharing = sharing

    def collect(self) -> Iterable[GaugeMetricFamily]:
        # The scrape runs on the metrics thread while the loop changes the pool: retry the rare
        # "changed size during iteration" instead of failing the scrape.
        for _ in range(3):
            try:
                reports = self._report()
                break
            except RuntimeError:
                continue
        else:
            log.warning("pool report unavailable for this scrape")
            return
        now = time.time()
        state = GaugeMetricFamily("gateway_credential_state", "1 for the state each credential is in.",
                                  labels=("credential_id", "credential_kind", "state"))
        cooldown = GaugeMetricFamily("gateway_credential_cooldown_seconds",
                                     "Seconds until the credential's longest cool-down ends (0: none).",
                                     labels=("credential_id", "credential_kind"))
        cooling = GaugeMetricFamily("gateway_credential_cooling_models", "Models the credential is resting for.",
                                    labels=("credential_id", "credential_kind"))
        quota = GaugeMetricFamily("gateway_credential_quota_remaining_ratio",
                                  "Remaining quota fraction per model (Code Assist's retrieveUserQuota).",
                                  labels=("credential_id", "credential_kind", "model"))
        for r in reports:
            for s in STATES:
                state.add_metric((r.id, r.kind, s), 1.0 if r.state == s else 0.0)
            left = [until - now for until in r.cooling_until.values() if until > now]
            cooldown.add_metric((r.id, r.kind), max(left, default=0.0))
            cooling.add_metric((r.id, r.kind), float(len(left)))
            for model, (fraction, _reset) in r.quota.items():
                quota.add_metric((r.id, r.kind, model), float(fraction))
        yield from (state, cooldown, cooling, quota)
        sharing = self._sharing() if self._sharing is not None else None
        if sharing is not None:
            up = GaugeMetricFamily("gateway_upstream_sharing_up",
                                   "1 while Redis (REDIS_URL) answers and this replica shares pool state; 0: local "
                                   "state only.")
            up.add_metric((), 1.0 if sharing.connected else 0.0)
            yield up


class UpstreamMetrics:
    def __init__(self, report: Callable[[], list], known_model: Callable[[str], bool],
                 sharing: Callable[[], Any] | None = None) -> None:
        disable_created_metrics()  # no *_created series: half the samples, nothing a dashboard uses
        self.registry = CollectorRegistry(auto_describe=False)
        self._known_model = known_model
        self._child = LabelChildren()
        self.requests = Counter("gateway_upstream_requests", "Upstream calls by credential and outcome.",
                                ("gen_ai_operation_name", "credential_id", "credential_kind", "outcome"),
                                registry=self.registry)
        self.duration = Histogram("gen_ai_server_request_duration_seconds",
                                  "Upstream call time, backend included (streams: until the last chunk).",
                                  ("gen_ai_operation_name", "gen_ai_request_model", "credential_kind", "outcome"),
                                  buckets=_BUCKETS, registry=self.registry)
        self.overhead = Histogram("gateway_upstream_overhead_seconds",
                                  "Time a Generate call spent in the upstream itself: neither waiting on backend "
                                  "HTTP nor handing messages to gRPC (credential choice, token refreshes, "
                                  "envelopes, retries' bookkeeping).",
                                  ("gen_ai_operation_name", "gen_ai_request_model", "stream"),
                                  buckets=_OVERHEAD_BUCKETS, registry=self.registry)
        self.registry.register(PoolCollector(report, sharing))

    def observe_overhead(self, model: str, stream: bool, seconds: float) -> None:
        model = model if model and self._known_model(model) else OTHER
        self._child(self.overhead, "generate", model, "true" if stream else "false").observe(seconds)

    def observe(self, op: str, model: str, credential_id: str, credential_kind: str, outcome: str,
                seconds: float) -> None:
        model = model if model and self._known_model(model) else OTHER
        cred, kind = credential_id or "none", credential_kind or "none"
        self._child(self.requests, op, cred, kind, outcome).inc()
        self._child(self.duration, op, model, kind, outcome).observe(seconds)
