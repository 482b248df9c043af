"""The endpoint's Prometheus metrics, served at `GET /metrics` in the text format.

- `sdod_requests_total{route, status}`: answered requests (route: `invocations`, `infer`,
  `ping`, `health`, `metadata`, `metrics`, `other`);
- `sdod_request_duration_seconds{route}`: from the request's head to its answer;
- `sdod_batch_size`: images per forward pass; `sdod_batch_duration_seconds`: its time;
- `sdod_queue_depth`: images waiting for the model (summed over workers);
- `sdod_images_total{outcome}`: images predicted, refused as busy, or failed.

With several worker processes each writes its samples under `PROMETHEUS_MULTIPROC_DIR`
(the server sets it to a fresh folder before the workers start) and any worker answers
`/metrics` for all of them.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    """This process's metrics (in their own registry, or the multiprocess folder's)."""

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get(MULTIPROCESS_ENV))
        registry = None if self.multiprocess else CollectorRegistry()
        self.registry = registry
        self.requests = Counter(
            "sdod_requests", "Answered requests", ["route", "status"], registry=registry
        )
        self.latency = Histogram(
            "sdod_request_duration_seconds", "From request head to answer", ["route"],
            buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.batch_size = Histogram(
            "sdod_batch_size", "Images per forward pass", buckets=BATCH_BUCKETS, registry=registry
        )
        self.batch_seconds = Histogram(
            "sdod_batch_duration_seconds", "Seconds per forward pass",
            buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.queue = Gauge(
            "sdod_queue_depth", "Images waiting for the model",
            multiprocess_mode="livesum", registry=registry,
        )  # fmt: skip
        self.images = Counter(
            "sdod_images", "Images by outcome (predicted, busy, failed)", ["outcome"],
            registry=registry,
        )  # fmt: skip

    def batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        assert self.registry is not None
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
