"""The properties of ``scan``: deterministic, idempotent, thread-safe, serialisable."""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from queue import Empty, SimpleQueue
from typing import Any

from sqlalchemy import Engine

from precompute_assets.checker.subject import ContractViolation, Subject, fresh_copy
from precompute_assets.checker.values import (
    MalformedReportError,
    _every_other,
    _json_copy,
    _json_problem,
    _report_difference,
    _round_trips,
    _same,
    _value_difference,
)
from precompute_assets.contract import Batch, ReportTool
from precompute_assets.core.db import connect

THREAD_PARTNERS = 5  # batches paired with a failing one to reproduce a race on two threads
THREAD_ROUNDS = 3


def deterministic(subject: Subject) -> tuple[int, str]:
    first = subject.scan_all(subject.tool, subject.batches)
    second_tool = fresh_copy(subject.original)
    second = subject.scan_all(second_tool, subject.batches)
    for batch, one, other in zip(subject.batches, first, second, strict=True):
        if not _same(one, other):
            raise ContractViolation(
                "deterministic",
                f"batch {batch.index} scanned by two independent runs",
                f"{_value_difference(one, other)}; {subject.consequence([one], [other])}",
            )
    subject.contributions = first
    subject.reference_total = subject.fold(first)
    reference = subject.report(subject.reference_total)
    if isinstance(reference, MalformedReportError):
        raise reference
    again = subject.report(subject.fold(second, second_tool), tool=second_tool, cached=False)
    difference = _report_difference(reference, again)
    if difference is not None:
        raise ContractViolation(
            "deterministic", "finalise of the same total by two independent runs", difference
        )
    return len(subject.batches) + 1, "2 independent runs: every contribution, the report"


def idempotent(subject: Subject) -> tuple[int, str]:
    again = [subject.tool.scan(subject.connection, batch) for batch in reversed(subject.batches)]
    again.reverse()
    for batch, first, second in zip(subject.batches, subject.contributions, again, strict=True):
        if not _same(first, second):
            raise ContractViolation(
                "idempotent",
                f"batch {batch.index} scanned a second time by the same tool instance",
                f"{_value_difference(first, second)}; {subject.consequence([first], [second])}",
            )
    ledger = subject.deliver_twice(again)
    difference = subject.difference(subject.reference_total, subject.fold(ledger))
    if difference is not None:
        raise ContractViolation("idempotent", "every batch delivered twice", difference)
    return len(subject.batches) + 1, "every batch scanned again, and delivered twice"


def thread_safe(subject: Subject) -> tuple[int, str]:
    deliveries = subject.batches * 2
    random.Random(subject.seed).shuffle(deliveries)
    outcomes = scan_concurrently(subject.tool, subject.engine, deliveries, subject.threads)
    for batch, outcome in outcomes:
        if not subject.as_sequential(batch, outcome):
            report_race(subject, batch, outcome)
    latest = {batch.index: outcome for batch, outcome in outcomes}
    total = subject.fold([latest[batch.index] for batch in subject.batches])
    difference = subject.difference(subject.reference_total, total)
    if difference is not None:
        raise ContractViolation(
            "thread-safe", f"batches scanned by {subject.threads} threads at once", difference
        )
    how = f"every batch scanned twice by {subject.threads} threads at once"
    return len(deliveries), how


def serialisable(subject: Subject) -> tuple[int, str]:
    for batch, contribution in zip(subject.batches, subject.contributions, strict=True):
        if not _round_trips(contribution):
            raise ContractViolation(
                "serialisable",
                f"batch {batch.index}'s contribution through ledger.encode/decode",
                f"{_json_problem(contribution) or 'JSON does not give it back equal'}; "
                + subject.decoded_consequence(),
            )
    subject.copy = _json_copy
    decoded = [_json_copy(contribution) for contribution in subject.contributions]
    mixed = _every_other(subject.contributions, decoded)
    for label, contributions in (("every", decoded), ("every other", mixed)):
        difference = subject.difference(subject.reference_total, subject.fold(contributions))
        if difference is not None:
            raise ContractViolation(
                "serialisable", f"{label} contribution decoded before the fold", difference
            )
    return len(subject.batches) + 2, "every contribution through the ledger's JSON; 2 folds"


def report_race(subject: Subject, batch: Batch, outcome: Any) -> None:
    """Raise thread-safe for the smallest set of concurrent batches that shows the race."""
    others = sorted(
        (b for b in subject.batches if b.index != batch.index),
        key=lambda b: abs(b.index - batch.index),
    )
    for partner in others[:THREAD_PARTNERS]:
        pair = sorted([batch, partner], key=lambda b: b.index)
        for _ in range(THREAD_ROUNDS):
            outcomes = scan_concurrently(subject.tool, subject.engine, pair * 3, 2)
            wrong = [(b, o) for b, o in outcomes if not subject.as_sequential(b, o)]
            if wrong:
                case = f"batches {[b.index for b in pair]} scanned at once by 2 threads"
                raise ContractViolation("thread-safe", case, subject.race_difference(*wrong[0]))
    case = f"{len(subject.batches)} batches scanned twice each by {subject.threads} threads at once"
    raise ContractViolation("thread-safe", case, subject.race_difference(batch, outcome))


def scan_concurrently(
    tool: ReportTool[Any], engine: Engine, deliveries: Sequence[Batch], threads: int
) -> list[tuple[Batch, Any]]:
    """Scan ``deliveries`` with ``threads`` workers started together, each on its own connection.

    Each outcome is the contribution or the exception the scan raised.
    """
    queue: SimpleQueue[Batch] = SimpleQueue()
    for batch in deliveries:
        queue.put(batch)
    start = threading.Barrier(threads)
    outcomes: list[tuple[Batch, Any]] = []

    def work() -> None:
        try:
            with connect(engine) as connection:
                start.wait()
                while True:
                    try:
                        batch = queue.get_nowait()
                    except Empty:
                        return
                    try:
                        outcomes.append((batch, tool.scan(connection, batch)))
                    except Exception as error:
                        outcomes.append((batch, error))
        except BaseException:
            start.abort()
            raise

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for future in [pool.submit(work) for _ in range(threads)]:
            future.result()
    return outcomes
