"""The tool under check on its scope: its batches, their reference accumulators, and the
folds and reports every property compares against them."""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, Engine

from precompute_assets.checker.values import (
    ReportOrError,
    _every_other,
    _normal_form,
    _report_difference,
    _same,
    _value_difference,
)
from precompute_assets.contract import Batch, MalformedReportError, ReportTool
from precompute_assets.core.ledger import decode, encode
from precompute_assets.core.plan import JobPlan
from precompute_assets.core.rows import validate_report


class ContractViolation(AssertionError):
    """A tool broke a contract property; the message names it and the smallest case found.

    ``str(violation)`` reads ``"{property}: {case}: {difference}"``.
    """

    def __init__(self, property: str, case: str, difference: str) -> None:
        super().__init__(f"{property}: {case}: {difference}")
        self.property = property
        self.case = case
        self.difference = difference


class Subject:
    """One check of one tool on one scope: the reference run, and the folds to compare with it."""

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
        self.tool = fresh_copy(tool)  # the first run's instance; it merges and finalises
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
        self.reports_seen: dict[str, ReportOrError] = {}
        # Stored contributions are copied before each merge, in case merge mutates its inputs;
        # once they are known to survive JSON, a JSON round trip is the faster copy.
        self.copy: Callable[[Any], Any] = copy.deepcopy

    def fold(self, contributions: Sequence[Any], tool: ReportTool[Any] | None = None) -> Any:
        """The framework's fold: left, from ``empty()``, in the order given."""
        tool = tool or self.tool
        total = tool.empty()
        for contribution in contributions:
            total = tool.merge([total, self.copy(contribution)])
        return total

    def fold_batches(self, indices: Sequence[int]) -> Any:
        return self.fold([self.contributions[index] for index in indices])

    def report(
        self, total: Any, *, tool: ReportTool[Any] | None = None, cached: bool = True
    ) -> ReportOrError:
        """The report of ``total``; equal totals share one finalise query unless not ``cached``."""
        key = _normal_form(total) if cached else None
        if key is not None and key in self.reports_seen:
            return self.reports_seen[key]
        tool = tool or self.tool
        self.reports_computed += 1
        try:
            rows = tool.finalise(self.connection, self.plan.scope, self.copy(total), self.params)
            report: ReportOrError = (
                validate_report(tool, self.plan.scope, rows)
                .sort_values("entity_id")
                .reset_index(drop=True)
            )
        except MalformedReportError as error:
            report = error
        if key is not None:
            self.reports_seen[key] = report
        return report

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.plan.extent.params)

    def difference(self, baseline_total: Any, subject_total: Any) -> str | None:
        """How the subject's report differs from the baseline's; None when they agree."""
        if _same(baseline_total, subject_total):
            return None
        return _report_difference(self.report(baseline_total), self.report(subject_total))

    def consequence(self, baseline: Sequence[Any], subject: Sequence[Any]) -> str:
        return self.consequence_of_totals(self.fold(baseline), self.fold(subject))

    def consequence_of_totals(self, baseline_total: Any, subject_total: Any) -> str:
        difference = self.difference(baseline_total, subject_total)
        return "the report is the same" if difference is None else f"report: {difference}"

    def subset_consequence(self, baseline: Sequence[int], subject: Sequence[int]) -> str:
        difference = self.difference(self.fold_batches(baseline), self.fold_batches(subject))
        return "the report is the same" if difference is None else difference

    def merge_pair(self, i: int, j: int) -> Any:
        return self.tool.merge([self.copy(self.contributions[i]), self.copy(self.contributions[j])])

    def scan_all(self, tool: ReportTool[Any], batches: Sequence[Batch]) -> list[Any]:
        return [tool.scan(self.connection, batch) for batch in batches]

    def deliver_twice(self, again: Sequence[Any]) -> list[Any]:
        """The ledger after every batch was delivered twice in a shuffled order: last one wins."""
        deliveries = list(enumerate(self.contributions)) + list(enumerate(again))
        random.Random(self.seed).shuffle(deliveries)
        ledger = dict(deliveries)
        return [ledger[index] for index in range(len(self.batches))]

    # -- ways of folding, and shrinking them ------------------------------------------------

    def as_sequential(self, batch: Batch, outcome: Any) -> bool:
        if isinstance(outcome, Exception):
            return False
        return _same(self.contributions[batch.index], outcome)

    def race_difference(self, batch: Batch, outcome: Any) -> str:
        if isinstance(outcome, Exception):
            return f"batch {batch.index} raised {type(outcome).__name__}: {outcome}"
        sequential = self.contributions[batch.index]
        consequence = self.consequence([sequential], [outcome])
        return (
            f"batch {batch.index} differs from its sequential scan: "
            f"{_value_difference(sequential, outcome)}; {consequence}"
        )

    def decoded_consequence(self) -> str:
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


def fresh_copy(tool: ReportTool[Any]) -> ReportTool[Any]:
    """A copy with the tool's state as given; a new instance if it cannot be copied (a lock)."""
    try:
        return copy.deepcopy(tool)
    except (TypeError, copy.Error):
        return type(tool)()
