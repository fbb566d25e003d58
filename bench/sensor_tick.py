"""How long one refresh-sensor tick takes over many scopes, and how many queries it makes.

    python bench/sensor_tick.py --scopes 1000 10000 100000

For each size it builds (or reuses) a source with that many spaces, registers them as partitions
of a fresh Dagster instance, gives half of them a stored report, and ticks the unused_fields
refresh sensor a few times. It prints one JSON document: per size, the median and worst tick in
seconds, the run requests made, and the SQL statements sent to the source and the store. The
statement count must not grow with the number of scopes.

Each size's source is generated once and kept in ``--folder``: 100,000 spaces take about 8
minutes and over 7 GB of memory to generate on 2 CPUs, a minute or two to set up on each run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from dagster import build_sensor_context, instance_for_test

from precompute_assets.contract import REPORT_COLUMNS
from precompute_assets.core.db import sqlite_url
from precompute_assets.core.refresh import scope_states
from precompute_assets.core.registry import load_tools
from precompute_assets.core.report_store import ReportHeader
from precompute_assets.demo.source import DemoScale, generate_source
from precompute_assets.orchestration.definitions import build_definitions
from precompute_assets.orchestration.resources import PrecomputeResource

TOOL = "unused_fields"


def source_for(scopes: int, folder: Path) -> str:
    """A source with ``scopes`` spaces and ~20 work items each, generated once per size."""
    path = folder / f"source-{scopes}.db"
    url = sqlite_url(path)
    if not path.exists():
        scale = DemoScale(tenants=max(1, scopes // 500), spaces=scopes, work_items=scopes * 20)
        generate_source(url, scale)
    return url


def count_statements(engine: sa.Engine, counter: list[int]) -> None:
    @sa.event.listens_for(engine, "before_cursor_execute")
    def _count(*_args) -> None:
        counter[0] += 1


def measure(scopes: int, folder: Path, ticks: int) -> dict[str, float | int]:
    tools = load_tools(autoload=False)
    tool = tools[TOOL]
    store_path = folder / f"reports-{scopes}.db"
    store_path.unlink(missing_ok=True)
    precompute = PrecomputeResource(
        source_url=source_for(scopes, folder), store_url=sqlite_url(store_path)
    )
    defs = build_definitions(tools, precompute)
    sensor = defs.resolve_sensor_def(f"{TOOL}_refresh_sensor")
    states = scope_states(tool, precompute.source_engine(), precompute.store())
    now = time.time()
    empty = pd.DataFrame(columns=list(REPORT_COLUMNS))
    for state in states[::2]:
        header = ReportHeader(TOOL, state.scope, 1, now, state.watermark, 1, 0, 0, 1, 1, 0.1)
        precompute.store().commit(header, empty)

    statements = [0]
    count_statements(precompute.source_engine(), statements)
    count_statements(precompute.store().engine, statements)
    durations, requests = [], 0
    with instance_for_test() as instance:
        instance.add_dynamic_partitions(f"{TOOL}_scopes", [s.scope for s in states])
        for _ in range(ticks):
            statements[0] = 0
            context = build_sensor_context(instance=instance, resources={"precompute": precompute})
            started = time.perf_counter()
            result = sensor(context)
            durations.append(time.perf_counter() - started)
            requests = len(result.run_requests)
    return {
        "scopes": len(states),
        "tick_median_s": round(statistics.median(durations), 3),
        "tick_max_s": round(max(durations), 3),
        "run_requests": requests,
        "sql_statements_per_tick": statements[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scopes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--ticks", type=int, default=5)
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "pc-bench")
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    warnings.simplefilter("ignore")
    results = {f"scopes_{n}": measure(n, args.folder, args.ticks) for n in args.scopes}
    json.dump(results, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
