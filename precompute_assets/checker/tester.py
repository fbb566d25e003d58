"""The contract checker: Apache Beam's ``CombineFnTester`` for report tools.

The framework scans batches in parallel, in any order, more than once, cut at any size, and
checkpoints every contribution as JSON. A tool that only works when none of that happens gives
wrong reports in production and right ones in a demo. ``check_tool`` therefore computes one
scope's report from the real source in the ways the framework may take and demands the same
report (the DataFrame after ``validate_report``, sorted by ``entity_id``) from each. It backs
``precompute check-tool TOOL [--scope SCOPE]`` and the pytest helper
``assert_tool_obeys_contract``, which raises ``ContractViolation``.

The properties, checked in this order and stopping at the first one broken. Each check assumes
the ones before it held, so the property named is the cause, not a symptom of an earlier one:

``deterministic``
    Two independent runs (fresh copies of the tool, batches in order) scan equal contributions
    and finalise equal reports. Broken by time, randomness or anything outside the source.
``idempotent``
    Every batch scanned again by the same tool instance, after all the others, gives an equal
    contribution, and delivering every batch twice (the ledger upserts by batch) leaves the
    report as it was. Broken by hidden per-instance state, such as a counter.
``thread-safe``
    Every batch scanned twice by several threads at once, each with its own connection, gives
    its sequential contribution. Broken by state kept on ``self`` between a query and its use.
``serialisable``
    Every contribution comes back from ``ledger.encode``/``decode`` unchanged, and folds of
    decoded contributions (all of them, or every other one as when finalise rescans a lost batch)
    give the same report. Broken by tuples, int keys, sets, NaN or numpy values.
``identity``
    ``merge(empty(), c)`` and ``merge(c, empty())`` equal ``c`` for every batch's contribution.
``commutative``
    ``merge(a, b) == merge(b, a)`` on pairs of real contributions.
``associative``
    ``merge(merge(a, b), c) == merge(a, merge(b, c))`` on triples of real contributions, and the
    same report when all are merged, in batch order, as a right fold, a balanced tree, random
    pairs of neighbours, or contiguous shards whose partial folds are merged.
``order-agnostic``
    Left folds in reversed and in seeded shuffled orders give the same report. The laws above
    see pairs and triples of single batches; this sees a merge whose order matters only on the
    larger partial totals of a fold.
``batch-agnostic``
    Other batch sizes (a third and three times the checked one) give the same report. Broken by
    contributions that do not add up, such as a count of the batches a field appears in.

The merge laws compare contributions after encode/decode normalisation; the ways of folding
compare reports. Equal totals give equal reports (finalise was found deterministic), so only a
total that differs costs a finalise query: a tool that passes costs two. A failure is shrunk to
the smallest case found (one batch, a pair, a triple, else the shortest run of batches) and
shows how the report changes, e.g.
``commutative: merge(batch 0, batch 1) differs from merge(batch 1, batch 0): ...``.

One ``initialise`` gives the extent (and its params, such as ``as_of``) for the whole check, as
in a job; the check reads the source and writes nothing.

Example::

    def test_my_tool_obeys_the_contract(source_engine):
        assert_tool_obeys_contract(MyTool(), source_engine, "t1-s001")
"""

from __future__ import annotations

import copy
import math
import numbers
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from itertools import combinations, islice
from queue import Empty, SimpleQueue
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine

from precompute_assets.contract import (
    REPORT_COLUMNS,
    Batch,
    Extent,
    MalformedReportError,
    ReportTool,
    ScopeNotFoundError,
    validate_report,
)
from precompute_assets.core.db import connect
from precompute_assets.core.ledger import decode, encode
from precompute_assets.core.plan import JobPlan, plan_shards
from precompute_assets.core.reader import UnknownScopeError
from precompute_assets.core.settings import Settings
from precompute_assets.core.text import format_table
from precompute_assets.core.window import reference_params

PROPERTIES: tuple[str, ...] = (
    "deterministic",
    "idempotent",
    "thread-safe",
    "serialisable",
    "identity",
    "commutative",
    "associative",
    "order-agnostic",
    "batch-agnostic",
)
SCOPES_CONSIDERED = 20  # the default scope is the largest of the tool's first scopes
MIN_BATCHES = 6  # fewer batches than this and there is too little to shuffle, pair or split
THREADS = 4
SHUFFLES = 5
RANDOM_PAIRINGS = 3
LAW_CASES = 60  # pairs and triples of batches on which merge laws are checked directly
SHRINK_SUBSETS = 2_000  # pairs, then triples, tried when shrinking a failing fold
SHRINK_REPORTS = 30  # finalise queries one shrink may spend before settling
THREAD_PARTNERS = 5  # batches paired with a failing one to reproduce a race on two threads
THREAD_ROUNDS = 3

ReportOrError = pd.DataFrame | MalformedReportError
_MISSING = object()


class ContractViolation(AssertionError):
    """A tool broke a contract property; the message names it and the smallest case found.

    ``str(violation)`` reads ``"{property}: {case}: {difference}"``.
    """

    def __init__(self, property: str, case: str, difference: str) -> None:
        super().__init__(f"{property}: {case}: {difference}")
        self.property = property
        self.case = case
        self.difference = difference


@dataclass(frozen=True)
class PropertyCheck:
    """One line of the summary: a property, how many cases were compared, how, and the result."""

    property: str
    cases: int | None
    how: str
    result: str  # "ok", "BROKEN" or "not run"


@dataclass(frozen=True)
class CheckResult:
    """What ``check_tool`` compared on which scope, and the violation it found, if any."""

    tool: str
    scope: str
    why_scope: str
    entity_count: int
    batch_size: int
    batch_count: int
    note: str  # why the batch size differs from the one asked for, or ""
    checks: list[PropertyCheck]
    violation: ContractViolation | None
    reports_computed: int
    seconds: float

    @property
    def ok(self) -> bool:
        return self.violation is None


def check_tool(
    tool: ReportTool[Any],
    source: Engine,
    scope: str | None = None,
    *,
    batch_size: int = Settings.model_fields["batch_size"].default,
    max_shards: int = Settings.model_fields["max_shards"].default,
    threads: int = THREADS,
    seed: int = 0,
) -> CheckResult:
    """Check ``tool`` on one scope of ``source``; a violation is returned, not raised.

    Without ``scope`` the largest of the tool's first ``SCOPES_CONSIDERED`` scopes is checked.
    The batch size is lowered when the scope would have fewer than ``MIN_BATCHES`` batches.
    Raises ``UnknownScopeError`` for a scope the tool does not find.
    """
    started = time.perf_counter()
    with connect(source) as connection:
        scope, extent, why_scope = _scope_and_extent(tool, connection, scope)
        size = _batch_size_for(extent, batch_size)
        plan = JobPlan(tool.name, scope, 1, extent, size, resumed=False, started_at=0.0)
        checker = _Checker(tool, source, connection, plan, max_shards, threads, seed)
        checks, violation = checker.run()
    note = "" if size == batch_size else f"lowered from {batch_size:,} to get enough batches"
    return CheckResult(
        tool=tool.name,
        scope=scope,
        why_scope=why_scope,
        entity_count=extent.entity_count,
        batch_size=size,
        batch_count=plan.batch_count,
        note=note,
        checks=checks,
        violation=violation,
        reports_computed=checker.reports_computed,
        seconds=round(time.perf_counter() - started, 2),
    )


def assert_tool_obeys_contract(
    tool: ReportTool[Any], source: Engine, scope: str | None = None, **options: Any
) -> CheckResult:
    """``check_tool`` for tests: the result when every property holds, else ContractViolation."""
    result = check_tool(tool, source, scope, **options)
    if result.violation is not None:
        raise result.violation
    return result


def format_check(result: CheckResult) -> str:
    """The summary the command line prints: the scope, a table of the properties, a verdict."""
    size = f"{result.batch_size:,}" + (f" ({result.note})" if result.note else "")
    lines = [
        f"{result.tool} on scope {result.scope} ({result.why_scope}): "
        f"{result.entity_count:,} entities in {result.batch_count} batches of {size}",
        "",
        format_table(
            ["property", "cases", "how", "result"],
            [
                [c.property, "-" if c.cases is None else str(c.cases), c.how, c.result]
                for c in result.checks
            ],
        ),
        "",
    ]
    timing = f"{result.reports_computed} reports computed in {result.seconds:.1f}s"
    if result.batch_count == 0:
        lines.append("the scope has no entities, so only empty() and finalise were checked")
    if result.violation is None:
        lines.append(f"all {len(result.checks)} properties hold; {timing}")
    else:
        lines.append(f"BROKEN {result.violation}")
        lines.append(f"stopped at the first broken property; {timing}")
    return "\n".join(lines)


def _scope_and_extent(
    tool: ReportTool[Any], connection: Connection, scope: str | None
) -> tuple[str, Extent, str]:
    """The scope to check, its one extent, and why it was chosen."""
    if scope is not None:
        return scope, _initialise(tool, connection, scope), "as asked"
    candidates = tool.scopes(connection)[:SCOPES_CONSIDERED]
    extents: dict[str, Extent] = {}
    for candidate in candidates:
        try:
            extents[candidate] = tool.initialise(connection, candidate)
        except ScopeNotFoundError:
            continue  # deleted since scopes() listed it
    if not extents:
        raise UnknownScopeError(f"tool {tool.name!r} finds no scope in the source to check")
    largest = max(extents, key=lambda name: extents[name].entity_count)
    chosen = _with_reference(tool, extents[largest])
    return largest, chosen, f"the largest of the first {len(candidates)} scopes"


def _initialise(tool: ReportTool[Any], connection: Connection, scope: str) -> Extent:
    try:
        return _with_reference(tool, tool.initialise(connection, scope))
    except ScopeNotFoundError as error:
        raise UnknownScopeError(f"unknown scope {scope!r} for {tool.name}: {error}") from None


def _with_reference(tool: ReportTool[Any], extent: Extent) -> Extent:
    """The extent with the reference times a job gives its batches."""
    return replace(extent, params={**extent.params, **reference_params(tool, time.time())})


def _batch_size_for(extent: Extent, batch_size: int) -> int:
    if extent.entity_count == 0 or extent.entity_count >= MIN_BATCHES * batch_size:
        return batch_size
    return max(1, extent.entity_count // MIN_BATCHES)


@dataclass(frozen=True)
class _Arrangement:
    """One way of folding the batches' contributions, applicable to any subset of them.

    Shrinking applies it to pairs and triples of batches to find the smallest that differs
    from the left fold in batch order.
    """

    property: str
    fold: Callable[[Sequence[int]], Any]  # the total of these batches, folded this way
    describe: Callable[[Sequence[int]], str]  # the case, e.g. "batches [3, 0] folded ..."


class _Checker:
    """One check of one tool on one scope: the reference run, then each property in turn."""

    def __init__(
        self,
        tool: ReportTool[Any],
        engine: Engine,
        connection: Connection,
        plan: JobPlan,
        max_shards: int,
        threads: int,
        seed: int,
    ) -> None:
        self.original = tool
        self.tool = _fresh_copy(tool)  # the first run's instance; it merges and finalises
        self.engine = engine
        self.connection = connection
        self.plan = plan
        self.batches = [plan.batch(index) for index in range(plan.batch_count)]
        self.max_shards = max_shards
        self.threads = max(2, threads)
        self.seed = seed
        self.contributions: list[Any] = []  # the reference: batch by batch, first run
        self.reference_total: Any = None
        self.reports_computed = 0
        self._reports: dict[str, ReportOrError] = {}
        # Stored contributions are copied before each merge, in case merge mutates its inputs;
        # once they are known to survive JSON, a JSON round trip is the faster copy.
        self._copy: Callable[[Any], Any] = copy.deepcopy

    def run(self) -> tuple[list[PropertyCheck], ContractViolation | None]:
        steps: list[Callable[[], tuple[int, str]]] = [
            self.deterministic,
            self.idempotent,
            self.thread_safe,
            self.serialisable,
            self.identity,
            self.commutative,
            self.associative,
            self.order_agnostic,
            self.batch_agnostic,
        ]
        checks: list[PropertyCheck] = []
        for name, step in zip(PROPERTIES, steps, strict=True):
            try:
                cases, how = step()
            except ContractViolation as violation:
                checks.append(PropertyCheck(name, None, "see below", "BROKEN"))
                rest = PROPERTIES[len(checks) :]
                checks += [PropertyCheck(other, None, "", "not run") for other in rest]
                return checks, violation
            checks.append(PropertyCheck(name, cases, how, "ok" if cases else "no cases"))
        return checks, None

    # -- the properties ---------------------------------------------------------------------

    def deterministic(self) -> tuple[int, str]:
        first = self._scan_all(self.tool, self.batches)
        second_tool = _fresh_copy(self.original)
        second = self._scan_all(second_tool, self.batches)
        for batch, one, other in zip(self.batches, first, second, strict=True):
            if not _same(one, other):
                raise ContractViolation(
                    "deterministic",
                    f"batch {batch.index} scanned by two independent runs",
                    f"{_value_difference(one, other)}; {self._consequence([one], [other])}",
                )
        self.contributions = first
        self.reference_total = self.fold(first)
        reference = self.report(self.reference_total)
        if isinstance(reference, MalformedReportError):
            raise reference
        again = self.report(self.fold(second, second_tool), tool=second_tool, cached=False)
        difference = _report_difference(reference, again)
        if difference is not None:
            raise ContractViolation(
                "deterministic", "finalise of the same total by two independent runs", difference
            )
        return len(self.batches) + 1, "2 independent runs: every contribution, the report"

    def idempotent(self) -> tuple[int, str]:
        again = [self.tool.scan(self.connection, batch) for batch in reversed(self.batches)]
        again.reverse()
        for batch, first, second in zip(self.batches, self.contributions, again, strict=True):
            if not _same(first, second):
                raise ContractViolation(
                    "idempotent",
                    f"batch {batch.index} scanned a second time by the same tool instance",
                    f"{_value_difference(first, second)}; {self._consequence([first], [second])}",
                )
        ledger = self._deliver_twice(again)
        difference = self.difference(self.reference_total, self.fold(ledger))
        if difference is not None:
            raise ContractViolation("idempotent", "every batch delivered twice", difference)
        return len(self.batches) + 1, "every batch scanned again, and delivered twice"

    def thread_safe(self) -> tuple[int, str]:
        deliveries = self.batches * 2
        random.Random(self.seed).shuffle(deliveries)
        outcomes = _scan_concurrently(self.tool, self.engine, deliveries, self.threads)
        for batch, outcome in outcomes:
            if not self._as_sequential(batch, outcome):
                self._report_race(batch, outcome)
        latest = {batch.index: outcome for batch, outcome in outcomes}
        total = self.fold([latest[batch.index] for batch in self.batches])
        difference = self.difference(self.reference_total, total)
        if difference is not None:
            raise ContractViolation(
                "thread-safe", f"batches scanned by {self.threads} threads at once", difference
            )
        how = f"every batch scanned twice by {self.threads} threads at once"
        return len(deliveries), how

    def serialisable(self) -> tuple[int, str]:
        for batch, contribution in zip(self.batches, self.contributions, strict=True):
            if not _round_trips(contribution):
                raise ContractViolation(
                    "serialisable",
                    f"batch {batch.index}'s contribution through ledger.encode/decode",
                    f"{_json_problem(contribution) or 'JSON does not give it back equal'}; "
                    + self._decoded_consequence(),
                )
        self._copy = _json_copy
        decoded = [_json_copy(contribution) for contribution in self.contributions]
        mixed = _every_other(self.contributions, decoded)
        for label, contributions in (("every", decoded), ("every other", mixed)):
            difference = self.difference(self.reference_total, self.fold(contributions))
            if difference is not None:
                raise ContractViolation(
                    "serialisable", f"{label} contribution decoded before the fold", difference
                )
        return len(self.batches) + 2, "every contribution through the ledger's JSON; 2 folds"

    def identity(self) -> tuple[int, str]:
        tool = self.tool
        cases = [*enumerate(self.contributions), (-1, tool.empty())]
        for index, contribution in cases:
            name = "empty()" if index < 0 else f"batch {index}"
            for label, merged in (
                (f"merge(empty(), {name})", tool.merge(tool.empty(), self._copy(contribution))),
                (f"merge({name}, empty())", tool.merge(self._copy(contribution), tool.empty())),
            ):
                if not _same(merged, contribution):
                    raise ContractViolation(
                        "identity",
                        f"{label} differs from {name}",
                        f"{_value_difference(contribution, merged)}; "
                        + self._consequence_of_totals(contribution, merged),
                    )
        return 2 * len(cases), "merge(empty(), c) == c == merge(c, empty()), every batch"

    def commutative(self) -> tuple[int, str]:
        pairs = _pairs(len(self.batches), random.Random(self.seed), LAW_CASES)
        for i, j in pairs:
            forward, backward = self._merge(i, j), self._merge(j, i)
            if not _same(forward, backward):
                raise ContractViolation(
                    "commutative",
                    f"merge(batch {i}, batch {j}) differs from merge(batch {j}, batch {i})",
                    f"{_value_difference(backward, forward)}; batches [{j}, {i}] folded in this "
                    f"order differ from [{i}, {j}]: {self._subset_consequence([i, j], [j, i])}",
                )
        return len(pairs), "merge(a, b) == merge(b, a) on pairs of batches"

    def associative(self) -> tuple[int, str]:
        triples = _triples(len(self.batches), random.Random(self.seed), LAW_CASES)
        for i, j, k in triples:
            left = self.tool.merge(self._merge(i, j), self._copy(self.contributions[k]))
            right = self.tool.merge(self._copy(self.contributions[i]), self._merge(j, k))
            if not _same(left, right):
                raise ContractViolation(
                    "associative",
                    f"merge(merge(batch {i}, batch {j}), batch {k}) differs from "
                    f"merge(batch {i}, merge(batch {j}, batch {k}))",
                    f"{_value_difference(right, left)}; "
                    + self._consequence_of_totals(right, left),
                )
        arrangements = [self._right_fold(), self._balanced_tree()]
        arrangements += [self._random_pairs(self.seed + n) for n in range(RANDOM_PAIRINGS)]
        shard_counts = sorted({2, 3, self.max_shards} & set(range(2, len(self.batches))))
        arrangements += [self._shards(count) for count in shard_counts]
        for arrangement in arrangements:
            self._check_arrangement(arrangement)
        how = (
            f"triples; right fold, tree, {RANDOM_PAIRINGS} random groupings, "
            f"{'/'.join(map(str, shard_counts)) or 'no'} shards"
        )
        return len(triples) + len(arrangements), how

    def order_agnostic(self) -> tuple[int, str]:
        count = len(self.batches)
        arrangements = [self._in_order(lambda index: -index, "reversed")]
        for n in range(SHUFFLES):
            order = list(range(count))
            random.Random(self.seed + n).shuffle(order)
            rank = {index: position for position, index in enumerate(order)}
            arrangements.append(self._in_order(rank.__getitem__, f"shuffle {self.seed + n}"))
        for arrangement in arrangements:
            self._check_arrangement(arrangement)
        return len(arrangements), f"reversed and {SHUFFLES} seeded shuffles, left folds"

    def batch_agnostic(self) -> tuple[int, str]:
        size = self.plan.batch_size
        sizes = sorted({max(1, size // 3), size * 3} - {size})
        described = []
        for other_size in sizes:
            plan = replace(self.plan, batch_size=other_size)
            batches = [plan.batch(index) for index in range(plan.batch_count)]
            total = self.fold(self._scan_all(self.tool, batches))
            difference = self.difference(self.reference_total, total)
            if difference is not None:
                raise self._shrink_cut(other_size, plan.batch_count, difference)
            described.append(f"{other_size:,} ({plan.batch_count})")
        return len(sizes), f"batch sizes (batches): {', '.join(described)}"

    # -- folding and reports ----------------------------------------------------------------

    def fold(self, contributions: Sequence[Any], tool: ReportTool[Any] | None = None) -> Any:
        """The framework's fold: left, from ``empty()``, in the order given."""
        tool = tool or self.tool
        total = tool.empty()
        for contribution in contributions:
            total = tool.merge(total, self._copy(contribution))
        return total

    def fold_batches(self, indices: Sequence[int]) -> Any:
        return self.fold([self.contributions[index] for index in indices])

    def report(
        self, total: Any, *, tool: ReportTool[Any] | None = None, cached: bool = True
    ) -> ReportOrError:
        """The report of ``total``; equal totals share one finalise query unless not ``cached``."""
        key = _normal_form(total) if cached else None
        if key is not None and key in self._reports:
            return self._reports[key]
        tool = tool or self.tool
        self.reports_computed += 1
        try:
            rows = tool.finalise(self.connection, self.plan.scope, self._copy(total), self.params)
            report: ReportOrError = (
                validate_report(tool, self.plan.scope, rows)
                .sort_values("entity_id")
                .reset_index(drop=True)
            )
        except MalformedReportError as error:
            report = error
        if key is not None:
            self._reports[key] = report
        return report

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.plan.extent.params)

    def difference(self, baseline_total: Any, subject_total: Any) -> str | None:
        """How the subject's report differs from the baseline's; None when they agree."""
        if _same(baseline_total, subject_total):
            return None
        return _report_difference(self.report(baseline_total), self.report(subject_total))

    def _consequence(self, baseline: Sequence[Any], subject: Sequence[Any]) -> str:
        return self._consequence_of_totals(self.fold(baseline), self.fold(subject))

    def _consequence_of_totals(self, baseline_total: Any, subject_total: Any) -> str:
        difference = self.difference(baseline_total, subject_total)
        return "the report is the same" if difference is None else f"report: {difference}"

    def _subset_consequence(self, baseline: Sequence[int], subject: Sequence[int]) -> str:
        difference = self.difference(self.fold_batches(baseline), self.fold_batches(subject))
        return "the report is the same" if difference is None else difference

    def _merge(self, i: int, j: int) -> Any:
        return self.tool.merge(self._copy(self.contributions[i]), self._copy(self.contributions[j]))

    def _scan_all(self, tool: ReportTool[Any], batches: Sequence[Batch]) -> list[Any]:
        return [tool.scan(self.connection, batch) for batch in batches]

    def _deliver_twice(self, again: Sequence[Any]) -> list[Any]:
        """The ledger after every batch was delivered twice in a shuffled order: last one wins."""
        deliveries = list(enumerate(self.contributions)) + list(enumerate(again))
        random.Random(self.seed).shuffle(deliveries)
        ledger = dict(deliveries)
        return [ledger[index] for index in range(len(self.batches))]

    # -- ways of folding, and shrinking them ------------------------------------------------

    def _check_arrangement(self, arrangement: _Arrangement) -> None:
        everything = list(range(len(self.batches)))
        difference = self._arranged_difference(arrangement, everything)
        if difference is None:
            return
        budget = self.reports_computed + SHRINK_REPORTS
        for subset in _smaller_subsets(len(everything)):
            if self.reports_computed >= budget:
                break
            smaller = self._arranged_difference(arrangement, subset)
            if smaller is not None:
                raise ContractViolation(arrangement.property, arrangement.describe(subset), smaller)
        raise ContractViolation(arrangement.property, arrangement.describe(everything), difference)

    def _arranged_difference(self, arrangement: _Arrangement, indices: Sequence[int]) -> str | None:
        """How folding ``indices`` this way changes their report from the left fold in order."""
        try:
            total = arrangement.fold(indices)
        except Exception as error:  # a merge that breaks in one arrangement breaks the property
            return f"merge raises {error!r}"
        return self.difference(self.fold_batches(indices), total)

    def _in_order(self, rank: Callable[[int], int], label: str) -> _Arrangement:
        def fold(indices: Sequence[int]) -> Any:
            return self.fold_batches(sorted(indices, key=rank))

        def describe(indices: Sequence[int]) -> str:
            return (
                f"batches {sorted(indices, key=rank)} folded in this order ({label}) differ "
                f"from {sorted(indices)}"
            )

        return _Arrangement("order-agnostic", fold, describe)

    def _right_fold(self) -> _Arrangement:
        def fold(indices: Sequence[int]) -> Any:
            total = self.tool.empty()
            for index in reversed(indices):
                total = self.tool.merge(self._copy(self.contributions[index]), total)
            return total

        return _Arrangement("associative", fold, _merged_as("a right fold"))

    def _balanced_tree(self) -> _Arrangement:
        def fold(indices: Sequence[int]) -> Any:
            if len(indices) <= 1:
                return self.fold_batches(indices)
            middle = len(indices) // 2
            return self.tool.merge(fold(indices[:middle]), fold(indices[middle:]))

        return _Arrangement("associative", fold, _merged_as("a balanced tree"))

    def _random_pairs(self, seed: int) -> _Arrangement:
        def fold(indices: Sequence[int]) -> Any:
            rng = random.Random(seed)
            totals = [self._copy(self.contributions[index]) for index in indices]
            while len(totals) > 1:  # neighbours only: grouping changes, order does not
                left = rng.randrange(len(totals) - 1)
                totals[left : left + 2] = [self.tool.merge(totals[left], totals[left + 1])]
            return self.tool.merge(self.tool.empty(), totals[0]) if totals else self.tool.empty()

        return _Arrangement("associative", fold, _merged_as(f"random pairs (seed {seed})"))

    def _shards(self, count: int) -> _Arrangement:
        def groups(indices: Sequence[int]) -> list[list[int]]:
            shards = plan_shards(len(indices), count)
            return [list(indices[s.first_batch : s.last_batch + 1]) for s in shards]

        def fold(indices: Sequence[int]) -> Any:
            return self.fold([self.fold_batches(group) for group in groups(indices)])

        def describe(indices: Sequence[int]) -> str:
            return (
                f"batches {list(indices)} folded in {count} contiguous shards "
                f"{groups(indices)}, then merged, differ from one left fold"
            )

        return _Arrangement("associative", fold, describe)

    def _shrink_cut(self, size: int, batch_count: int, difference: str) -> ContractViolation:
        """The smallest other cut that changes the report: one batch split, or two joined."""
        budget = self.reports_computed + SHRINK_REPORTS
        if size < self.plan.batch_size:
            for batch, contribution in zip(self.batches, self.contributions, strict=True):
                if self.reports_computed >= budget:
                    break
                parts = _split(batch, 3)
                found = self.difference(
                    self.fold([contribution]), self.fold(self._scan_all(self.tool, parts))
                )
                if found is not None:
                    ranges = ", ".join(f"{p.first_key}..{p.last_key}" for p in parts)
                    case = (
                        f"batch {batch.index} (keys {batch.first_key}..{batch.last_key}) "
                        f"scanned as {len(parts)} batches (keys {ranges}) differs from it "
                        "scanned whole"
                    )
                    return ContractViolation("batch-agnostic", case, found)
        else:
            for first, second in zip(self.batches, self.batches[1:], strict=False):
                if self.reports_computed >= budget:
                    break
                joined = Batch(
                    first.scope, first.index, first.first_key, second.last_key, first.params
                )
                found = self.difference(
                    self.fold_batches([first.index, second.index]),
                    self.fold([self.tool.scan(self.connection, joined)]),
                )
                if found is not None:
                    case = (
                        f"batches [{first.index}, {second.index}] scanned as one batch (keys "
                        f"{joined.first_key}..{joined.last_key}) differ from them scanned apart"
                    )
                    return ContractViolation("batch-agnostic", case, found)
        case = (
            f"batch size {size:,} ({batch_count} batches) differs from "
            f"{self.plan.batch_size:,} ({len(self.batches)} batches)"
        )
        return ContractViolation("batch-agnostic", case, difference)

    # -- threads ----------------------------------------------------------------------------

    def _as_sequential(self, batch: Batch, outcome: Any) -> bool:
        if isinstance(outcome, Exception):
            return False
        return _same(self.contributions[batch.index], outcome)

    def _report_race(self, batch: Batch, outcome: Any) -> None:
        """Raise thread-safe for the smallest set of concurrent batches that shows the race."""
        others = sorted(
            (b for b in self.batches if b.index != batch.index),
            key=lambda b: abs(b.index - batch.index),
        )
        for partner in others[:THREAD_PARTNERS]:
            pair = sorted([batch, partner], key=lambda b: b.index)
            for _ in range(THREAD_ROUNDS):
                outcomes = _scan_concurrently(self.tool, self.engine, pair * 3, 2)
                wrong = [(b, o) for b, o in outcomes if not self._as_sequential(b, o)]
                if wrong:
                    case = f"batches {[b.index for b in pair]} scanned at once by 2 threads"
                    raise ContractViolation("thread-safe", case, self._race_difference(*wrong[0]))
        case = f"{len(self.batches)} batches scanned twice each by {self.threads} threads at once"
        raise ContractViolation("thread-safe", case, self._race_difference(batch, outcome))

    def _race_difference(self, batch: Batch, outcome: Any) -> str:
        if isinstance(outcome, Exception):
            return f"batch {batch.index} raised {type(outcome).__name__}: {outcome}"
        sequential = self.contributions[batch.index]
        consequence = self._consequence([sequential], [outcome])
        return (
            f"batch {batch.index} differs from its sequential scan: "
            f"{_value_difference(sequential, outcome)}; {consequence}"
        )

    def _decoded_consequence(self) -> str:
        """What the ledger's JSON does to the report: the framework folds decoded contributions."""
        try:
            decoded = [decode(encode(contribution)) for contribution in self.contributions]
        except (TypeError, ValueError) as error:
            return f"ledger.encode fails ({error}), so no batch can be recorded"
        mixed = _every_other(self.contributions, decoded)
        for label, contributions in (("every", decoded), ("every other", mixed)):
            try:
                difference = self.difference(self.reference_total, self.fold(contributions))
            except Exception as error:  # merge or finalise may well break on what JSON made
                return f"with {label} contribution decoded, the tool raises {error!r}"
            if difference is not None:
                return f"with {label} contribution decoded, the report differs: {difference}"
        return "the report happens to be the same"


def _fresh_copy(tool: ReportTool[Any]) -> ReportTool[Any]:
    """A copy with the tool's state as given; a new instance if it cannot be copied (a lock)."""
    try:
        return copy.deepcopy(tool)
    except (TypeError, copy.Error):
        return type(tool)()


def _scan_concurrently(
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


def _split(batch: Batch, parts: int) -> list[Batch]:
    """``batch`` cut into up to ``parts`` contiguous key ranges."""
    span = batch.last_key - batch.first_key + 1
    step = max(1, math.ceil(span / parts))
    return [
        Batch(batch.scope, batch.index, first, min(batch.last_key, first + step - 1), batch.params)
        for first in range(batch.first_key, batch.last_key + 1, step)
    ]


def _smaller_subsets(count: int) -> Iterator[tuple[int, ...]]:
    """Subsets of ``count`` batches to shrink a failing fold to, smallest first.

    Pairs, then triples (each up to ``SHRINK_SUBSETS``), then the first four batches or more,
    for failures that only show on the partial totals of several batches. Only prefixes are
    tried among the longer runs, to keep the folds a shrink costs in O(batches squared).
    """
    everything = range(count)
    yield from islice(combinations(everything, 2), SHRINK_SUBSETS)
    yield from islice(combinations(everything, 3), SHRINK_SUBSETS)
    for size in range(4, count):
        yield tuple(range(size))


def _pairs(count: int, rng: random.Random, limit: int) -> list[tuple[int, int]]:
    """Neighbours first (the smallest indices fail first), then random pairs, up to ``limit``."""
    every = list(combinations(range(count), 2))
    if len(every) <= limit:
        return every
    chosen = dict.fromkeys([(i, i + 1) for i in range(count - 1)][: limit // 2])
    chosen[(0, count - 1)] = None
    while len(chosen) < limit:
        i, j = sorted(rng.sample(range(count), 2))
        chosen[(i, j)] = None
    return list(chosen)


def _triples(count: int, rng: random.Random, limit: int) -> list[tuple[int, int, int]]:
    """Consecutive triples first, then random ones (in batch order), up to ``limit``."""
    every = list(combinations(range(count), 3))
    if len(every) <= limit:
        return every
    chosen = dict.fromkeys([(i, i + 1, i + 2) for i in range(count - 2)][: limit // 2])
    while len(chosen) < limit:
        i, j, k = sorted(rng.sample(range(count), 3))
        chosen[(i, j, k)] = None
    return list(chosen)


def _merged_as(shape: str) -> Callable[[Sequence[int]], str]:
    def describe(indices: Sequence[int]) -> str:
        return f"batches {list(indices)} merged as {shape} differ from the left fold"

    return describe


# -- comparing values and reports -----------------------------------------------------------


def _normal_form(value: Any) -> str | None:
    """The ledger's encoding (keys sorted), or None for a value the ledger cannot store."""
    try:
        return encode(value)
    except (TypeError, ValueError):
        return None


def _same(one: Any, other: Any) -> bool:
    """Equal as the ledger would store them; plain equality for values it cannot store."""
    one_form, other_form = _normal_form(one), _normal_form(other)
    if one_form is None or other_form is None:
        return bool(one == other)
    return one_form == other_form


def _round_trips(value: Any) -> bool:
    try:
        return bool(decode(encode(value)) == value)
    except (TypeError, ValueError):
        return False


def _every_other(raw: Sequence[Any], decoded: Sequence[Any]) -> list[Any]:
    """Raw and decoded contributions alternating, as when finalise rescans some lost batches."""
    return [d if i % 2 else r for i, (r, d) in enumerate(zip(raw, decoded, strict=True))]


def _json_copy(value: Any) -> Any:
    return decode(encode(value))


def _json_problem(value: Any, where: str = "the contribution") -> str:
    """The first part of ``value`` that JSON does not keep as it is, in words."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{where} has key {key!r} ({type(key).__name__}), " + _json_key(key)
            problem = _json_problem(item, f"{where}[{key!r}]")
            if problem:
                return problem
        return ""
    if isinstance(value, list):
        for index, item in enumerate(value):
            problem = _json_problem(item, f"{where}[{index}]")
            if problem:
                return problem
        return ""
    if isinstance(value, tuple):
        return f"{where} is the tuple {_show(value)}, which JSON turns into a list"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{where} is {value!r}, which is not a JSON number"
    if value is None or isinstance(value, str | bool | int | float):
        return ""
    return f"{where} is a {type(value).__name__} ({_show(value)}), not a JSON value"


def _json_key(key: Any) -> str:
    try:
        return f"which JSON turns into {next(iter(decode(encode({key: None}))))!r}"
    except (TypeError, ValueError):
        return "which JSON cannot encode"


def _value_difference(baseline: Any, subject: Any, where: str = "") -> str:
    """The first difference, subject first as in "X differs from Y: x != y".

    E.g. ``key '17': [5, 1] != [4, 1]``; dicts are searched key by key, in key order.
    """
    if isinstance(baseline, dict) and isinstance(subject, dict):
        for key in sorted(baseline.keys() | subject.keys(), key=repr):
            one, other = baseline.get(key, _MISSING), subject.get(key, _MISSING)
            if one is _MISSING or other is _MISSING or not _same(one, other):
                path = f"{where} -> {key!r}" if where else f"key {key!r}"
                return _value_difference(one, other, path)
    return f"{where or 'value'}: {_show(subject)} != {_show(baseline)}"


def _report_difference(baseline: ReportOrError, subject: ReportOrError) -> str | None:
    """The first difference between two reports, subject first: ``entity 17 usage_count 5 != 4``.

    None when they agree.
    """
    if isinstance(baseline, MalformedReportError) or isinstance(subject, MalformedReportError):
        if str(baseline) == str(subject):
            return None
        failed = subject if isinstance(subject, MalformedReportError) else baseline
        return f"finalise fails: {failed}"
    expected = {row["entity_id"]: row for row in baseline.to_dict("records")}
    actual = {row["entity_id"]: row for row in subject.to_dict("records")}
    for entity in sorted(expected.keys() | actual.keys()):
        if entity not in actual:
            return f"entity {entity} is missing"
        if entity not in expected:
            return f"entity {entity} is extra"
        for column in REPORT_COLUMNS:
            was, now = expected[entity][column], actual[entity][column]
            if not _same_cell(was, now):
                return f"entity {entity} {column} {_show(now)} != {_show(was)}"
    return None


def _same_cell(one: Any, other: Any) -> bool:
    if not (pd.api.types.is_scalar(one) and pd.api.types.is_scalar(other)):
        return bool(one == other)
    if pd.isna(one) or pd.isna(other):
        return bool(pd.isna(one) and pd.isna(other))
    return bool(one == other)


def _show(value: Any) -> str:
    if value is _MISSING or value is None or value is pd.NaT:
        return "missing"
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    text = str(value) if isinstance(value, numbers.Number | np.generic) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
