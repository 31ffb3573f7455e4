"""Prometheus metrics shared by every stage (labelled by stage so one process can host several)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

INGESTED = Counter("mmrag_messages_processed_total", "Messages a stage handled successfully", ["stage"])
FAILED = Counter("mmrag_messages_failed_total", "Message failures by error class", ["stage", "error_class"])
DLQ = Counter("mmrag_dlq_total", "Messages a stage sent to the DLQ", ["stage"])
RETRIES = Counter("mmrag_retries_total", "Batch retries after a retryable error", ["stage"])
OUTAGES = Counter("mmrag_backoffs_total", "Batches rewound because a dependency was down (back-pressure)", ["stage"])
STUCK_CALLS = Counter(
    "mmrag_stuck_calls_total",
    "Kafka client calls that blocked past their limit (the client is replaced, or the process restarts)",
    ["stage", "call"],
)
BACKPRESSURE = Gauge("mmrag_backpressure", "1 while the stage backs off from a broken dependency", ["stage"])
BATCH_SIZE = Histogram(
    "mmrag_batch_size", "Messages per processed batch", ["stage"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)
)
HANDLE_SECONDS = Histogram("mmrag_handle_seconds", "Handler time per batch", ["stage"], buckets=LATENCY_BUCKETS)
COMMIT_SECONDS = Histogram("mmrag_commit_seconds", "Produce+commit time per batch", ["stage"], buckets=LATENCY_BUCKETS)
QUEUE_WAIT = Histogram(
    "mmrag_queue_wait_seconds", "Kafka message timestamp to handling", ["stage"], buckets=LATENCY_BUCKETS
)
FETCH_SECONDS = Histogram(
    "mmrag_fetch_seconds", "Object store read per object (whole-object GET)", ["stage"], buckets=LATENCY_BUCKETS
)
LAG = Gauge("mmrag_consumer_lag", "High watermark minus committed position", ["stage", "topic", "partition"])
FRESHNESS = Histogram(
    "mmrag_freshness_seconds",
    "indexed_at minus the object's event time (exemplar: the upload's trace)",
    ["stage"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 120, 300, 600),
)
READY = Gauge("mmrag_ready", "1 while the service's /readyz answers 200 (set when /metrics is scraped)")
