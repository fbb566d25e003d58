"""Prometheus metrics: requests by route and status, latency, reports served by staleness,
refreshes launched versus coalesced.

With several service processes, each writes its samples under ``PROMETHEUS_MULTIPROC_DIR``
(``precompute serve`` sets it) and ``/metrics`` adds up every process's, whichever answers.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"

REQUESTS = Counter(
    "precompute_http_requests", "HTTP requests answered", ["route", "method", "status"]
)
LATENCY = Histogram(
    "precompute_http_request_duration_seconds",
    "time from a request's arrival to its answer's last byte",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
REPORTS_SERVED = Counter(
    "precompute_reports_served",
    "reports answered (304s included), by how stale they were",
    ["tool", "staleness"],
)
REFRESHES = Counter(
    "precompute_refreshes",
    "on-demand refresh requests, by whether they launched a run or joined one in flight",
    ["tool", "outcome"],
)
CONTENT_TYPE = CONTENT_TYPE_LATEST


@functools.cache
def report_served(tool: str, staleness: str) -> Any:
    """The counter of reports served of ``tool`` at ``staleness``, looked up once (tools and
    staleness labels are few)."""
    return REPORTS_SERVED.labels(tool, staleness)


def exposition() -> bytes:
    """Every metric in Prometheus's text format, of every service process."""
    if os.environ.get(MULTIPROCESS_DIR):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest()


class MetricsMiddleware:
    """Counts and times every HTTP request by its route's template (not its path: scopes are
    unbounded, labels must not be). Pure ASGI, with each label set's samples looked up once."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._samples: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            count, latency = self._samples_of(
                getattr(scope.get("route"), "path", "unmatched"), scope["method"], status
            )
            count.inc()
            latency.observe(time.perf_counter() - started)

    def _samples_of(self, template: str, method: str, status: int) -> tuple[Any, Any]:
        found = self._samples.get((template, method, status))
        if found is None:
            found = REQUESTS.labels(template, method, str(status)), LATENCY.labels(template)
            self._samples[(template, method, status)] = found
        return found
