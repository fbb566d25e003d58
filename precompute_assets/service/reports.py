"""Report generations as the service keeps them: rows in memory, views encoded once.

A generation never changes once committed (a new report is a new generation), so everything
derived from one (its rows in each order, each page encoded as JSON or CSV) is computed on first
use and kept, the least recently used going first. Pages are cut by keyset: a cursor holds the
generation, the order and the last row's sort key, so a page never mixes two generations.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import functools
import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from precompute_assets.core.report_store import ReportHeader
from precompute_assets.service.encoding import Encoded, csv_view, json_view

SortKey = Callable[[dict[str, Any]], tuple[Any, ...]]
# Every order ends with the entity id, so that sort keys are unique and keysets exact.
SORTS: dict[str, SortKey] = {
    "entity_id": lambda row: (row["entity_id"],),
    "usage_count": lambda row: (row["usage_count"], row["entity_id"]),
    "-usage_count": lambda row: (-row["usage_count"], row["entity_id"]),
    # Never used sorts as the oldest use.
    "last_used": lambda row: (row["_last_used_s"], row["entity_id"]),
    "-last_used": lambda row: (-row["_last_used_s"], row["entity_id"]),
}
VIEWS_PER_GENERATION = 32


def iso(seconds: float | None) -> str | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC).isoformat()


@dataclass(frozen=True)
class View:
    """What a request asks of a report: which rows, in which order, from where, how many."""

    unused_only: bool
    sort: str
    limit: int
    after: tuple[Any, ...] | None = None


class CursorError(ValueError):
    """A cursor that this service did not make, or made for another order or filter."""


@dataclass(frozen=True)
class Cursor:
    generation: int
    sort: str
    unused_only: bool
    after: tuple[Any, ...]

    def encode(self) -> str:
        raw = json.dumps([self.generation, self.sort, self.unused_only, list(self.after)])
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            generation, sort, unused_only, after = json.loads(raw)
            if not (
                isinstance(generation, int)
                and sort in SORTS
                and isinstance(unused_only, bool)
                and isinstance(after, list)
            ):
                raise ValueError
        except (ValueError, TypeError, binascii.Error):
            raise CursorError("not a cursor of this API: start again without one") from None
        return cls(generation, sort, unused_only, tuple(after))


@dataclass
class Generation:
    """One committed report: its header and rows (``last_used`` as ISO text)."""

    tool: str
    scope: str
    tenant: str | None
    header: ReportHeader
    rows: list[dict[str, Any]]
    _orders: dict[tuple[str, bool], tuple[list[tuple[Any, ...]], list[dict[str, Any]]]] = field(
        default_factory=dict
    )
    _views: OrderedDict[tuple[View, str], tuple[Encoded, Cursor | None]] = field(
        default_factory=OrderedDict
    )
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_records(
        cls, header: ReportHeader, records: list[dict[str, Any]], tenant: str | None
    ) -> Generation:
        rows = [
            {
                "entity_type": r["entity_type"],
                "entity_id": r["entity_id"],
                "unused": r["unused"],
                "usage_count": r["usage_count"],
                "last_used": iso(r["last_used"]),
                "detail": r["detail"],
                "_last_used_s": -1 if r["last_used"] is None else r["last_used"],
            }
            for r in records
        ]
        return cls(header.tool, header.scope, tenant, header, rows)

    @property
    def generation(self) -> int:
        return self.header.generation

    def etag(self, media: str) -> str:
        """Weak: the body's staleness ages, its rows and header are this generation's."""
        return self._etags[media == "csv"]

    @functools.cached_property
    def _etags(self) -> tuple[str, str]:
        digest = hashlib.sha1(f"{self.tool}\0{self.scope}".encode()).hexdigest()[:10]
        return f'W/"{digest}-{self.generation}"', f'W/"{digest}-{self.generation}-csv"'

    @functools.cached_property
    def computed_at(self) -> str | None:
        """When the report was computed, as ISO text."""
        return iso(self.header.computed_at)

    def page(self, view: View) -> tuple[list[dict[str, Any]], Cursor | None]:
        keys, rows = self._ordered(view.sort, view.unused_only)
        try:
            start = 0 if view.after is None else bisect.bisect_right(keys, view.after)
        except TypeError:
            raise CursorError("not a cursor of this API: start again without one") from None
        chosen = rows[start : start + view.limit]
        more = start + view.limit < len(rows)
        cursor = (
            Cursor(self.generation, view.sort, view.unused_only, keys[start + view.limit - 1])
            if more
            else None
        )
        return chosen, cursor

    def encoded(
        self, view: View, media: str, next_url: Callable[[Cursor], str]
    ) -> tuple[Encoded, Cursor | None]:
        """The view's encoded body start (JSON) or body (CSV), made once, and the cursor of the
        page after it."""
        with self._lock:
            found = self._views.get((view, media))
            if found is not None:
                self._views.move_to_end((view, media))
                return found
        rows, cursor = self.page(view)
        public = [{k: v for k, v in row.items() if not k.startswith("_")} for row in rows]
        if media == "csv":
            made = csv_view(public)
        else:
            made = json_view(
                {
                    "tool": self.tool,
                    "scope": self.scope,
                    "tenant": self.tenant,
                    "generation": self.generation,
                    "header": self.header_document(),
                    "rows": public,
                    "next": None if cursor is None else next_url(cursor),
                }
            )
        with self._lock:
            self._views[(view, media)] = (made, cursor)
            while len(self._views) > VIEWS_PER_GENERATION:
                self._views.popitem(last=False)
        return made, cursor

    def header_document(self) -> dict[str, Any]:
        values = asdict(self.header)
        for name in ("tool", "scope", "tenant"):
            values.pop(name)
        values["computed_at"] = iso(self.header.computed_at)
        return values

    def _ordered(
        self, sort: str, unused_only: bool
    ) -> tuple[list[tuple[Any, ...]], list[dict[str, Any]]]:
        with self._lock:
            found = self._orders.get((sort, unused_only))
        if found is None:
            chosen = [row for row in self.rows if row["unused"] or not unused_only]
            chosen.sort(key=SORTS[sort])
            found = ([SORTS[sort](row) for row in chosen], chosen)
            with self._lock:
                self._orders[(sort, unused_only)] = found
        return found


class GenerationCache:
    """The latest generations read, per process, at most ``capacity`` of them."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._generations: OrderedDict[tuple[str, str, int], Generation] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, tool: str, scope: str, generation: int) -> Generation | None:
        with self._lock:
            found = self._generations.get((tool, scope, generation))
            if found is not None:
                self._generations.move_to_end((tool, scope, generation))
            return found

    def put(self, report: Generation) -> None:
        with self._lock:
            self._generations[(report.tool, report.scope, report.generation)] = report
            while len(self._generations) > self.capacity:
                self._generations.popitem(last=False)
