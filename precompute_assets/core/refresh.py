"""The prioritised refresh policy: which scopes to recompute next, and why.

Refreshing every scope on a fixed schedule overloads the source and the orchestrator. Instead:
scopes at or above the utilisation threshold come first (highest utilisation, then oldest
report) and are refreshed when their report is missing, their source changed, or the report
passed its maximum age; scopes below the threshold only when their report is missing or older
than a long maximum age. Each tick asks for at most a budget of runs, none for a scope with a
run in flight, and derives run keys from the source watermark so no refresh is asked twice.

Everything here is plain data and three bulk queries, so a tick over 10,000 scopes costs the
same handful of queries as a tick over ten.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import Engine

from precompute_assets.contract import ReportTool
from precompute_assets.core.db import connect
from precompute_assets.core.report_store import ReportHeader, ReportStore
from precompute_assets.core.settings import RefreshSettings
from precompute_assets.core.window import window_start


class Reason(StrEnum):
    MISSING = "missing"
    CHANGED = "changed"
    AGED = "aged"
    ON_DEMAND = "on demand"


@dataclass(frozen=True)
class ScopeState:
    """What the policy knows of one scope: its utilisation, source and stored report."""

    scope: str
    utilisation: float
    watermark: str  # the source's, now
    header: ReportHeader | None
    window_since: int | None = None  # where a report computed now would start its window
    tenant: str | None = None  # the scope's owner, where the reader knows it

    @property
    def source_changed(self) -> bool:
        return self.header is not None and self.header.watermark != self.watermark

    @property
    def window_moved(self) -> bool:
        """A report computed now would look at a later window (the tool has one)."""
        if self.header is None or self.window_since is None:
            return False
        return self.header.summary.get("params", {}).get("since") != self.window_since

    @property
    def entity_count(self) -> int | None:
        """How many entities the last plan held: what the run's executor is chosen by."""
        return None if self.header is None else self.header.entity_count

    def age_s(self, now: float) -> float:
        return math.inf if self.header is None else max(0.0, now - self.header.computed_at)


@dataclass(frozen=True)
class RefreshRequest:
    scope: str
    reason: Reason
    utilisation: float
    run_key: str
    entity_count: int | None = None

    @property
    def priority(self) -> int:
        """The ``dagster/priority`` tag: utilisation in percent, on demand above everything."""
        if self.reason is Reason.ON_DEMAND:
            return 1_000
        return round(self.utilisation * 100)

    @property
    def reason_tag(self) -> str:
        return self.reason.value


@dataclass(frozen=True)
class RunGroup:
    """The scopes one run refreshes: one scope, or a contiguous range of small ones (a run of a
    partitioned asset covers one partition or a range of them)."""

    requests: list[RefreshRequest]

    @property
    def scopes(self) -> list[str]:
        return [request.scope for request in self.requests]

    @property
    def priority(self) -> int:
        return max(request.priority for request in self.requests)

    @property
    def utilisation(self) -> float:
        return max(request.utilisation for request in self.requests)

    @property
    def reason_tag(self) -> str:
        return ",".join(sorted({request.reason_tag for request in self.requests}))

    @property
    def entity_count(self) -> int | None:
        """The largest last plan of the group's scopes (None when none has one)."""
        counts = [r.entity_count for r in self.requests if r.entity_count is not None]
        return max(counts) if counts else None

    @property
    def run_key(self) -> str:
        if len(self.requests) == 1:
            return self.requests[0].run_key
        keys = "|".join(request.run_key for request in self.requests)
        digest = hashlib.sha256(keys.encode()).hexdigest()[:16]
        return f"{self.requests[0].scope}..{self.requests[-1].scope}:{digest}"


def group_requests(
    requests: Sequence[RefreshRequest],
    order: Sequence[str] | None,
    *,
    scopes_per_run: int,
    shared_run_entities: int,
) -> list[RunGroup]:
    """The runs for ``requests``: a scope whose last plan held ``shared_run_entities`` entities
    or more gets a run of its own; smaller ones (and new ones) share runs of up to
    ``scopes_per_run``, each run a run of neighbours in ``order`` (the partitions' order), since
    a run covers a range of partitions. Runs come highest priority first.
    """

    def shared(request: RefreshRequest) -> bool:
        return request.entity_count is None or request.entity_count < shared_run_entities

    small = [request for request in requests if shared(request)]
    groups = [RunGroup([request]) for request in requests if not shared(request)]
    position = {scope: index for index, scope in enumerate(order or ())}
    small.sort(key=lambda request: position.get(request.scope, -1))
    current: list[RefreshRequest] = []
    for request in small:
        here = position.get(request.scope)
        contiguous = (
            current
            and here is not None
            and here == position.get(current[-1].scope, -2) + 1
            and len(current) < scopes_per_run
        )
        if current and not contiguous:
            groups.append(RunGroup(current))
            current = []
        current.append(request)
    if current:
        groups.append(RunGroup(current))
    return sorted(groups, key=lambda group: -group.priority)


def scope_states(
    tool: ReportTool[Any],
    source: Engine,
    store: ReportStore | None,
    scopes: Sequence[str] | None = None,
    now: float | None = None,
) -> list[ScopeState]:
    """The state of every scope in the source (or of ``scopes``): three bulk queries in all.

    Without a store, no scope has a report.
    """
    with connect(source) as connection:
        catalogue = tool.catalogue
        known = list(catalogue.scopes(connection)) if scopes is None else list(scopes)
        utilisation = catalogue.utilisation(connection, known)
        watermarks = catalogue.watermark(connection, known)
    stored = [] if store is None else store.headers(tool.name, None if scopes is None else known)
    headers = {header.scope: header for header in stored}
    since = window_start(tool, time.time() if now is None else now)
    return [
        ScopeState(scope, utilisation.get(scope, 0.0), watermarks[scope], headers.get(scope), since)
        for scope in known
        if scope in watermarks
    ]


def is_high(state: ScopeState, settings: RefreshSettings) -> bool:
    return state.utilisation >= settings.threshold


def due_reason(state: ScopeState, settings: RefreshSettings, now: float) -> Reason | None:
    """Why the scope's report should be recomputed now, or None if it should not."""
    if state.header is None:
        return Reason.MISSING
    age = state.age_s(now)
    if is_high(state, settings):
        if state.source_changed:
            return Reason.CHANGED
        if age > settings.max_age_s:
            return Reason.AGED
        return None
    return Reason.AGED if age > settings.low_max_age_s else None


def is_stale(state: ScopeState, settings: RefreshSettings, now: float) -> bool:
    """Stale for a reader: missing, behind its source, or past its maximum age."""
    limit = settings.max_age_s if is_high(state, settings) else settings.low_max_age_s
    return state.header is None or state.source_changed or state.age_s(now) > limit


def priority_order(states: Iterable[ScopeState], settings: RefreshSettings) -> list[ScopeState]:
    """High scopes first, then by utilisation, highest first, then by report age, oldest first."""
    return sorted(
        states,
        key=lambda s: (
            not is_high(s, settings),
            -s.utilisation,
            -math.inf if s.header is None else s.header.computed_at,
            s.scope,
        ),
    )


def run_key(state: ScopeState) -> str:
    """Equal for two requests to refresh the same report from the same source state."""
    generation = 0 if state.header is None else state.header.generation
    return f"{state.scope}:{state.watermark}:{generation}"


def plan_refresh(
    states: Iterable[ScopeState],
    settings: RefreshSettings,
    *,
    in_flight: Collection[str] = (),
    budget: int | None = None,
    now: float | None = None,
) -> list[RefreshRequest]:
    """The refresh requests for this tick, in priority order, at most ``budget`` of them."""
    now = time.time() if now is None else now
    budget = settings.budget if budget is None else budget
    requests = []
    for state in priority_order(states, settings):
        if len(requests) >= budget:
            break
        reason = due_reason(state, settings, now)
        if reason is None or state.scope in in_flight:
            continue
        requests.append(
            RefreshRequest(
                state.scope, reason, state.utilisation, run_key(state), state.entity_count
            )
        )
    return requests


def plan_baseline(
    states: Iterable[ScopeState],
    settings: RefreshSettings,
    *,
    in_flight: Collection[str] = (),
    now: float | None = None,
) -> list[RefreshRequest]:
    """The periodic sweep: every scope past the long maximum age, whatever its utilisation."""
    now = time.time() if now is None else now
    requests = []
    for state in priority_order(states, settings):
        if len(requests) >= settings.baseline_budget:
            break
        if state.scope in in_flight or state.age_s(now) <= settings.low_max_age_s:
            continue
        reason = Reason.MISSING if state.header is None else Reason.AGED
        requests.append(
            RefreshRequest(
                state.scope, reason, state.utilisation, run_key(state), state.entity_count
            )
        )
    return requests
