"""A deterministic Jira-like source database, at any scale, on SQLite or PostgreSQL.

Everything derives from ``DemoScale.seed``: the same scale gives byte-identical rows on every
run and backend (but for the change versions of ``space_changes``, which start at the load's
time; see ``changes``). The configuration (tenants, fields, screens, work types, their association
with spaces) comes from one ``numpy.random.default_rng(seed)``; each space's work items and field
values come from their own ``default_rng([seed, space_id])``, so a space's contents do not shift
when another space changes size. Times spread over the four years before
``DemoScale.reference_time`` (2026-11-01T00:00:00Z unless told otherwise).

Shape, with the skew real sites show:

- Fields per tenant are about 15% system, 10% app and 75% admin. Most spaces associate 20-150
  fields and 3-15 work types; about one space in eight (at least one from four spaces on) sits
  near the limits of 700 fields and 150 work types (600-700 and 110-150).
- Work items concentrate in a few spaces (Zipf weights over a random ranking of the spaces).
  Each space's ids form one contiguous block, in space id order.
- Field values average ``values_per_item`` per item with Zipf popularity inside a space: a few
  fields on most items, a long tail of rare ones, and 15-40% of the associated fields never.
  Up to 30% of a space's work types have no items.
- About 0.1% of the values belong to fields of the tenant that the space does not associate (a
  field removed from the configuration leaves its values behind); reports must ignore them.

Edge cases, guaranteed so that tests can rely on them (their ids are in ``source_meta`` under
``edge.*`` keys):

- ``edge.empty_space`` (with at least 3 spaces): a space with no work items.
- ``edge.space`` is the space with the most items (it has items whenever ``work_items >= 1``);
  it holds four fields and one work type that only it associates, each excluded from the random
  draws:
  - ``edge.old_values_field``: an admin field on no screen whose only values sit on the space's
    oldest items and are more than three years old (past any two-year usage window);
  - ``edge.unused_screen_field``: an admin field with no values, on one of the space's screens;
  - ``edge.unused_system_field`` and ``edge.unused_app_field``: fields with no values;
  - ``edge.unused_work_type``: an associated work type with no items.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain, islice
from typing import Any, Protocol

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from precompute_assets.core.db import create_engine_for, safe_url, unavailable, write_transaction
from precompute_assets.demo.source import changes, schema

GENERATOR_VERSION = "3"  # 2: space_changes and its triggers; 3: the change clock
REFERENCE_TIME = 1_793_491_200  # 2026-11-01T00:00:00Z
DAY = 86_400
YEAR = 365 * DAY
SPAN = 4 * YEAR
OLD_VALUE_AGE = 3 * YEAR  # the old edge field's values: a year clear of a two-year window
FIELD_LIMIT = 700
WORK_TYPE_LIMIT = 150
STALE_SHARE = 0.001
MOST_COMMON_SHARE = 0.95  # no field is on every single item
CHUNK_ROWS = 100_000

WORK_TYPE_NAMES = ("Task", "Bug", "Story", "Epic", "Sub-task", "Incident", "Change", "Problem")
ORIGIN_SHARES = {"system": 0.15, "app": 0.10}  # the rest are admin fields
ORIGIN_LABELS = {"system": "System field", "app": "App field", "admin": "Custom field"}
EDGE_FIELD_NAMES = (
    "Edge: only values older than 3 years",
    "Edge: no values, on a screen",
    "Edge: system field without values",
    "Edge: app field without values",
)


@dataclass(frozen=True)
class DemoScale:
    """How big a demo source to make; equal scales make identical databases."""

    tenants: int = 3
    spaces: int = 20
    work_items: int = 200_000
    values_per_item: float = 6.0
    seed: int = 7
    reference_time: int = REFERENCE_TIME

    def __post_init__(self) -> None:
        if self.tenants < 1 or self.spaces < 1:
            raise ValueError("a demo source needs at least one tenant and one space")
        if self.work_items < 0 or self.values_per_item < 0:
            raise ValueError("work_items and values_per_item must not be negative")


@dataclass(frozen=True)
class SourceSummary:
    """What ``generate_source`` wrote, and how long it took."""

    url: str
    tenants: int
    spaces: int
    fields: int
    work_items: int
    field_values: int
    seconds: float


def single_space_scale(work_items: int, seed: int = 7) -> DemoScale:
    """One tenant, one space holding `work_items` items (the benchmark's shape)."""
    return DemoScale(tenants=1, spaces=1, work_items=work_items, seed=seed)


def generate_source(url: str, scale: DemoScale, *, replace: bool = True) -> SourceSummary:
    """Create the schema and fill it. With replace=True drop existing demo tables first.

    Without ``replace`` an existing demo table is an error, so a real database is never mixed
    with generated rows. The whole load is one transaction: readers see all of it or nothing.
    """
    started = time.perf_counter()
    layout = _Planner(scale).plan()
    engine = create_engine_for(url)
    try:
        if not replace:
            _refuse_existing(engine)
        with _bulk_writer(engine) as writer:
            for statement in schema.drop_table_statements() if replace else []:
                writer.execute(statement)
            for statement in schema.create_table_statements(engine.dialect):
                writer.execute(statement)
            for table in schema.CONFIGURATION_TABLES:
                writer.insert(table, layout.rows[table.name])
            items, values = _write_items(writer, layout, scale)
            for statement in schema.create_index_statements(engine.dialect):
                writer.execute(statement)
            # Versions start at the load's time in microseconds, above any earlier source's;
            # the triggers come after the load, which they would slow down row by row.
            for statement in changes.initial_versions_statements(time.time_ns() // 1_000):
                writer.execute(statement)
            for statement in changes.trigger_statements(engine.dialect.name):
                writer.execute(statement)
            writer.insert(schema.source_meta, _meta_rows(scale, layout))
            writer.execute("ANALYZE")
    finally:
        engine.dispose()
    return SourceSummary(
        url=safe_url(url),
        tenants=scale.tenants,
        spaces=scale.spaces,
        fields=len(layout.rows["fields"]),
        work_items=items,
        field_values=values,
        seconds=round(time.perf_counter() - started, 3),
    )


def touch_space(url: str, space_key: str, *, items: int = 1, at: int | None = None) -> None:
    """Append `items` work items to a space, as users creating work would.

    The new items take ids after the current maximum (so they leave the space's id block) and
    copy the work type and the associated fields of the space's newest item, so that the set of
    used fields and work types stays as it was; an empty space gets its first associated work
    type and fields instead. ``at`` (default: now, and after the space's latest update) is their
    creation and update time. Nothing else changes: not the configuration, not other items.
    """
    if items < 1:
        raise ValueError("touch_space adds at least one item")
    engine = create_engine_for(url, must_exist=True)
    try:
        with write_transaction(engine) as connection:
            space_id = connection.execute(
                sa.select(schema.spaces.c.id).where(schema.spaces.c.key == space_key)
            ).scalar()
            if space_id is None:
                raise LookupError(f"no space {space_key!r} in {safe_url(url)}")
            work_type, field_ids, latest = _template_item(connection, space_id)
            when = at if at is not None else max(int(time.time()), latest + 1)
            first = (
                connection.execute(sa.func.max(schema.work_items.c.id).select()).scalar() or 0
            ) + 1
            new_ids = range(first, first + items)
            connection.execute(
                schema.work_items.insert(),
                [
                    {
                        "id": i,
                        "space_id": space_id,
                        "work_type_id": work_type,
                        "created_at": when,
                        "updated_at": when,
                    }
                    for i in new_ids
                ],
            )
            if field_ids:
                connection.execute(
                    schema.field_values.insert(),
                    [
                        {"work_item_id": i, "field_id": f, "updated_at": when}
                        for i in new_ids
                        for f in field_ids
                    ],
                )
    finally:
        engine.dispose()


def _template_item(connection: Connection, space_id: int) -> tuple[int, list[int], int]:
    """The work type and fields new items of a space copy, and the space's latest update."""
    items, values, links = schema.work_items, schema.field_values, schema.space_fields
    newest = connection.execute(
        sa.select(items.c.id, items.c.work_type_id)
        .where(items.c.space_id == space_id)
        .order_by(items.c.id.desc())
        .limit(1)
    ).first()
    if newest is None:
        return (*_first_configured(connection, space_id), 0)
    latest = connection.execute(
        sa.select(sa.func.max(items.c.updated_at)).where(items.c.space_id == space_id)
    ).scalar_one()
    field_ids = connection.execute(
        sa.select(values.c.field_id)
        .join(links, (links.c.field_id == values.c.field_id) & (links.c.space_id == space_id))
        .where(values.c.work_item_id == newest.id)
        .order_by(values.c.field_id)
    ).scalars()
    return newest.work_type_id, list(field_ids), latest


def _first_configured(connection: Connection, space_id: int) -> tuple[int, list[int]]:
    work_type = connection.execute(
        sa.select(sa.func.min(schema.space_work_types.c.work_type_id)).where(
            schema.space_work_types.c.space_id == space_id
        )
    ).scalar()
    if work_type is None:
        raise LookupError(f"space {space_id} has no work types to create items with")
    field_ids = connection.execute(
        sa.select(schema.space_fields.c.field_id)
        .where(schema.space_fields.c.space_id == space_id)
        .order_by(schema.space_fields.c.field_id)
        .limit(round(DemoScale.values_per_item))
    ).scalars()
    return work_type, list(field_ids)


def _refuse_existing(engine: Engine) -> None:
    present = sorted({t.name for t in schema.TABLES} & set(sa.inspect(engine).get_table_names()))
    if present:
        raise RuntimeError(
            f"{safe_url(engine.url)} already has demo tables {present}; pass replace=True"
        )


def _meta_rows(scale: DemoScale, layout: _Layout) -> list[tuple[str, str]]:
    settings = {
        "generator_version": GENERATOR_VERSION,
        "seed": scale.seed,
        "reference_time": scale.reference_time,
        "tenants": scale.tenants,
        "spaces": scale.spaces,
        "work_items": scale.work_items,
        "values_per_item": scale.values_per_item,
    }
    return sorted(
        [(key, str(value)) for key, value in settings.items()] + list(layout.edges.items())
    )


# ------------------------------------------------------------------------------ configuration


@dataclass
class _SpacePlan:
    """What the item generator needs to know about one space."""

    id: int
    items: int
    first_item_id: int
    value_fields: np.ndarray  # associated fields that values are drawn from
    work_types: np.ndarray  # associated work types that items are drawn from
    stale_fields: np.ndarray  # tenant fields the space does not associate
    old_field: int | None = None  # the edge space's field with only old values


@dataclass
class _Layout:
    """The configuration tables as rows (keyed by table name) and the plans for the items."""

    rows: dict[str, list[tuple[Any, ...]]]
    plans: list[_SpacePlan]
    field_created: np.ndarray  # creation time by field id
    edges: dict[str, str]


@dataclass(frozen=True)
class _Edge:
    """The edge space's own fields and work type, which no random draw ever picks."""

    old_field: int
    screen_field: int
    silent_fields: tuple[int, int]
    idle_work_type: int


class _Planner:
    """Draws the configuration (everything but work items and values) from one generator."""

    def __init__(self, scale: DemoScale) -> None:
        self.scale = scale
        self.rng = np.random.default_rng(scale.seed)
        self.rows: dict[str, list[tuple[Any, ...]]] = {
            table.name: [] for table in schema.CONFIGURATION_TABLES
        }
        self.field_created: list[int] = [0]  # field ids start at 1
        self.edges: dict[str, str] = {}

    def plan(self) -> _Layout:
        scale, rng = self.scale, self.rng
        tenant_of = np.repeat(np.arange(1, scale.tenants + 1), _spaces_per_tenant(scale))
        near = _near_limit_mask(rng, scale.spaces)
        n = scale.spaces
        field_counts = np.where(near, rng.integers(600, 701, n), rng.integers(20, 151, n))
        type_counts = np.where(near, rng.integers(110, 151, n), rng.integers(3, 16, n))
        item_counts, edge_index, empty_index = _item_counts(rng, n, scale.work_items)
        first_ids = np.concatenate([[1], 1 + np.cumsum(item_counts)[:-1]])
        plans: list[_SpacePlan] = []
        for tenant in range(1, scale.tenants + 1):
            self.rows["tenants"].append((tenant, f"Tenant {tenant}"))
            members = np.flatnonzero(tenant_of == tenant)
            tenant_near = bool(near[members].any())
            field_pool = self._field_pool(
                tenant, _pool_size(field_counts[members], tenant_near, 800)
            )
            type_pool = self._work_types(
                tenant, _work_type_names(_pool_size(type_counts[members], tenant_near, 160))
            )
            for number, index in enumerate(members, start=1):
                key = f"t{tenant}-s{number:03d}"
                plan = _SpacePlan(
                    id=int(index) + 1,
                    items=int(item_counts[index]),
                    first_item_id=int(first_ids[index]),
                    value_fields=rng.choice(field_pool, field_counts[index], replace=False),
                    work_types=rng.choice(type_pool, type_counts[index], replace=False),
                    stale_fields=field_pool,
                )
                edge = None
                if index == edge_index:
                    self.edges["edge.space"] = key
                    edge = self._edge_entities(tenant)
                if index == empty_index:
                    self.edges["edge.empty_space"] = key
                self._configure(plan, tenant, key, edge)
                plans.append(plan)
        return _Layout(self.rows, plans, np.array(self.field_created, np.int64), self.edges)

    def _times(self, count: int, *, power: float) -> np.ndarray:
        """Times in the four-year window; power > 1 skews them towards its start."""
        offsets = np.floor(SPAN * self.rng.random(count) ** power).astype(np.int64)
        return self.scale.reference_time - SPAN + offsets

    def _field_pool(self, tenant: int, size: int) -> np.ndarray:
        """System fields first (the lowest ids, like built-ins), then app, then admin fields."""
        counts = {origin: round(size * share) for origin, share in ORIGIN_SHARES.items()}
        counts["admin"] = size - sum(counts.values())
        origins = [origin for origin, count in counts.items() for _ in range(count)]
        names = [
            f"{ORIGIN_LABELS[o]} {n}" for o, count in counts.items() for n in range(1, count + 1)
        ]
        # Most fields are old, a few recent, as on a living site.
        return self._fields(tenant, origins, names, self._times(size, power=2.0).tolist())

    def _fields(
        self, tenant: int, origins: Sequence[str], names: Sequence[str], created: Sequence[int]
    ) -> np.ndarray:
        first = len(self.field_created)
        rows = zip(range(first, first + len(names)), origins, names, created, strict=True)
        for field_id, origin, name, created_at in rows:
            self.rows["fields"].append((field_id, tenant, name, origin, created_at))
            self.field_created.append(created_at)
        return np.arange(first, len(self.field_created), dtype=np.int64)

    def _work_types(self, tenant: int, names: Sequence[str]) -> np.ndarray:
        first = len(self.rows["work_types"]) + 1
        ids = np.arange(first, first + len(names), dtype=np.int64)
        self.rows["work_types"].extend(zip(ids.tolist(), [tenant] * len(names), names, strict=True))
        return ids

    def _edge_entities(self, tenant: int) -> _Edge:
        created = self.scale.reference_time - SPAN + DAY
        old, screen, system, app = self._fields(
            tenant, ["admin", "admin", "system", "app"], EDGE_FIELD_NAMES, [created] * 4
        ).tolist()
        (idle,) = self._work_types(tenant, ["Edge: unused work type"]).tolist()
        self.edges.update(
            {
                "edge.old_values_field": str(old),
                "edge.unused_screen_field": str(screen),
                "edge.unused_system_field": str(system),
                "edge.unused_app_field": str(app),
                "edge.unused_work_type": str(idle),
            }
        )
        return _Edge(old, screen, (system, app), idle)

    def _configure(self, plan: _SpacePlan, tenant: int, key: str, edge: _Edge | None) -> None:
        """Write a space's configuration rows: associations, screens and its change time."""
        own_fields: list[int] = []
        own_types: list[int] = []
        if edge is not None:
            # The edge entities replace random draws, keeping the space within the limits.
            plan.value_fields = plan.value_fields[: FIELD_LIMIT - 4]
            plan.work_types = plan.work_types[: WORK_TYPE_LIMIT - 1]
            plan.old_field = edge.old_field
            own_fields = [edge.old_field, edge.screen_field, *edge.silent_fields]
            own_types = [edge.idle_work_type]
        fields = np.union1d(plan.value_fields, own_fields).astype(np.int64)
        types = np.union1d(plan.work_types, own_types).astype(np.int64)
        plan.stale_fields = np.setdiff1d(plan.stale_fields, fields)
        # The last configuration change is no earlier than the newest associated field.
        field_ids = fields.tolist()
        newest_field = max(self.field_created[f] for f in field_ids)
        config_at = max(int(self._times(1, power=1.0)[0]), newest_field)
        self.rows["spaces"].append((plan.id, tenant, key, f"Space {key}", config_at))
        self.rows["space_fields"].extend((plan.id, f) for f in field_ids)
        self.rows["space_work_types"].extend((plan.id, t) for t in types.tolist())
        for number in range(1, int(self.rng.integers(1, 4)) + 1):
            size = max(1, round(plan.value_fields.size * self.rng.uniform(0.05, 0.15)))
            shown = self.rng.choice(plan.value_fields, size, replace=False).tolist()
            if edge is not None and number == 1:
                shown.append(edge.screen_field)
            self._screen(tenant, plan.id, f"{key} screen {number}", shown)

    def _screen(self, tenant: int, space_id: int, name: str, field_ids: list[int]) -> None:
        screen = len(self.rows["screens"]) + 1
        self.rows["screens"].append((screen, tenant, name))
        self.rows["space_screens"].append((space_id, screen))
        self.rows["screen_fields"].extend((screen, f) for f in sorted(field_ids))


def _spaces_per_tenant(scale: DemoScale) -> list[int]:
    """Spaces dealt to tenants as evenly as possible, the first tenants taking the remainder."""
    base, extra = divmod(scale.spaces, scale.tenants)
    return [base + (tenant < extra) for tenant in range(scale.tenants)]


def _near_limit_mask(rng: np.random.Generator, spaces: int) -> np.ndarray:
    """About one space in eight near the limits, and at least one from four spaces on."""
    count = max(round(spaces / 8), 1 if spaces >= 4 else 0)
    mask = np.zeros(spaces, dtype=bool)
    mask[rng.choice(spaces, count, replace=False)] = True
    return mask


def _item_counts(
    rng: np.random.Generator, spaces: int, total: int
) -> tuple[np.ndarray, int, int | None]:
    """Items per space, Zipf-skewed; also the biggest space and, from 3 spaces, an empty one."""
    rank = rng.permutation(spaces)
    weights = 1.0 / (rank + 1.0) ** 1.3
    empty = int(rng.choice(np.flatnonzero(rank > 0))) if spaces >= 3 else None
    if empty is not None:
        weights[empty] = 0.0
    return _apportion(weights, total), int(np.argmin(rank)), empty


def _apportion(weights: np.ndarray, total: int) -> np.ndarray:
    """Integer shares of `total` proportional to `weights` that sum exactly (largest remainder).

    The heaviest weight gets at least one whenever total >= 1, which the edge space relies on.
    """
    share = weights / weights.sum() * total
    counts = np.floor(share).astype(np.int64)
    counts[np.argsort(counts - share, kind="stable")[: total - int(counts.sum())]] += 1
    return counts


def _pool_size(counts: np.ndarray, near: bool, near_floor: int) -> int:
    """A tenant's pool: room for each space's draw, overlapping between spaces.

    A tenant with a near-limit space gets at least `near_floor`, well above the limit.
    """
    size = int(1.25 * counts.max()) + 10 * counts.size if counts.size else 20
    return max(size, near_floor) if near else size


def _work_type_names(count: int) -> list[str]:
    names = list(WORK_TYPE_NAMES[:count])
    return names + [f"Work type {number}" for number in range(len(names) + 1, count + 1)]


# ------------------------------------------------------------------------- items and values


@dataclass(frozen=True)
class _SpaceRows:
    """One space's work items and field values as columns, in table column order."""

    items: tuple[np.ndarray, ...]
    values: tuple[np.ndarray, ...]


def _space_rows(plan: _SpacePlan, scale: DemoScale, field_created: np.ndarray) -> _SpaceRows:
    """Items and values of one space, drawn from the space's own generator (vectorised)."""
    rng = np.random.default_rng([scale.seed, plan.id])
    now = scale.reference_time
    created = _creation_times(rng, plan.items, now)
    work_type = _draw_work_types(rng, plan.work_types, plan.items)
    old = _old_values(plan, created, field_created, now)
    drawn = _draw_values(rng, plan.value_fields, plan.items, scale.values_per_item)
    stale = _stale_values(rng, plan, drawn[0].size)
    item, field_id = np.concatenate([drawn[0], stale[0]]), np.concatenate([drawn[1], stale[1]])
    stamp = _value_times(rng, created[item], field_created[field_id], now)
    item, field_id, stamp = _sorted_unique(
        np.concatenate([item, old[0]]),
        np.concatenate([field_id, old[1]]),
        np.concatenate([stamp, old[2]]),
        field_created.size,
    )
    ids = np.arange(plan.first_item_id, plan.first_item_id + plan.items, dtype=np.int64)
    updated = _item_updated(created, item, stamp)
    return _SpaceRows(
        items=(ids, np.full(plan.items, plan.id), work_type, created, updated),
        values=(ids[item], field_id, stamp),
    )


def _old_values(
    plan: _SpacePlan, created: np.ndarray, field_created: np.ndarray, now: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The edge field's values (item index, field, time), all more than three years old.

    They sit on the space's oldest items, whose creation moves back if needed (order kept), and
    never on its newest item, which touch_space copies, unless that is the only one.
    """
    if plan.old_field is None or plan.items == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64)
    items = np.arange(min(3, max(plan.items - 1, 1)))
    created[items] = np.minimum(created[items], now - OLD_VALUE_AGE)
    stamps = np.maximum(created[items], field_created[plan.old_field])
    return items, np.full(items.size, plan.old_field), stamps


def _creation_times(rng: np.random.Generator, count: int, now: int) -> np.ndarray:
    """Ascending (ids follow creation), denser towards `now`: sites grow."""
    ages = np.floor(SPAN * (1.0 - np.sqrt(rng.random(count)))).astype(np.int64)
    return np.sort(now - 1 - ages)


def _draw_work_types(rng: np.random.Generator, work_types: np.ndarray, count: int) -> np.ndarray:
    """Zipf-skewed over a random ranking; up to 30% of the work types get no item."""
    rank = rng.permutation(work_types.size)
    used = max(1, work_types.size - int(work_types.size * rng.uniform(0.0, 0.3)))
    weights = np.where(rank < used, 1.0 / (rank + 1.0) ** 1.2, 0.0)
    return work_types[rng.choice(work_types.size, count, p=weights / weights.sum())]


def _draw_values(
    rng: np.random.Generator, fields: np.ndarray, items: int, per_item: float
) -> tuple[np.ndarray, np.ndarray]:
    """(item index, field id) pairs, each field on a binomial number of distinct items.

    Drawing per field rather than per item makes the pairs distinct by construction and costs
    O(values), not O(items x fields).
    """
    share = _field_shares(rng, fields.size, per_item)
    counts = rng.binomial(items, share)
    chosen = [rng.choice(items, k, replace=False, shuffle=False) for k in counts.tolist()]
    return np.concatenate([np.empty(0, np.int64), *chosen]), np.repeat(fields, counts)


def _field_shares(rng: np.random.Generator, count: int, per_item: float) -> np.ndarray:
    """Share of items carrying each field: Zipf over a random ranking, summing to `per_item`.

    15-40% of the fields get no share at all: associated, but never used.
    """
    rank = rng.permutation(count)
    used = max(1, round(count * (1.0 - rng.uniform(0.15, 0.4))))
    weights = np.where(rank < used, 1.0 / (rank + 1.0) ** rng.uniform(0.9, 1.4), 0.0)
    return _capped_scale(weights, per_item, MOST_COMMON_SHARE)


def _capped_scale(weights: np.ndarray, target: float, cap: float) -> np.ndarray:
    """min(cap, c * weights) with c chosen by bisection so the result sums to `target`.

    When even capping every weighted field falls short of `target`, all of them are capped.
    """
    positive = weights > 0
    if cap * positive.sum() <= target:
        return np.where(positive, cap, 0.0)
    low, high = 0.0, cap / weights[positive].min()
    for _ in range(60):
        middle = (low + high) / 2
        if np.minimum(cap, middle * weights).sum() < target:
            low = middle
        else:
            high = middle
    return np.minimum(cap, high * weights)


def _stale_values(
    rng: np.random.Generator, plan: _SpacePlan, value_count: int
) -> tuple[np.ndarray, np.ndarray]:
    """About 0.1% extra values of fields the space does not associate (one at least on the edge
    space): a field removed from a configuration leaves its values behind."""
    if plan.items == 0 or plan.stale_fields.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    count = max(int(rng.binomial(value_count, STALE_SHARE)), int(plan.old_field is not None))
    return rng.integers(0, plan.items, count), rng.choice(plan.stale_fields, count)


def _value_times(
    rng: np.random.Generator, item_created: np.ndarray, field_created: np.ndarray, now: int
) -> np.ndarray:
    """Mostly set when the item was made, some edited since; never before the field existed."""
    edited_after = np.floor((now - item_created) * rng.random(item_created.size) ** 8)
    return np.maximum(item_created + edited_after.astype(np.int64), field_created)


def _sorted_unique(
    item: np.ndarray, field_id: np.ndarray, stamp: np.ndarray, field_bound: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs in primary-key order without duplicates (stale draws may repeat a pair).

    Key order makes the load an append to the clustered index, the fastest way to fill it.
    """
    keys, first = np.unique(item * field_bound + field_id, return_index=True)
    return keys // field_bound, keys % field_bound, stamp[first]


def _item_updated(created: np.ndarray, item: np.ndarray, stamp: np.ndarray) -> np.ndarray:
    """An item's update time: its creation or its latest value, whichever is later."""
    updated = created.copy()
    if item.size:
        starts = np.flatnonzero(np.r_[True, item[1:] != item[:-1]])
        latest = np.maximum.reduceat(stamp, starts)
        updated[item[starts]] = np.maximum(updated[item[starts]], latest)
    return updated


def _write_items(writer: _Writer, layout: _Layout, scale: DemoScale) -> tuple[int, int]:
    """Load the spaces one after another, so memory holds one space at a time."""
    items = values = 0
    for plan in layout.plans:
        rows = _space_rows(plan, scale, layout.field_created)
        writer.insert(schema.work_items, _array_rows(rows.items))
        writer.insert(schema.field_values, _array_rows(rows.values))
        items += rows.items[0].size
        values += rows.values[0].size
    return items, values


def _array_rows(columns: Sequence[np.ndarray]) -> Iterator[tuple[int, ...]]:
    """Rows of Python ints, converted a chunk at a time to bound memory (iterated in C)."""
    return chain.from_iterable(
        zip(*(column[start : start + CHUNK_ROWS].tolist() for column in columns), strict=True)
        for start in range(0, columns[0].size, CHUNK_ROWS)
    )


# --------------------------------------------------------------------------------- writing


class _Writer(Protocol):
    def execute(self, statement: str) -> None: ...

    def insert(self, table: sa.Table, rows: Iterable[Sequence[Any]]) -> None:
        """Append rows holding every column of `table`, in column order."""


class _SqliteWriter:
    """executemany on the raw sqlite3 connection: no per-row SQLAlchemy overhead."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection

    def execute(self, statement: str) -> None:
        self._connection.execute(statement)

    def insert(self, table: sa.Table, rows: Iterable[Sequence[Any]]) -> None:
        marks = ", ".join("?" * len(table.columns))
        self._connection.executemany(f"INSERT INTO {table.name} VALUES ({marks})", rows)


class _PostgresWriter:
    """COPY ... FROM STDIN through psycopg2, in CSV chunks of CHUNK_ROWS rows."""

    def __init__(self, connection: Any) -> None:
        self._cursor = connection.cursor()

    def execute(self, statement: str) -> None:
        self._cursor.execute(statement)

    def insert(self, table: sa.Table, rows: Iterable[Sequence[Any]]) -> None:
        pending = iter(rows)
        while chunk := list(islice(pending, CHUNK_ROWS)):
            buffer = io.StringIO()
            csv.writer(buffer).writerows(chunk)
            buffer.seek(0)
            self._cursor.copy_expert(f"COPY {table.name} FROM STDIN WITH (FORMAT csv)", buffer)


@contextmanager
def _bulk_writer(engine: Engine) -> Iterator[_Writer]:
    """One transaction on the raw DBAPI connection, committed only if everything loads."""
    try:
        raw = engine.raw_connection()
    except (sa.exc.OperationalError, engine.dialect.loaded_dbapi.OperationalError) as error:
        raise unavailable(engine, error) from error
    try:
        connection = raw.driver_connection
        writer: _Writer
        if engine.dialect.name == "sqlite":
            # No fsync during the load: the data is regenerated from its seed if a crash hits.
            for pragma in ("journal_mode=WAL", "synchronous=OFF", "analysis_limit=1000"):
                connection.execute(f"PRAGMA {pragma}")
            connection.execute("BEGIN IMMEDIATE")
            writer = _SqliteWriter(connection)
        elif engine.dialect.name == "postgresql":
            writer = _PostgresWriter(connection)
        else:
            raise ValueError(
                f"demo source supports SQLite and PostgreSQL, not {engine.dialect.name}"
            )
        try:
            yield writer
        except BaseException:
            connection.rollback()
            raise
        connection.commit()
    finally:
        raw.close()
