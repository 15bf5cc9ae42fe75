"""Loyalty calls in Prometheus and OpenTelemetry, through the client's hooks and tracing.

``make_client()`` gives a client that counts retries by operation and error, times every
attempt, and traces each call and attempt with the global OpenTelemetry tracer provider.
"""

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from rees46_loyalty import Hooks, LoyaltyClient, ResponseRecord, RetryRecord

REGISTRY = CollectorRegistry()  # or prometheus_client.REGISTRY, the default one
RETRIES = Counter(
    "rees46_retries", "Loyalty attempts retried", ["operation", "error"], registry=REGISTRY
)
ATTEMPTS = Histogram(
    "rees46_attempt_seconds", "Loyalty attempt duration", ["operation"], registry=REGISTRY
)


def count_retry(record: RetryRecord) -> None:
    """One more retry of *record.operation* after *record.error_type*."""
    RETRIES.labels(record.operation, record.error_type).inc()


def time_attempt(record: ResponseRecord) -> None:
    """How long the attempt took, answered or not."""
    ATTEMPTS.labels(record.operation).observe(record.elapsed)


def make_client(**options: Any) -> LoyaltyClient:
    """A client from the environment, with metrics and traces."""
    return LoyaltyClient.from_env(
        hooks=Hooks(on_retry=count_retry, on_response=time_attempt),
        tracing=True,  # pip install 'rees46-loyalty[otel]'; spans go to the global provider
        **options,
    )
