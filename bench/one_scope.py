"""What a question about one scope costs as the fleet grows: the same calls at two fleet sizes.

    python bench/one_scope.py --scopes 1000 100000

Each size's source has the same few hundred thousand work items spread over its spaces with the
demo's skew (so the 100,000-scope source is not 100 times bigger in items, only in scopes), and
a store where every scope has a report. For one scope, each call is timed many times (median):

- the catalogue's utilisation and watermark (what finalise and the reader ask);
- ``scope_states`` for one scope (the policy's state: utilisation, watermark, header);
- the reader's staleness (``ReportReader.read``: the stored report and the watermark now);
- ``status`` for one scope (``fleet_status`` with the scope named);
- the post-run completeness check (``check_completeness``).

The figure is each call's best time at the large fleet over its best at the small one, the two
fleets taking turns call by call.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from precompute_assets.core.completeness import check_completeness
from precompute_assets.core.db import connect, create_engine_for, sqlite_url
from precompute_assets.core.reader import ReportReader
from precompute_assets.core.refresh import scope_states
from precompute_assets.core.registry import load_tools
from precompute_assets.core.report_store import ReportHeader, ReportStore
from precompute_assets.core.rows import validate_report
from precompute_assets.core.schema import create_store_schema, headers
from precompute_assets.core.settings import RefreshSettings, Settings
from precompute_assets.core.status import fleet_status
from precompute_assets.core.window import reference_params
from precompute_assets.demo.source import DemoScale, generate_source

TOOL = "unused_fields"
WORK_ITEMS = 300_000


def source_for(scopes: int, folder: Path, work_items: int = WORK_ITEMS) -> str:
    """A source with ``scopes`` spaces sharing ``work_items`` items, generated once per size."""
    path = folder / f"fleet-{scopes}-{work_items}.db"
    url = sqlite_url(path)
    if not path.exists():
        scale = DemoScale(
            tenants=max(1, scopes // 500), spaces=scopes, work_items=work_items, seed=7
        )
        generate_source(url, scale)
    return url


def store_with_reports(source_url: str, store_path: Path, tool: Any, scope: str) -> ReportStore:
    """A store where every scope has a report header at its source's watermark (written in one
    bulk insert), and ``scope`` its full report."""
    store_path.unlink(missing_ok=True)
    store = ReportStore(create_engine_for(sqlite_url(store_path)))
    create_store_schema(store.engine)
    source = create_engine_for(source_url, read_only=True)
    now = time.time()
    with connect(source) as connection:
        scopes = list(tool.catalogue.scopes(connection))
        watermarks = tool.catalogue.watermark(connection, scopes)
        extent = tool.catalogue.initialise(connection, scope)
        params = {**extent.params, **reference_params(tool, now)}
        rows = validate_report(tool, scope, tool.finalise(connection, scope, tool.empty(), params))
    with store.engine.begin() as writer:
        writer.execute(
            headers.insert(),
            [
                asdict(ReportHeader(TOOL, key, 1, now, watermarks[key], 0, 0, 0, 0, 0, 0.1))
                | {"summary": "{}"}
                for key in scopes
                if key != scope
            ],
        )
    summary = {"params": params, "batches_folded": 0}
    store.commit(
        ReportHeader(TOOL, scope, 1, now, extent.watermark, 0, len(rows), 0, 0, 0, 0.1,
                     summary=summary),
        rows,
    )  # fmt: skip
    source.dispose()
    return store


def calls_for(scopes: int, folder: Path, work_items: int) -> dict[str, Callable[[], Any]]:
    """The one-scope calls against a fleet of ``scopes``, ready to be timed."""
    tool = load_tools(autoload=False)[TOOL]
    source_url = source_for(scopes, folder, work_items)
    source = create_engine_for(source_url, read_only=True)
    with connect(source) as connection:
        keys = sorted(tool.catalogue.scopes(connection))
        utilisation = tool.catalogue.utilisation(connection, keys)
    # The scope of median utilisation: its report is as big at both sizes (the same generator
    # draws every space's configuration), so what differs is the fleet around it.
    scope = sorted(keys, key=lambda key: (utilisation[key], key))[len(keys) // 2]
    store_path = folder / f"one-scope-store-{scopes}.db"
    store = store_with_reports(source_url, store_path, tool, scope)
    settings = Settings.validated({"source_url": source_url, "store_url": sqlite_url(store_path)})
    reader = ReportReader({TOOL: tool}, store, source)

    def ask(question: Callable[..., Any]) -> Callable[[], Any]:
        def call() -> Any:
            with connect(source) as connection:
                return question(connection, [scope])

        return call

    return {
        "utilisation": ask(tool.catalogue.utilisation),
        "watermark": ask(tool.catalogue.watermark),
        "scope_state": lambda: scope_states(tool, source, store, [scope]),
        "reader_staleness": lambda: reader.read(TOOL, scope),
        "status_one_scope": lambda: fleet_status(tool, settings, RefreshSettings(), [scope]),
        "completeness_check": lambda: check_completeness(tool, scope, store, source),
    }


def compare(
    sizes: list[int], folder: Path, repeats: int, work_items: int = WORK_ITEMS
) -> dict[str, Any]:
    """Each call at each size, the sizes taking turns call by call (so a burst of load on the
    machine hits both alike); the best and the median of each, in milliseconds, and each call's
    best at the largest size over its best at the smallest."""
    fleets = {size: calls_for(size, folder, work_items) for size in sizes}
    seconds: dict[int, dict[str, list[float]]] = {size: {} for size in sizes}
    for _ in range(repeats + 1):  # the first round warms up
        for size, calls in fleets.items():
            for name, call in calls.items():
                started = time.perf_counter()
                call()
                seconds[size].setdefault(name, []).append(time.perf_counter() - started)

    def summary(times: dict[str, list[float]], pick: Callable[[list[float]], float]) -> dict:
        return {name: round(pick(spent[1:]) * 1000, 3) for name, spent in times.items()}

    results = {
        f"scopes_{size}": {
            "work_items": work_items,
            "best_ms": summary(seconds[size], min),
            "median_ms": summary(seconds[size], statistics.median),
        }
        for size in sizes
    }
    small, large = results[f"scopes_{min(sizes)}"], results[f"scopes_{max(sizes)}"]
    ratios = {
        name: round(large["best_ms"][name] / small["best_ms"][name], 2) for name in small["best_ms"]
    }
    return {**results, "large_over_small": ratios, "worst_ratio": max(ratios.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scopes", type=int, nargs=2, default=[1_000, 100_000])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--work-items", type=int, default=WORK_ITEMS)
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "pc-bench")
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    warnings.simplefilter("ignore")
    figures = compare(args.scopes, args.folder, args.repeats, args.work_items)
    json.dump(figures, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
