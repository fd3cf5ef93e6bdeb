"""Prometheus metrics of the operator (served on --metrics-port at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

TRIALS = Gauge(
    "kubetune_trials", "Trials by state, per experiment.", ["namespace", "experiment", "state"]
)
RESULTS = Counter("kubetune_results_processed_total", "Results fed to the engine.")
DECISION_LATENCY = Histogram(
    "kubetune_decision_latency_seconds",
    "From the sidecar's report of a gated result to the verdict written.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0),
)
API_WRITES = Counter("kubetune_api_writes_total", "Writes to the Kubernetes API.", ["method"])
API_ERRORS = Counter("kubetune_api_errors_total", "Failed Kubernetes API calls.", ["code"])
EXPERIMENTS = Gauge("kubetune_experiments", "Experiments by phase.", ["phase"])


def serve(port: int) -> None:
    if port:
        start_http_server(port)
