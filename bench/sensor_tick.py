"""How long a refresh-sensor tick takes over many scopes, and how many queries it makes.

    python bench/sensor_tick.py --scopes 1000 10000 100000

For each size it uses the source ``one_scope.py`` builds (that many spaces sharing a few hundred
thousand work items with the demo's skew), a fresh store and a fresh Dagster instance. The
discovery sensor's first tick lists every scope (timed apart: it happens once per store); half
of the scopes then get a stored report; 1% of the spaces are written to by another application
(one work item each, through the source's triggers); and the refresh sensor ticks a few times:
the first tick reads those changes, the others find none. It prints one JSON document: per
size, the first listing, the tick with changes and the quiet ticks in seconds, the run requests,
and the SQL statements sent to the source and the store per tick, which must not grow with the
number of scopes.

Sources are generated once per size and kept in ``--folder``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from dagster import build_sensor_context, instance_for_test
from one_scope import WORK_ITEMS, source_for

from precompute_assets.core.db import connect, create_engine_for, sqlite_url
from precompute_assets.core.registry import load_tools
from precompute_assets.core.report_store import ReportHeader
from precompute_assets.core.schema import create_store_schema, headers
from precompute_assets.orchestration.definitions import build_definitions
from precompute_assets.orchestration.resources import PrecomputeResource

TOOL = "unused_fields"
CHANGED_SHARE = 0.01


def count_statements(engine: sa.Engine, counter: list[int]) -> None:
    @sa.event.listens_for(engine, "before_cursor_execute")
    def _count(*_args) -> None:
        counter[0] += 1


def give_half_a_report(precompute: PrecomputeResource, scopes: list[str]) -> None:
    """A stored header at the source's watermark for every other scope, in one bulk insert."""
    tool = load_tools(autoload=False)[TOOL]
    with connect(precompute.source_engine()) as source:
        watermarks = tool.catalogue.watermark(source, scopes[::2])
    engine = precompute.store().engine
    create_store_schema(engine)
    now = time.time()
    with engine.begin() as store:
        store.execute(
            headers.insert(),
            [
                asdict(ReportHeader(TOOL, scope, 1, now, mark, 1, 0, 0, 1, 1, 0.1))
                | {"summary": "{}"}
                for scope, mark in watermarks.items()
            ],
        )


def change_some(source_url: str, share: float) -> int:
    """One work item of every ``1/share``-th space updated, as another application would."""
    engine = create_engine_for(source_url)
    with engine.begin() as source:
        spaces = list(source.execute(sa.text("SELECT id FROM spaces ORDER BY id")).scalars())
        chosen = spaces[:: max(1, round(1 / share))]
        source.execute(
            sa.text(
                "UPDATE work_items SET updated_at = updated_at + 1 WHERE id IN ("
                " SELECT MIN(id) FROM work_items WHERE space_id IN :spaces GROUP BY space_id)"
            ).bindparams(sa.bindparam("spaces", expanding=True)),
            {"spaces": chosen},
        )
    engine.dispose()
    return len(chosen)


def measure(scopes: int, folder: Path, ticks: int, work_items: int = WORK_ITEMS) -> dict[str, Any]:
    tools = load_tools(autoload=False)
    store_path = folder / f"reports-{scopes}.db"
    store_path.unlink(missing_ok=True)
    source_url = source_for(scopes, folder, work_items)
    precompute = PrecomputeResource(source_url=source_url, store_url=sqlite_url(store_path))
    defs = build_definitions(tools, precompute)
    statements = [0]
    count_statements(precompute.source_engine(), statements)
    count_statements(precompute.store().engine, statements)
    with instance_for_test() as instance:
        started = time.perf_counter()
        listed = defs.resolve_sensor_def(f"{TOOL}_discovery_sensor")(
            build_sensor_context(instance=instance, resources={"precompute": precompute})
        )
        first_listing = time.perf_counter() - started
        [added] = listed.dynamic_partitions_requests
        instance.add_dynamic_partitions(f"{TOOL}_scopes", list(added.partition_keys))
        give_half_a_report(precompute, sorted(added.partition_keys))
        changed = change_some(source_url, CHANGED_SHARE)
        sensor = defs.resolve_sensor_def(f"{TOOL}_refresh_sensor")
        durations, counts, requested = [], [], []
        for _ in range(ticks):
            statements[0] = 0
            context = build_sensor_context(instance=instance, resources={"precompute": precompute})
            started = time.perf_counter()
            result = sensor(context)
            durations.append(time.perf_counter() - started)
            counts.append(statements[0])
            requested.append(len(result.run_requests))
    return {
        "scopes": len(added.partition_keys),
        "first_listing_s": round(first_listing, 3),
        "changed_scopes": changed,
        "tick_with_changes_s": round(durations[0], 3),
        "tick_quiet_median_s": round(statistics.median(durations[1:] or durations), 3),
        "tick_max_s": round(max(durations), 3),
        "run_requests": requested[0],
        "sql_statements_per_tick": counts[0],
        "sql_statements_per_quiet_tick": counts[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scopes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--ticks", type=int, default=5)
    parser.add_argument("--work-items", type=int, default=WORK_ITEMS)
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "pc-bench")
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    warnings.simplefilter("ignore")
    results = {
        f"scopes_{n}": measure(n, args.folder, args.ticks, args.work_items) for n in args.scopes
    }
    json.dump(results, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
