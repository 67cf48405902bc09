"""The inference service's Prometheus metrics (served on AFINA_INFERENCE_METRICS_PORT)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

CALLS = Counter("afina_inference_calls_total", "gRPC calls by method and status code", ["method", "code"])
CALL_SECONDS = Histogram("afina_inference_call_seconds", "gRPC call duration", ["method"], buckets=LATENCY_BUCKETS)
FIRST_TOKEN_SECONDS = Histogram("afina_inference_first_token_seconds", "From a call's arrival to its first token",
                                buckets=LATENCY_BUCKETS)
TOKENS = Counter("afina_inference_generated_tokens_total", "Tokens generated")
TOKENS_PER_SECOND = Gauge("afina_inference_tokens_per_second", "Tokens per second of the last generated batch")
QUEUE_DEPTH = Gauge("afina_inference_queue_depth", "Requests waiting for a batch")
BATCH_SIZE = Histogram("afina_inference_batch_size", "Requests generated together",
                       buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32))
SERVING_VERSION = Gauge("afina_inference_serving_version", "The champion version served (-1: none yet)")
LOADED_ADAPTERS = Gauge("afina_inference_loaded_adapters", "Adapter versions in memory")
HTTP_REQUESTS = Counter("afina_inference_http_requests_total", "OpenAI-compatible HTTP requests by route and status",
                        ["path", "status"])
HTTP_SECONDS = Histogram("afina_inference_http_request_seconds", "OpenAI-compatible HTTP request duration (a stream: "
                         "to its end)", ["path"], buckets=LATENCY_BUCKETS)
SWAPS = Counter("afina_inference_swaps_total", "Champion switches")

SERVING_VERSION.set(-1)
