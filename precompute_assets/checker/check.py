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
    ``merge(empty(), c)`` and ``merge(c, empty())`` equal ``c`` for every batch's contribution,
    and merge leaves every accumulator but its first as it was.
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
    Other batch sizes (a third and three times the checked one) give the same report, cut as a
    job cuts them, and so does the key range cut evenly when the catalogue cuts on its keys.
    Broken by contributions that do not add up, such as a count of the batches a field appears
    in.

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

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Connection, Engine

from precompute_assets.checker import folds, laws, scanning
from precompute_assets.checker.subject import ContractViolation, Subject
from precompute_assets.contract import Extent, ReportTool, ScopeNotFoundError
from precompute_assets.core.db import connect
from precompute_assets.core.errors import UnknownScopeError
from precompute_assets.core.plan import JobPlan, cut_on_keys
from precompute_assets.core.settings import Settings
from precompute_assets.core.text import format_table, shorten
from precompute_assets.core.window import reference_params

# The properties in the order they are checked, each a function of the subject.
STEPS: tuple[tuple[str, Callable[[Subject], tuple[int, str]]], ...] = (
    ("deterministic", scanning.deterministic),
    ("idempotent", scanning.idempotent),
    ("thread-safe", scanning.thread_safe),
    ("serialisable", scanning.serialisable),
    ("identity", laws.identity),
    ("commutative", laws.commutative),
    ("associative", laws.associative),
    ("order-agnostic", folds.order_agnostic),
    ("batch-agnostic", folds.batch_agnostic),
)
PROPERTIES: tuple[str, ...] = tuple(name for name, _ in STEPS)
SCOPES_CONSIDERED = 20  # the default scope is the largest of the tool's first scopes
MIN_BATCHES = 6  # fewer batches than this and there is too little to shuffle, pair or split
THREADS = 4


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
        starts = cut_on_keys(tool.catalogue, connection, scope, extent, size)
        plan = JobPlan(
            tool.name, scope, 1, extent, size, resumed=False, started_at=0.0, batch_starts=starts
        )
        subject = Subject(tool, source, connection, plan, max_shards, threads, seed)
        checks, violation = run_properties(subject)
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
        reports_computed=subject.reports_computed,
        seconds=round(time.perf_counter() - started, 2),
    )


def run_properties(subject: Subject) -> tuple[list[PropertyCheck], ContractViolation | None]:
    """Each property in turn, up to the first broken one; the rest are "not run"."""
    checks: list[PropertyCheck] = []
    for name, step in STEPS:
        try:
            cases, how = step(subject)
        except ContractViolation as violation:
            checks.append(PropertyCheck(name, None, "see below", "BROKEN"))
            rest = PROPERTIES[len(checks) :]
            checks += [PropertyCheck(other, None, "", "not run") for other in rest]
            return checks, violation
        checks.append(PropertyCheck(name, cases, how, "ok" if cases else "no cases"))
    return checks, None


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
    candidates = list(tool.catalogue.scopes(connection))[:SCOPES_CONSIDERED]
    extents: dict[str, Extent] = {}
    for candidate in candidates:
        try:
            extents[candidate] = tool.catalogue.initialise(connection, candidate)
        except ScopeNotFoundError:
            continue  # deleted since scopes() listed it
    if not extents:
        raise UnknownScopeError(f"tool {tool.name!r} finds no scope in the source to check")
    largest = max(extents, key=lambda name: extents[name].entity_count)
    chosen = _with_reference(tool, extents[largest])
    return largest, chosen, f"the largest of the first {len(candidates)} scopes"


def _initialise(tool: ReportTool[Any], connection: Connection, scope: str) -> Extent:
    try:
        return _with_reference(tool, tool.catalogue.initialise(connection, scope))
    except ScopeNotFoundError as error:
        raise UnknownScopeError(
            f"unknown scope {shorten(scope)!r} for {tool.name}: {shorten(str(error))}"
        ) from None


def _with_reference(tool: ReportTool[Any], extent: Extent) -> Extent:
    """The extent with the reference times a job gives its batches."""
    return replace(extent, params={**extent.params, **reference_params(tool, time.time())})


def _batch_size_for(extent: Extent, batch_size: int) -> int:
    if extent.entity_count == 0 or extent.entity_count >= MIN_BATCHES * batch_size:
        return batch_size
    return max(1, extent.entity_count // MIN_BATCHES)
