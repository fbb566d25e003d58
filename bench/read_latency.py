"""How long reading a stored report takes: the figure that justifies pre-computing it.

Two reads, each timed ``count`` times after a short warm-up (a reader is a long-lived process
with a warm connection pool): ``ReportStore.read``, the stored header and rows from one
snapshot; and ``ReportReader.read``, the same plus the staleness, which asks the source for the
scope's current watermark. The watermark query is also timed alone.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from precompute_assets.core.reader import ReportReader

WARM_UP = 20


def latency_ms(read: Callable[[], Any], count: int) -> dict[str, float | int]:
    """p50, p99 and worst of ``count`` timed calls, in milliseconds."""
    for _ in range(WARM_UP):
        read()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        read()
        samples.append((time.perf_counter() - started) * 1000)
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return {
        "reads": count,
        "p50_ms": round(statistics.median(samples), 3),
        "p99_ms": round(cuts[98], 3),
        "max_ms": round(max(samples), 3),
    }


def repeated_latency_ms(read: Callable[[], Any], count: int, rounds: int) -> dict[str, Any]:
    """``rounds`` rounds of ``count`` reads; the median round's p50 and p99, and every round's.

    A p99 is the worst 1% of a round: a burst of load from another process lands there, so one
    round alone says more about the machine than about the read.
    """
    measured = [latency_ms(read, count) for _ in range(rounds)]
    return {
        "reads": count,
        "rounds": rounds,
        "p50_ms": statistics.median(round_["p50_ms"] for round_ in measured),
        "p99_ms": statistics.median(round_["p99_ms"] for round_ in measured),
        "p99_ms_by_round": [round_["p99_ms"] for round_ in measured],
        "max_ms": max(round_["max_ms"] for round_ in measured),
    }


def measure_reads(
    reader: ReportReader, tool: str, scope: str, count: int, rounds: int
) -> dict[str, Any]:
    """Latency of the store's read (``rounds`` rounds) and of the reader's read (one round: each
    asks the source for a watermark, which is slow) of one stored report."""
    stored = reader.store.read(tool, scope)
    if stored is None:
        raise LookupError(f"no stored {tool} report for {scope!r} to read")
    report_tool = reader.tools[tool]
    return {
        "rows_per_read": len(stored[1]),
        "store_read": repeated_latency_ms(lambda: reader.store.read(tool, scope), count, rounds),
        "reader_read_with_staleness": latency_ms(lambda: reader.read(tool, scope), count),
        # What the staleness adds: the tool's watermark query against the source.
        "watermark_query": latency_ms(
            lambda: reader.current_watermark(report_tool, scope), max(count // 10, 10)
        ),
    }
