"""The tool contract: what a report tool implements, and nothing about how it is run.

A tool is two parts, as small as Apache Beam's CombineFn: a **scope catalogue** (which scopes
the source holds, whose they are, how each one stands) and the **combine function** of its
report (``scan``, ``merge``, ``empty``, ``finalise``); optionally a third, its **remediation**
(``verify``, ``apply``, ``undo``: acting on the entities its report proposes). A tool never
imports Dagster; the framework never knows what the tool's entities are.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

if TYPE_CHECKING:
    import pandas as pd
    from sqlalchemy import Connection

C = TypeVar("C")

REPORT_COLUMNS: tuple[str, ...] = (
    "entity_type",
    "entity_id",
    "unused",
    "usage_count",
    "last_used",
    "detail",
)


@dataclass(frozen=True)
class Extent:
    """What ``initialise`` found: the entity keys to scan now, and the source's watermark.

    ``params`` are the tool's per-job values (a space's id, say), fixed when the job opens and
    handed to every scan and to finalise, so that a retried or resumed batch computes the same
    thing. The framework adds its reference times to them (``as_of``, ``since``: see
    ``ReportTool``). They must be JSON values.
    """

    first_key: int
    last_key: int
    entity_count: int
    watermark: str
    params: Mapping[str, Any] = field(default_factory=dict)
    tenant: str | None = None  # the scope's owner, as ``ScopeCatalogue.scopes`` names it


@dataclass(frozen=True)
class Batch:
    """A contiguous, inclusive key range of one scope's entities: the unit of retry."""

    scope: str
    index: int
    first_key: int
    last_key: int
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ScopeChange:
    """A scope that was added, changed or deleted: its tenant and watermark now (None if gone)."""

    scope: str
    tenant: str | None
    watermark: str | None

    @property
    def deleted(self) -> bool:
        return self.watermark is None


@dataclass(frozen=True)
class Changes:
    """What ``ScopeCatalogue.changes`` found, and the cursor to ask from next time.

    ``complete`` says that ``scopes`` is every scope the source holds (a first listing): a scope
    known before and not among them is gone.
    """

    scopes: list[ScopeChange]
    cursor: str | None
    complete: bool = False


class ScopeCatalogue(ABC):
    """Which scopes a source holds, whose they are, and how each one stands.

    The refresh policy asks these of many scopes at once, on every sensor tick: each method
    reads only the scopes asked, by key, never the whole fleet for a few of them. ``limit``, if
    set, is what utilisation is measured against (shown as "682 of 700"). Laws:

    - ``scopes`` names every scope with its tenant (the owner whose admins may read its report).
    - ``watermark`` changes whenever any row the tool's report reads changes, whoever writes it,
      deletions included. A maximum timestamp is not a watermark: one future timestamp freezes
      it, and a deletion does not move it. A change counter kept by triggers is.
    - ``initialise`` reads the scope's key range and its watermark from one snapshot.
    - A scope the source does not hold is absent from ``utilisation`` and ``watermark``;
      ``initialise`` raises ``ScopeNotFoundError`` for it.
    - ``changes`` (optional: the default lists every scope each time) gives, in the order they
      happened, every scope added, changed or deleted since ``cursor``: one a reader at that
      cursor has not seen. Sensors then read what changed, not the fleet.
    - ``batch_starts``, if the catalogue gives them, are keys of the scope's entities in
      ascending order, every ``batch_size``-th one, read by one query. They only decide where
      batches are cut: the batches still tile the extent (the first starts at ``first_key``,
      the last ends at ``last_key``, keys outside it are ignored), so a key that changed since
      ``initialise`` moves a cut, never the report.
    """

    limit: int | None = None

    @abstractmethod
    def scopes(self, source: Connection) -> dict[str, str]:
        """Every scope the source holds now, with its tenant."""

    @abstractmethod
    def initialise(self, source: Connection, scope: str) -> Extent:
        """Bound a job for ``scope``: its entity key range, its watermark, the tool's params."""

    def batch_starts(
        self, source: Connection, scope: str, extent: Extent, batch_size: int
    ) -> Sequence[int] | None:
        """The first key of each batch, so that each batch holds ``batch_size`` entities.

        Optional: None (this default) has the framework cut the key range into even spans, which
        hold about ``batch_size`` entities only where keys are evenly spread. Real key spaces have
        gaps and clusters, so a catalogue that knows its key column answers in one query: a
        recursive one that skips ``batch_size`` keys of an index from each start (keyset
        sampling, as the demo's ``Spaces``), or ``ROW_NUMBER() OVER (ORDER BY key)``.
        """
        return None

    @abstractmethod
    def utilisation(self, source: Connection, scopes: Sequence[str]) -> dict[str, float]:
        """How close each scope is to its limit, 0.0 to 1.0 (or above, when over the limit)."""

    @abstractmethod
    def watermark(self, source: Connection, scopes: Sequence[str]) -> dict[str, str]:
        """A value that changes whenever anything a scope's report reads changes."""

    def changes(self, source: Connection, cursor: str | None, limit: int) -> Changes:
        """Up to ``limit`` scopes changed since ``cursor`` (every scope when it is None), with
        the cursor to ask from next time.

        This default lists every scope each time (``complete``); a source that keeps a change
        feed answers with what changed only.
        """
        tenants = self.scopes(source)
        watermarks = self.watermark(source, list(tenants))
        found = [
            ScopeChange(scope, tenant, watermarks[scope])
            for scope, tenant in tenants.items()
            if scope in watermarks
        ]
        return Changes(found, cursor=None, complete=True)


class ReportTool(ABC, Generic[C]):
    """A pre-computed report, in the shape of Apache Beam's CombineFn.

    Lifecycle of one job for one scope:

    1. ``catalogue.initialise(source, scope)`` bounds the job: the key range to scan, the
       watermark, the tool's params. The framework cuts the range into batches, at the
       catalogue's ``batch_starts`` when it gives them.
    2. ``scan(source, batch)`` returns the contribution of one batch, its *accumulator*. The
       framework calls it for many batches, in parallel, in any order, and more than once.
    3. ``merge(accumulators)`` folds accumulators; ``empty()`` is the fold's start.
    4. ``finalise(source, scope, total, params)`` turns the fold of every batch into rows.

    Laws the framework relies on (``precompute check-tool`` verifies them):

    - ``scan`` is a pure function of the batch and the source: idempotent, thread-safe and
      order-agnostic. Push the work into SQL over the batch's key range.
    - ``merge`` is associative and commutative, and ``empty()`` is its identity. It takes any
      number of accumulators; it may change and return the first one, never the others.
    - Accumulators are JSON values (dicts with string keys, lists, numbers, strings, null):
      the framework checkpoints each batch's accumulator in its ledger.
    - ``finalise(source, scope, empty(), params)`` lists every entity the report covers, each
      unused by the fold of no batch: the report's completeness check compares a report with it.
    - Every batch's ``params`` hold ``as_of`` (the job's start, unix seconds) and, for a tool
      with ``window_days``, ``since``: that many days before the UTC midnight of the job's day.

    ``precompute_assets.accumulators`` has accumulators ready made, with their ``merge`` and
    ``empty``: a tool using one writes ``scan`` and ``finalise``.

    Example::

        class UnusedLabels(UsageTool):
            name = "unused_labels"
            entity_type = "label"
            catalogue = Spaces(counted="space_labels", limit=500)

            def scan(self, source, batch): ...
            def finalise(self, source, scope, total, params): ...
    """

    name: ClassVar[str]
    entity_type: ClassVar[str]
    description: ClassVar[str] = ""
    # Days of history the report looks at, back from the UTC midnight of the job's day.
    window_days: ClassVar[int | None] = None
    catalogue: ClassVar[ScopeCatalogue]
    # What an admin may do to the entities the report proposes, if anything (see Remediation).
    remediation: ClassVar[Remediation | None] = None

    @abstractmethod
    def scan(self, source: Connection, batch: Batch) -> C:
        """The accumulator of the entities in ``batch`` (a pure function of batch and source)."""

    @abstractmethod
    def merge(self, accumulators: Sequence[C]) -> C:
        """Combine accumulators (associative, commutative); may change the first and return it."""

    @abstractmethod
    def empty(self) -> C:
        """The identity of ``merge``."""

    @abstractmethod
    def finalise(
        self, source: Connection, scope: str, total: C, params: Mapping[str, Any]
    ) -> pd.DataFrame:
        """Report rows for ``scope`` from the fold of every batch, in ``REPORT_COLUMNS`` shape.

        ``entity_id`` is unique per row; ``last_used`` is a UTC timestamp or unix seconds, or
        missing; ``detail`` is a JSON-able dict of tool-specific fields, with what the source
        had odd about the entity under ``"anomalies"`` (``{"values_without_time": 2}``), which
        the framework adds up over the report. ``entity_type`` may be omitted.
        """


class Remediation(ABC):
    """An action on a report's unused entities, with its undo: the second phase over a report.

    A tool offers one by setting ``ReportTool.remediation`` to an instance. The framework owns
    the rest: plans made from a fresh report, refused once it is replaced; batches of at most
    ``batch_size`` entities, each run as Dagster runs and checkpointed in the store; the audit
    record of every action; the report's refresh afterwards. For each batch, in one source
    transaction, it calls ``verify``, then ``apply`` with the entities that still qualify; later,
    perhaps, ``undo`` with what ``apply`` returned. ``params`` are the report's job params
    (``space_id``, say) with the reference times of now (``as_of``, ``since``).

    Laws the framework relies on:

    - ``verify`` reads the live source: an entity the report proposed that no longer qualifies
      (it was used since, or changed) is left out, and the framework lists it as skipped.
    - ``apply`` changes only the entities it is given, and is idempotent: applied again to the
      same entities it changes nothing more. It returns what ``undo`` needs, as a JSON value,
      read in the same transaction before the change (the framework keeps the first return of
      a batch that is applied again after a crash).
    - ``undo`` restores exactly what ``apply`` changed, and is idempotent too.
    - Batches are independent: the framework runs them in any order, and a batch again after a
      crash. None of the three commits: the framework does, once per batch.

    Example::

        class RemoveFields(Remediation):
            action = "Remove from the space"

            def verify(self, source, scope, entities, params): ...  # ids still unused
            def apply(self, source, scope, entities, params): ...   # {"removed": [...]}
            def undo(self, source, scope, undo, params): ...
    """

    # The button's words, and what the activity log calls the action: "Remove from the space".
    action: ClassVar[str]
    batch_size: ClassVar[int] = 100

    @abstractmethod
    def verify(
        self, source: Connection, scope: str, entities: Sequence[str], params: Mapping[str, Any]
    ) -> Collection[str]:
        """Which of ``entities`` still qualify, against the live source."""

    @abstractmethod
    def apply(
        self, source: Connection, scope: str, entities: Sequence[str], params: Mapping[str, Any]
    ) -> Any:
        """Make the change for ``entities``; return what ``undo`` needs (a JSON value)."""

    @abstractmethod
    def undo(self, source: Connection, scope: str, undo: Any, params: Mapping[str, Any]) -> None:
        """Restore exactly what the ``apply`` that returned ``undo`` changed."""


class ScopeNotFoundError(LookupError):
    """The source holds no scope of that name (raise it from ``initialise``)."""


class MalformedReportError(ValueError):
    """A tool's finalise returned rows that do not fit the report shape."""
