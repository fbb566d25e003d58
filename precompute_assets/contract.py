"""The tool contract: what a report tool implements, and nothing about how it is run.

A tool never imports Dagster; the framework never knows what the tool's entities are.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

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

    ``params`` are per-job values fixed at initialise (a reference time, say) and handed to
    every scan and to finalise, so that a retried or resumed batch computes the same thing.
    They must be JSON values.
    """

    first_key: int
    last_key: int
    entity_count: int
    watermark: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Batch:
    """A contiguous, inclusive key range of one scope's entities: the unit of retry."""

    scope: str
    index: int
    first_key: int
    last_key: int
    params: Mapping[str, Any] = field(default_factory=dict)


class ReportTool(ABC, Generic[C]):
    """A pre-computed report, in the shape of Apache Beam's CombineFn.

    Lifecycle of one job for one scope:

    1. ``initialise(source, scope)`` bounds the job: the key range of the entities to scan and
       the source watermark, read once.
    2. ``scan(source, batch)`` returns the contribution of one batch of keys. The framework calls
       it for many batches, in parallel, in any order, and more than once for the same batch.
    3. ``merge(a, b)`` folds contributions; ``empty()`` is the fold's start.
    4. ``finalise(source, scope, total, params)`` turns the fold of every batch into report rows.

    Laws the framework relies on (and ``precompute check-tool`` verifies):

    - ``scan`` is a pure function of the batch and the source: idempotent, thread-safe and
      order-agnostic. Push the work into SQL over the batch's key range.
    - ``merge`` is associative and commutative, and ``empty()`` is its identity.
    - Contributions are JSON values (dicts with string keys, lists, numbers, strings), because
      the framework checkpoints every batch's contribution in its ledger.

    Three cheap bulk queries serve the refresh policy: ``scopes``, ``utilisation`` and
    ``watermark``, each one query for many scopes, never one query per scope.

    Example::

        class UnusedLabels(ReportTool[dict]):
            name = "unused_labels"
            entity_type = "label"
            ...
    """

    name: ClassVar[str]
    entity_type: ClassVar[str]
    description: ClassVar[str] = ""
    # Days of history the report looks at, back from the UTC midnight of the job's day; the
    # framework passes its start to every scan as ``params["since"]`` (see ``window.py``).
    window_days: ClassVar[int | None] = None

    @abstractmethod
    def initialise(self, source: Connection, scope: str) -> Extent:
        """Bound the job for ``scope``: the entity key range and the source watermark."""

    @abstractmethod
    def scan(self, source: Connection, batch: Batch) -> C:
        """The contribution of the entities in ``batch`` (a pure function of batch and source)."""

    @abstractmethod
    def merge(self, a: C, b: C) -> C:
        """Combine two contributions; associative and commutative."""

    @abstractmethod
    def empty(self) -> C:
        """The identity of ``merge``."""

    @abstractmethod
    def finalise(
        self, source: Connection, scope: str, total: C, params: Mapping[str, Any]
    ) -> pd.DataFrame:
        """Report rows for ``scope`` from the fold of every batch, in ``REPORT_COLUMNS`` shape.

        ``entity_id`` is unique per row; ``last_used`` is a UTC timestamp or unix seconds, or
        missing; ``detail`` is a JSON-able dict of tool-specific fields. ``entity_type`` may be
        omitted and defaults to the tool's.
        """

    @abstractmethod
    def scopes(self, source: Connection) -> list[str]:
        """Every scope the source holds now."""

    @abstractmethod
    def utilisation(self, source: Connection, scopes: Sequence[str]) -> dict[str, float]:
        """How close each scope is to its limit, 0.0 to 1.0 (or above when over the limit)."""

    @abstractmethod
    def watermark(self, source: Connection, scopes: Sequence[str]) -> dict[str, str]:
        """A value that changes whenever a scope's report would change; absent for unknown."""


class ScopeNotFoundError(LookupError):
    """The source holds no scope of that name (raise it from ``initialise``)."""


class MalformedReportError(ValueError):
    """A tool's finalise returned rows that do not fit the report shape."""


def validate_report(tool: ReportTool[Any], scope: str, rows: pd.DataFrame) -> pd.DataFrame:
    """The rows in the stored shape, or MalformedReportError naming the tool, scope and fault."""

    def fail(problem: str) -> MalformedReportError:
        return MalformedReportError(
            f"tool {tool.name!r}, scope {scope!r}: malformed report: {problem}"
        )

    if not isinstance(rows, pd.DataFrame):
        raise fail(f"finalise returned {type(rows).__name__}, not a pandas DataFrame")
    rows = rows.copy()
    if "entity_type" not in rows.columns:
        rows["entity_type"] = tool.entity_type
    missing = [column for column in REPORT_COLUMNS if column not in rows.columns]
    if missing:
        raise fail(f"missing columns {missing}")
    if rows["entity_id"].isna().any():
        raise fail("entity_id has missing values")
    rows["entity_id"] = rows["entity_id"].astype(str)
    duplicated = rows.loc[rows["entity_id"].duplicated(), "entity_id"].tolist()
    if duplicated:
        raise fail(f"entity_id not unique: {duplicated[:5]}")
    if (
        not rows["unused"]
        .map(lambda value: isinstance(value, bool | int) and value in (0, 1))
        .all()
    ):
        raise fail("unused must be a boolean")
    rows["unused"] = rows["unused"].astype(bool)
    counts = pd.to_numeric(rows["usage_count"], errors="coerce")
    if counts.isna().any() or (counts < 0).any() or not (counts == counts.round()).all():
        raise fail("usage_count must be a non-negative integer")
    rows["usage_count"] = counts.astype("int64")
    # Whole seconds, as the report store keeps them, so a report reads back as it was written.
    rows["last_used"] = _as_utc(rows["last_used"], fail).dt.floor("s").astype("datetime64[s, UTC]")
    if not rows["detail"].map(_is_json_object).all():
        raise fail("detail must be a JSON-serialisable dict or missing")
    return rows.loc[:, list(REPORT_COLUMNS)].reset_index(drop=True)


def _as_utc(values: pd.Series, fail: Callable[[str], Exception]) -> pd.Series:
    """Timestamps as UTC; numbers (with gaps) are unix seconds."""
    try:
        if pd.api.types.is_datetime64_any_dtype(values):
            return pd.to_datetime(values, utc=True)
        numbers = pd.to_numeric(values, errors="coerce")
        if numbers.notna().sum() == values.notna().sum():
            return pd.to_datetime(numbers, unit="s", utc=True)
        return pd.to_datetime(values, utc=True)
    except (ValueError, TypeError, OverflowError) as error:
        raise fail(f"last_used is not a time: {error}") from error


def _is_json_object(value: Any) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    if not isinstance(value, dict):
        return False
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True
