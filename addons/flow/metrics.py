"""Prometheus metrics of the gateway process, served by the admin API at ``/metrics``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()

REQUESTS = Counter(
    "warden_requests", "Flows finished, by fate and decision", ["fate", "decision"], registry=REGISTRY
)
TOTAL_LATENCY = Histogram(
    "warden_request_duration_seconds", "Time from request start to the response event, per flow",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60), registry=REGISTRY,
)
UPSTREAM_LATENCY = Histogram(
    "warden_upstream_duration_seconds", "Time the upstream took to answer",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60), registry=REGISTRY,
)
COMMIT_LATENCY = Histogram(
    "warden_store_commit_seconds", "Time one group commit took",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5), registry=REGISTRY,
)
EVENTS = Counter("warden_store_events", "Events committed to the store", registry=REGISTRY)
COMMIT_FAILURES = Counter("warden_store_commit_failures", "Events the store failed to commit", registry=REGISTRY)
QUEUE_DEPTH = Gauge("warden_store_queue_depth", "Events waiting for the store writer", registry=REGISTRY)

PII_LATENCY = Histogram(
    "warden_pii_analysis_seconds", "Time PII analysis took per body (cache included)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=REGISTRY,
)
PII_CACHE = Counter("warden_pii_cache", "Analysis units served from the cache or analysed", ["result"],
                    registry=REGISTRY)
PII_FINDINGS = Counter("warden_pii_findings", "Entities masked, by entity and direction", ["entity", "direction"],
                       registry=REGISTRY)
PII_RESTARTS = Counter("warden_pii_restarts", "Times the PII analyzer pool was replaced", registry=REGISTRY)
PII_FAILURES = Counter("warden_pii_failures", "Requests refused because PII analysis failed", registry=REGISTRY)
ANSWER_DECISIONS = Counter("warden_answer_decisions", "Answers blocked or masked by answer rules, by decision and rule",
                           ["decision", "rule"], registry=REGISTRY)


def record_commit(batch: int, seconds: float) -> None:
    EVENTS.inc(batch)
    COMMIT_LATENCY.observe(seconds)
